"""berqenas audit: the tamper-evident log of every command (show, verify)."""

from __future__ import annotations

import datetime as dt
import re

import click

from .. import apikeys, audit
from ..app import App, CommandError, json_option, pass_app


def _log(app: App) -> audit.AuditLog:
    return audit.AuditLog(audit.log_path(app.home))


def _since(ctx, param, value):
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None or len(value) > 40:
        raise click.BadParameter(f"invalid time {value!r}: expected ISO-8601 with a timezone, "
                                 "e.g. 2026-12-01T00:00:00Z")
    return apikeys.iso(when.astimezone(dt.UTC))


def _key_id(ctx, param, value):
    if value is not None and not re.match(r"^[0-9a-f]{12}\Z", value):
        raise click.BadParameter(f"invalid key id {value!r}: 12 hex digits, as `apikey list` shows")
    return value


@click.group(name="audit")
def group():
    """The audit log: one SHA-256-chained JSON line per command, allowed or denied."""


@group.command("show")
@click.option("--since", metavar="ISO-8601", callback=_since, help="Only lines from this time on.")
@click.option("--key", "key_id", metavar="ID", callback=_key_id, help="Only lines of this key id.")
@json_option
@pass_app
def show(app: App, since: str | None, key_id: str | None):
    """The log's lines (oldest first)."""
    rows = audit.select(_log(app).records(), since=since, key=key_id)
    app.emit(rows, text="\n".join(
        f"{r.get('time')}  {r.get('key_id') or '-':<12}  {r.get('outcome', ''):<9} {r.get('exit_code')!s:>3}  "
        f"{r.get('command', '')}" for r in rows) or "no lines")


@group.command("verify")
@json_option
@pass_app
def verify(app: App):
    """Check the hash chain and the head: exit 1 when a line was edited, removed or reordered."""
    log = _log(app)
    res = log.verify()
    out = {"file": str(log.path), "lines": res.lines, "ok": res.ok, "problems": res.problems}
    if not res.ok:
        raise CommandError(f"audit log {log.path}: " + "; ".join(res.problems), details=out)
    app.emit(out, text=f"audit log {log.path}: {res.lines} lines, chain intact")

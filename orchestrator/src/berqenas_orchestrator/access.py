"""The front door's checks for one invocation of ``berqenas``: the key, the scope, the audit line.

``authorize`` runs inside every leaf command (``authz.guard``), after click parsed the arguments and before
the command's body: it reads the key (``--api-key-file FILE``, 0600, or ``$BERQENAS_API_KEY``), verifies it
against the keystore and checks ``authz.TABLE``. ``Invocation`` collects what the audit line says, and
``finish`` (called from ``cli.main``'s ``finally``) appends that line whatever happened.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from . import apikeys, audit, authz
from .paths import default_home

NO_KEY = ("no API key (set BERQENAS_API_KEY or pass --api-key-file FILE; on a new install "
          "`berqenas apikey init` creates the first admin key)")


@dataclass
class Invocation:
    argv: list[str]
    start: float = field(default_factory=time.monotonic)
    started: str = field(default_factory=lambda: apikeys.iso(apikeys.now()))
    home: Path | None = None
    path: tuple[str, ...] | None = None
    params: dict = field(default_factory=dict)
    key_id: str | None = None
    scope: str | None = None
    denied: str | None = None
    home_existed: bool = True
    signal: str | None = None  # the signal that cancelled the command (SIGTERM)

    def command_text(self, root: click.Group) -> str:
        if self.path:
            return " ".join(self.path)
        words, group = [], root  # a command that never parsed: the words that name one
        for a in self.argv:
            if a.startswith("-") or not isinstance(group, click.Group) or a not in group.commands:
                break
            words.append(a)
            group = group.commands[a]
        return " ".join(words)


def _key_text(app) -> str:
    path = getattr(app, "api_key_file", None)
    if path:
        try:
            return apikeys.read_key_file(str(path))
        except apikeys.ApiKeyError as exc:
            raise authz.Denied(str(exc)) from None
    text = os.environ.get(apikeys.ENV_KEY)  # runner.py hands children an allow-listed environment without it
    if not text:
        raise authz.Denied(NO_KEY)
    return text.strip()


def start(inv: Invocation, home: Path) -> None:
    """The root group knows the instance: remember it (and whether it existed) for the audit line."""
    inv.home = home
    inv.home_existed = home.exists()


def authorize(inv: Invocation, path: tuple[str, ...], rule: authz.Rule, ctx: click.Context) -> None:
    from .app import App

    app = ctx.find_object(App)
    inv.path = path
    params: dict = {}
    c = ctx
    while c is not None:  # the root's options too (--inventory, --timeout, ...)
        params = {**c.params, **params}
        c = c.parent
    inv.params = audit.redact_params(params)
    try:
        _check(inv, app, rule, ctx)
    except authz.Denied as exc:
        inv.denied = inv.denied or exc.message
        raise


def _check(inv: Invocation, app, rule: authz.Rule, ctx: click.Context) -> None:
    if rule.kind == "bootstrap":
        return
    text = _key_text(app)
    store = apikeys.Keystore(apikeys.default_path(app.home))
    try:
        key = store.authenticate(text)
    except apikeys.Unauthorized:
        inv.denied = "invalid key"
        raise authz.Denied() from None
    inv.key_id, inv.scope = key.id, key.scope
    app.key_id, app.scope = key.id, key.scope_obj
    why = authz.decide(rule, app.scope, ctx.params, lambda: app.state)
    if why:
        inv.denied = why
        raise authz.Denied(why)


def outcome(inv: Invocation, code: int) -> str:
    if inv.denied is not None:
        return "denied"
    return {0: "ok", 2: "usage", 124: "timeout", 130: "cancelled"}.get(code, "failed")


def finish(inv: Invocation, root: click.Group, code: int) -> int:
    """Append the invocation's line to the audit log; returns the exit code (1 when the line could not be written)."""
    if inv.path is None and code == 0:
        return code  # --help / --version ran nothing
    home = inv.home or default_home()
    path = audit.log_path(home)
    if inv.home_existed and not home.exists() and path.is_relative_to(home):
        return code  # the command removed the instance (local down --purge): its log went with it
    record = {
        "time": inv.started,
        "key_id": inv.key_id,
        "scope": inv.scope,
        "command": inv.command_text(root),
        "args": inv.params if inv.path else audit.redact_argv(inv.argv),
        "outcome": outcome(inv, code),
        "exit_code": code,
        "duration_s": round(time.monotonic() - inv.start, 3),
    }
    if inv.denied:
        record["reason"] = inv.denied
    if inv.signal:
        record["signal"] = inv.signal
    try:
        audit.AuditLog(path).append(record)
    except OSError as exc:
        click.echo(f"Error: audit log: {exc.strerror or exc}", err=True)
        return code or 1
    return code

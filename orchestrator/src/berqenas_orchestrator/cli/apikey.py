"""berqenas apikey: the API keys that may run ``berqenas`` (init, create, list, revoke).

A key is printed once (or, with ``--save FILE``, written to a new 0600 file): the keystore keeps only its
argon2id hash. ``init`` needs no key and works only on an install without a keystore; the others need an
admin key (authz.TABLE).
"""

from __future__ import annotations

from pathlib import Path

import click

from .. import apikeys
from ..app import App, CommandError, json_option, pass_app


def _store(app: App) -> apikeys.Keystore:
    return apikeys.Keystore(apikeys.default_path(app.home))


def _usage(fn, value):
    try:
        return fn(value)
    except apikeys.ApiKeyError as exc:
        raise click.BadParameter(str(exc)) from None


def _issued(app: App, key: apikeys.Key, text: str, save: Path | None) -> None:
    out = key.public()
    if save:
        try:
            apikeys.write_key_file(save, text)
        except OSError as exc:
            raise CommandError(f"--save {save}: {exc.strerror}", code=2) from None
        out["key_file"] = str(save)
        app.emit(out, text=f"API key {key.id} ({key.scope}) written to {save} (0600); it is not shown again")
        return
    out["key"] = text
    click.echo(f"API key {key.id} ({key.scope}): shown once, store it now (the platform keeps only a hash)", err=True)
    app.emit(out, text=text)


_save_option = click.option("--save", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
                            help="Write the key to this new file (0600) instead of printing it.")


@click.group(name="apikey")
def group():
    """API keys: every command needs one (scopes admin, read, tenant:NAME)."""


@group.command("init")
@click.option("--name", default="admin", show_default=True, callback=lambda c, p, v: _usage(apikeys.key_name, v),
              help="Name of the first admin key.")
@_save_option
@json_option
@pass_app
def init(app: App, name: str, save: Path | None):
    """Create the first admin key of a new install (refused once keys exist)."""
    try:
        key, text = _store(app).init(name)
    except apikeys.ApiKeyError as exc:
        raise CommandError(str(exc)) from None
    _issued(app, key, text, save)


@group.command("create")
@click.option("--name", required=True, callback=lambda c, p, v: _usage(apikeys.key_name, v), help="Key name.")
@click.option("--scope", required=True, metavar="admin|read|tenant:NAME",
              callback=lambda c, p, v: str(_usage(apikeys.parse_scope, v)), help="What the key may do.")
@click.option("--expires", metavar="ISO-8601", callback=lambda c, p, v: _usage(apikeys.parse_expires, v),
              help="Expiry with a timezone, e.g. 2027-01-01T00:00:00Z (default: never).")
@_save_option
@json_option
@pass_app
def create(app: App, name: str, scope: str, expires, save: Path | None):
    """Create a key; it is printed once."""
    key, text = _store(app).create(name, scope, expires)
    _issued(app, key, text, save)


@group.command("list")
@json_option
@pass_app
def list_(app: App):
    """The keys: id, name, scope, created, last used, expires, status (never a secret)."""
    rows = [k.public() for k in _store(app).keys()]
    app.emit(rows, text="\n".join(
        f"{r['id']}  {r['name']:<20} {r['scope']:<24} {r['status']:<8} created {r['created']}  "
        f"last used {r['last_used'] or '-'}  expires {r['expires'] or '-'}" for r in rows) or "no keys")


@group.command("revoke")
@click.argument("key_id", metavar="ID")
@json_option
@pass_app
def revoke(app: App, key_id: str):
    """Revoke key ID: it is refused from the next command on."""
    try:
        key = _store(app).revoke(key_id)
    except apikeys.ApiKeyError as exc:
        raise CommandError(str(exc), code=2 if "invalid" in str(exc) else 1) from None
    app.emit(key.public(), text=f"API key {key.id} ({key.name}): revoked {key.revoked}")

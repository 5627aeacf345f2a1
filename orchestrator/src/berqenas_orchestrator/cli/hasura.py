"""berqenas hasura: a tenant's tables in Hasura (playbooks hasura_mirror.yml, hasura_status.yml)."""

from __future__ import annotations

import click

from .. import vault
from ..app import App, CommandError, json_option, pass_app
from ..validate import ValidationError, read_secret_file, rule, tenant_name, validation

STATE_FILE = "hasura.yml"
SECRETS_FILE = "hasura_secrets.yml"
SECRETS_KEY = "berqenas_hasura_admin_secrets"


def _tenant(ctx, param, value):
    try:
        return tenant_name(value)
    except ValidationError as exc:
        raise click.BadParameter(str(exc)) from None


def _tables(values) -> list[str]:
    from ansible_collections.berqenas.platform.plugins.module_utils import hasura as H

    out = []
    for v in values or ():
        try:
            H.TableSpec.from_param(v, "public")
        except H.HasuraError as exc:
            raise click.BadParameter(str(exc), param_hint="--table") from None
        out.append(v)
    return out


@click.group("hasura")
def group():
    """A tenant's tables in Hasura: its own source (its own login role), tracked tables, permissions."""


@group.command("configure")
@click.option("--url", required=True, help="Base URL of the Hasura engine, e.g. http://127.0.0.1:8080.")
@click.option("--admin-secret-file", required=True, callback=rule(validation.file_path, "admin secret file"),
              help="File holding the engine's admin secret (stored with Ansible Vault in the inventory).")
@json_option
@pass_app
def configure(app: App, url, admin_secret_file):
    """Record the engine's URL and its vaulted admin secret in the inventory."""
    from ansible_collections.berqenas.platform.plugins.module_utils import hasura as H

    try:
        H.Client(url, "", None)
    except H.HasuraError as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from None
    secret = read_secret_file(admin_secret_file, "--admin-secret-file", strip=True)
    with app.state.edit(STATE_FILE) as data:
        data["berqenas_hasura_url"] = url.rstrip("/")
    vault.store(app, SECRETS_FILE, SECRETS_KEY, "default", secret)
    app.emit({"url": url.rstrip("/"), "admin_secret": "vaulted"}, f"Hasura at {url.rstrip('/')} (admin secret vaulted)")


def _run(app: App, tenant: str, action: str, tables: list[str]):
    app.require_inventory()
    if not app.state.load(STATE_FILE).get("berqenas_hasura_url"):
        raise CommandError("no Hasura configured: run `berqenas hasura configure --url URL --admin-secret-file F`")
    result = app.run_or_fail("hasura_mirror.yml", {"berqenas_tenant": tenant, "berqenas_hasura_action": action,
                                                   "berqenas_hasura_tables": tables})
    res = result.answer
    app.emit(res, "\n".join(res.get("actions") or []) or f"{tenant}: nothing to change")


@group.command("track")
@click.argument("tenant", callback=_tenant)
@click.option("--table", "tables", multiple=True, required=True, help="A table of the tenant's schema (repeat).")
@json_option
@pass_app
def track(app: App, tenant, tables):
    """Track tables of TENANT's schema (select for TENANT_user)."""
    _run(app, tenant, "track", _tables(tables))


@group.command("untrack")
@click.argument("tenant", callback=_tenant)
@click.option("--table", "tables", multiple=True, required=True, help="A table of the tenant's schema (repeat).")
@json_option
@pass_app
def untrack(app: App, tenant, tables):
    """Untrack tables of TENANT's schema."""
    _run(app, tenant, "untrack", _tables(tables))


@group.command("mirror")
@click.argument("tenant", callback=_tenant)
@json_option
@pass_app
def mirror(app: App, tenant):
    """Track every table of TENANT's schema; tables gone from PostgreSQL leave the metadata."""
    _run(app, tenant, "mirror", [])


@group.command("status")
@json_option
@pass_app
def status(app: App):
    """Per tenant source: tracked tables, permissions, inconsistencies; the engine's version and health."""
    app.require_inventory()
    res = app.run_or_fail("hasura_status.yml", quiet=True).answer
    lines = [f"Hasura {res.get('version')}: {(res.get('health') or {}).get('text')}"]
    for s in res.get("sources") or []:
        bad = [n for n, t in s["tables"].items() if not t.get("consistent", True)]
        extra = f", inconsistent: {', '.join(bad)}" if bad else ""
        lines.append(f"{s['name']:<20} {len(s['tables'])} tables{extra}")
    app.emit(res, "\n".join(lines))

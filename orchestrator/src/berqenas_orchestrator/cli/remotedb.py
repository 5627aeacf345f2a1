"""berqenas remotedb: SQL Server databases a tenant's data is synced from."""

from __future__ import annotations

import click

from .. import vault
from ..app import App, CommandError, json_option, pass_app
from ..authz import visible
from ..validate import check, module_utils, read_secret_file, rule, validation

STATE_FILE = "remotedbs.yml"
KEY = "berqenas_remotedbs"
# passwords: Ansible Vault values of one dict variable, keyed by remote database name (playbooks/sync_run.yml)
SECRETS_FILE = "remotedb_secrets.yml"
SECRETS_KEY = "berqenas_remotedb_passwords"


def table_names(values) -> list[str]:
    """Validate '[schema].[table]' names with the collection's T-SQL parser; returns them normalised."""
    T = module_utils("mssql_tsql")
    out = []
    for v in values or ():
        check(validation.table_text, v, "table", param_hint="--table")
        try:
            out.append(T.quote_table(*T.parse_two_part_name(v)))
        except T.TsqlError as exc:
            raise click.BadParameter(f"table {v!r}: {exc}", param_hint="--table") from None
    return out


def listed(app: App) -> list[dict]:
    return [d for d in app.state.load(STATE_FILE).get(KEY, []) if isinstance(d, dict)]


def find(app: App, name: str, action: str) -> dict:
    for d in listed(app):
        if d.get("name") == name:
            return d
    raise CommandError(f"{action} remote database {name}: no such remote database in {app.inventory}")


def _public(d: dict) -> dict:
    return {k: d.get(k) for k in ("name", "tenant", "host", "port", "user", "database", "tables")}


def forget_password(app: App, name: str) -> bool:
    """Remove remote database NAME's vaulted password (for `remotedb remove`, and `tenant delete --cascade`)."""
    return vault.forget(app, SECRETS_FILE, SECRETS_KEY, name)


@click.group(name="remotedb")
def group():
    """Remote SQL Server databases (each belongs to one tenant) to sync from."""


@group.command("add")
@click.argument("name", callback=rule(validation.remotedb_name))
@click.option("--tenant", required=True, callback=rule(validation.tenant_name), help="The tenant the data belongs to.")
@click.option("--host", required=True, callback=rule(validation.host), help="SQL Server host name or address.")
@click.option("--port", default="1433", show_default=True, callback=rule(validation.port),
              help="SQL Server TCP port.")
@click.option("--user", required=True, callback=rule(validation.login_text, "user"), help="SQL login.")
@click.option("--password-file", required=True,
              help="File holding the password ('-' for stdin); stored with Ansible Vault, never echoed.")
@click.option("--database", required=True, callback=rule(validation.login_text, "database"), help="Source database.")
@click.option("--table", "tables", multiple=True, help="Default table to sync, '[schema].[table]' (repeatable).")
@json_option
@pass_app
def add(app: App, name, tenant, host, port, user, password_file, database, tables):
    """Add (or update) remote database NAME."""
    tables = table_names(tables)
    app.require_inventory()
    known = [t["name"] if isinstance(t, dict) else t
             for t in app.state.load("tenants.yml").get("berqenas_tenants", [])]
    if tenant not in known:
        raise CommandError(f"add remote database {name}: no tenant {tenant} (create it first)")
    password = read_secret_file(password_file, "--password-file", stdin=True)
    vault.store(app, SECRETS_FILE, SECRETS_KEY, name, password)
    entry = {"name": name, "tenant": tenant, "host": host, "port": port, "user": user, "database": database,
             "tables": tables}
    with app.state.edit(STATE_FILE) as data:
        dbs = [d for d in data.get(KEY, []) if not (isinstance(d, dict) and d.get("name") == name)]
        old = next((d for d in data.get(KEY, []) if isinstance(d, dict) and d.get("name") == name), None)
        if old and not tables:
            entry["tables"] = old.get("tables", [])
        dbs.append(entry)
        data[KEY] = dbs
    app.emit(_public(entry), text=f"remote database {name}: added ({user}@{host}:{port}/{database}, "
                                  f"tenant {tenant})")


@group.command("list")
@json_option
@pass_app
def list_(app: App):
    """The remote databases (passwords are never shown)."""
    rows = [_public(d) for d in visible(app, listed(app))]
    app.output_rows(rows, ("name", "tenant", "user", "host", "port", "database", "tables"),
                    empty="no remote databases")


@group.command("test")
@click.argument("name", callback=rule(validation.remotedb_name))
@json_option
@pass_app
def test(app: App, name):
    """Connect to remote database NAME from the sync host: server version and latency."""
    app.require_inventory()
    find(app, name, "test")
    result = app.run_or_fail("remotedb_test.yml", {"berqenas_remotedb": name}, quiet=True)
    src = result.answer.get("source") or {}
    out = {"name": name, "server_version": src.get("product_version"), "version": src.get("version"),
           "latency_ms": src.get("latency_ms"), "login_ms": src.get("login_ms")}
    app.emit(out, text=f"remote database {name}: SQL Server {out['server_version']}, "
                       f"latency {out['latency_ms']} ms (login {out['login_ms']} ms)")


@group.command("remove")
@click.argument("name", callback=rule(validation.remotedb_name))
@json_option
@pass_app
def remove(app: App, name):
    """Remove remote database NAME (its vaulted password too; synced tables and watermarks stay)."""
    find(app, name, "remove")
    with app.state.edit(STATE_FILE) as data:
        data[KEY] = [d for d in data.get(KEY, []) if not (isinstance(d, dict) and d.get("name") == name)]
    forget_password(app, name)
    app.emit({"name": name, "removed": True}, text=f"remote database {name}: removed")

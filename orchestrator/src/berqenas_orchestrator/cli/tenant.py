"""berqenas tenant: create, delete, list and show tenants of the platform database."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import click

from ..app import App, CommandError, json_option, pass_app
from ..authz import visible
from ..validate import rule, validation
from .remotedb import forget_password

STATE_FILE = "tenants.yml"
# Desired-state files of things that belong to a tenant: (variable, file under group_vars/all/).
DEPENDENT_FILES = (("berqenas_vpn_peers", "vpn.yml"), ("berqenas_exposures", "gateway.yml"),
                   ("berqenas_remotedbs", "remotedbs.yml"))


def _describe(entry: dict, database: str) -> dict:
    """A tenant as the postgres_tenants module returned it (schema, role names, credentials path), never
    re-derived here."""
    keys = ("name", "schema", "owner_role", "login_role", "readonly_role")
    return {**{k: entry.get(k) for k in keys}, "database": database, "credentials_file": entry.get("credentials_file")}


def _listed(app: App) -> list[dict]:
    return [t if isinstance(t, dict) else {"name": t} for t in app.state.load(STATE_FILE).get("berqenas_tenants", [])]


@click.group(name="tenant")
def group():
    """Tenants: a schema, an owner role, a login role and a read-only role each."""


@group.command("create")
@click.argument("name", callback=rule(validation.tenant_name))
@click.option("--check", is_flag=True, help="Report what would change; change nothing.")
@click.option("--diff", is_flag=True, help="Show the differences.")
@json_option
@pass_app
def create(app: App, name: str, check: bool, diff: bool):
    """Create tenant NAME (or repair it); idempotent."""
    app.require_inventory()
    with app.applying(STATE_FILE):  # a failed run puts the desired state back
        if not check and app.controller is None:  # a controller's desired state is its inventory's
            with app.state.edit(STATE_FILE) as data:
                tenants = data.setdefault("berqenas_tenants", [])
                if name not in [t["name"] if isinstance(t, dict) else t for t in tenants]:
                    tenants.append({"name": name})
        extravars = {"berqenas_tenant": name}  # also listed in the state: the playbook takes it once
        result = app.run_or_fail("tenant_create.yml", extravars, check=check, diff=diff)
    res = result.answer
    entry = next((t for t in res.get("tenants", []) if t["name"] == name), {})
    out = _describe(entry or {"name": name}, res.get("database", ""))
    out.update(status=entry.get("status"), changed=bool(entry.get("changed")), actions=entry.get("actions", []),
               check=check)
    text = f"tenant {name}: {entry.get('status')}" + (" (check mode)" if check else "")
    text += "".join(f"\n  {a}" for a in entry.get("actions", []))
    if diff:
        out["diff"] = result.diffs
        text += "".join(f"\n--- before ({d['task']})\n{d['before']}+++ after\n{d['after']}" for d in result.diffs)
    app.emit(out, text=text)


@group.command("delete")
@click.argument("name", callback=rule(validation.tenant_name))
@click.option("--yes", is_flag=True, help="Confirm the deletion (required).")
@click.option("--no-backup", is_flag=True, help="Do not dump the schema with pg_dump first.")
@click.option("--cascade", is_flag=True, help="Delete even though VPN peers, exposures or sync jobs still refer to it.")
@json_option
@pass_app
def delete(app: App, name: str, yes: bool, no_backup: bool, cascade: bool):
    """Delete tenant NAME: dump, then drop its schema and roles."""
    if not yes:
        raise CommandError(f"delete tenant {name}: refused without --yes", code=2)
    app.require_inventory()
    result = app.run_or_fail("tenant_delete.yml", {"berqenas_tenant": name, "berqenas_confirm": True,
                                                   "berqenas_cascade": cascade, "berqenas_backup": not no_backup})
    entry = next(iter(result.answer.get("tenants", [])), {})
    if app.controller is not None:
        app.emit({"name": name, "status": entry.get("status"), "backup_file": entry.get("backup_file"),
                  "actions": entry.get("actions", [])}, text=f"tenant {name}: {entry.get('status')}")
        return
    with app.state.edit(STATE_FILE) as data:
        data["berqenas_tenants"] = [t for t in data.get("berqenas_tenants", [])
                                    if (t["name"] if isinstance(t, dict) else t) != name]
    if cascade:  # dependents live in their own desired-state files
        removed = {}
        for key, fname in DEPENDENT_FILES:
            if app.state.path(fname).exists():
                with app.state.edit(fname) as data:
                    if key in data:
                        removed[key] = [d for d in data[key] if isinstance(d, dict) and d.get("tenant") == name]
                        data[key] = [d for d in data[key] if d not in removed[key]]
        for db in removed.get("berqenas_remotedbs", []):  # and their vaulted passwords
            forget_password(app, db["name"])
    out = {"name": name, "status": entry.get("status"), "backup_file": entry.get("backup_file"),
           "actions": entry.get("actions", [])}
    app.emit(out, text=f"tenant {name}: {entry.get('status')}" +
             (f"\n  backup: {entry['backup_file']}" if entry.get("backup_file") else ""))


@group.command("list")
@json_option
@pass_app
def list_(app: App):
    """The tenants of the platform with their live state (ok, missing, drifted)."""
    app.require_inventory()
    listed = visible(app, _listed(app), "name")
    rows = []
    if listed:
        result = app.run_or_fail("tenant_list.yml", quiet=True)
        res = result.answer
        live = {t["name"]: t for t in res.get("tenants", [])}
        for t in listed:
            entry = live.get(t["name"], {"name": t["name"]})
            row = _describe(entry, res.get("database", ""))
            row["state"] = entry.get("state", "unknown")
            rows.append(row)
    app.output_rows(rows, ("name", "state", "login_role", "database"), empty="no tenants")


@group.command("show")
@click.argument("name", callback=rule(validation.tenant_name))
@click.option("--credentials", is_flag=True, help="Also fetch and print the tenant's passwords.")
@json_option
@pass_app
def show(app: App, name: str, credentials: bool):
    """Show tenant NAME (roles, schema, database; passwords only with --credentials)."""
    app.require_inventory()
    if name not in [t["name"] for t in _listed(app)]:
        raise CommandError(f"show tenant {name}: no such tenant in {app.inventory}")
    res = app.run_or_fail("tenant_list.yml", quiet=True).answer  # the module's report names roles and paths
    out = _describe(next((t for t in res.get("tenants", []) if t["name"] == name), {"name": name}),
                    res.get("database", ""))
    if credentials:
        fetch_dir = tempfile.mkdtemp(prefix="berqenas-fetch-")
        old_umask = os.umask(0o077)  # the fetched copy is born 0600 (fetch writes with the controller's umask)
        try:
            app.run_or_fail("tenant_show.yml", {"berqenas_tenant": name, "berqenas_fetch_dir": fetch_dir}, quiet=True)
            with open(f"{fetch_dir}/{name}.json") as f:
                doc = json.load(f)
        finally:
            os.umask(old_umask)
            shutil.rmtree(fetch_dir, ignore_errors=True)
        out["credentials"] = {k: {"user": doc[k]["user"], "password": doc[k]["password"]} for k in ("app", "ro")}
        for key in ("host", "port"):
            if key in doc:
                out[key] = doc[key]
    text = "\n".join(f"{k}: {v}" for k, v in out.items() if k != "credentials")
    if credentials:
        text += "".join(f"\n{k}: {v['user']} / {v['password']}" for k, v in out["credentials"].items())
    app.emit(out, text=text)

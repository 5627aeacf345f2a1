"""berqenas gateway: expose a tenant's database (or another service) to the tenant's VPN peers, and undo it.

Desired state: ``berqenas_exposures`` in group_vars/all/gateway.yml (dicts keyed by tenant + name); every
change is validated with the collection's own rules (module_utils.validation, then module_utils.gateway's plan)
before it is written, then
playbooks/gateway_apply.yml reconciles the gateway. ``list`` and ``status`` run the read-only
playbooks/gateway_status.yml (sources resolved from the wireguard role's published peers).
"""

from __future__ import annotations

import click

from ..app import App, CommandError, json_option, pass_app
from ..authz import visible
from ..validate import module_utils, rule, validation

STATE_FILE = "gateway.yml"
KEY = "berqenas_exposures"
TENANTS_FILE = "tenants.yml"


def _row(e: dict) -> dict:
    return {k: e.get(k) for k in ("tenant", "name", "port", "target", "sources")}


def _text(rows: list[dict]) -> str:
    return "\n".join(f"{r['tenant']}/{r['name']:<12} :{r['port']:<6} -> {r['target']:<24} from "
                     f"{', '.join(r['sources']) or '(no sources yet)'}" for r in rows) or "no exposures"


@click.group(name="gateway")
def group():
    """Gateway: ufw default-deny, per-tenant exposures of the database (or another service) to VPN peers."""


@group.command("expose")
@click.argument("tenant", callback=rule(validation.tenant_name))
@click.option("--name", "name", default="db", show_default=True, callback=rule(validation.exposure_name),
              help="Name of the exposure (unique per tenant).")
@click.option("--service", type=click.Choice(["postgres"]), help="The platform database (the default).")
@click.option("--to", "target", metavar="HOST:PORT", callback=rule(validation.host_port, "target", keep=True),
              help="Forward to another service instead (DNAT).")
@click.option("--public-port", type=int, callback=rule(validation.port, "public port"),
              help="Port on the gateway (default: the target's port).")
@click.option("--allow", "allow", multiple=True, metavar="CIDR",
              callback=rule(validation.cidr, "allowed CIDR", keep=True),
              help="Also admit this non-VPN source (repeatable; PostgreSQL then requires TLS).")
@json_option
@pass_app
def expose(app: App, tenant: str, name: str, service: str | None, target: str | None, public_port: int | None,
           allow: tuple[str, ...]):
    """Expose TENANT's database (or --to HOST:PORT) to TENANT's VPN peers (and --allow CIDRs); idempotent."""
    app.require_inventory()
    if service and target:
        raise CommandError("expose: give either --service or --to, not both", code=2)
    tenants = app.state.load(TENANTS_FILE).get("berqenas_tenants", [])
    if tenant not in [t["name"] if isinstance(t, dict) else t for t in tenants]:
        raise CommandError(f"expose {tenant}/{name}: no tenant {tenant} in {app.inventory} (berqenas tenant create)")
    entry: dict = {"tenant": tenant, "name": name}
    if target:
        entry["target"] = target
    else:
        entry["service"] = "postgres"
    if public_port is not None:
        entry["public_port"] = public_port
    if allow:
        entry["allow"] = list(allow)
    platform = app.state.load("platform.yml")
    postgres = {"host": platform.get("berqenas_db_host") or "127.0.0.1", "port": platform.get("berqenas_db_port", 5432)}
    current = [e for e in app.state.load(STATE_FILE).get(KEY, []) if (e.get("tenant"), e.get("name")) != (tenant, name)]
    gw = module_utils("gateway")
    try:  # the playbook's validation (names, ports, CIDRs, hosts, template syntax, conflicts, reserved ports)
        gw.build_plan({"exposures": current + [entry], "postgres": postgres})
    except gw.GatewayError as exc:
        raise CommandError(f"expose {tenant}/{name}: {exc}", code=2) from None
    with app.applying(STATE_FILE):
        with app.state.edit(STATE_FILE) as data:
            data[KEY] = [e for e in data.get(KEY, []) if (e.get("tenant"), e.get("name")) != (tenant, name)] + [entry]
        result = app.run_or_fail("gateway_apply.yml")
    rows = [_row(e) for e in result.answer.get("exposures", [])
            if (e["tenant"], e["name"]) == (tenant, name)]
    out = rows[0] if rows else {"tenant": tenant, "name": name}
    app.emit(out, text=_text(rows))


@group.command("unexpose")
@click.argument("tenant", callback=rule(validation.tenant_name))
@click.option("--name", "name", default="db", show_default=True, callback=rule(validation.exposure_name),
              help="Name of the exposure.")
@json_option
@pass_app
def unexpose(app: App, tenant: str, name: str):
    """Remove TENANT's exposure NAME: its firewall rules, forwards and pg_hba lines are gone after the run."""
    app.require_inventory()
    listed = app.state.load(STATE_FILE).get(KEY, [])
    if not any((e.get("tenant"), e.get("name")) == (tenant, name) for e in listed):
        raise CommandError(f"unexpose {tenant}/{name}: no such exposure in {app.inventory}")
    with app.applying(STATE_FILE):
        with app.state.edit(STATE_FILE) as data:
            data[KEY] = [e for e in data.get(KEY, []) if (e.get("tenant"), e.get("name")) != (tenant, name)]
        app.run_or_fail("gateway_apply.yml")
    app.emit({"tenant": tenant, "name": name, "status": "removed"}, text=f"exposure {tenant}/{name}: removed")


def _status(app: App) -> dict:
    app.require_inventory()
    return app.run_or_fail("gateway_status.yml", quiet=True).answer


@group.command("list")
@json_option
@pass_app
def list_(app: App):
    """The exposures: tenant, name, public port, target and the sources admitted (VPN peers + allow-list)."""
    rows = [_row(e) for e in visible(app, _status(app).get("exposures", []))]
    app.output_rows(rows, ("tenant", "name", "port", "target", "sources"), empty="no exposures")


@group.command("status")
@json_option
@pass_app
def status(app: App):
    """ufw's state and rules, and the platform's chains (filter and nat) on the gateway."""
    st = _status(app).get("status") or {}
    chains = st.get("chains", {})
    text = "\n".join(st.get("ufw", [])) + "".join(
        f"\n\n{table} {chain}:\n" + "\n".join(lines) for table, by in chains.items() for chain, lines in by.items()
    )
    app.emit(st, text=text)

"""berqenas local: the embedded default platform (a throwaway PostgreSQL for $BERQENAS_HOME)."""

from __future__ import annotations

import click

from ..app import App, CommandError, json_option, pass_app
from ..paths import collection_root

LOCAL_INVENTORY = "inventories/local/hosts.yml"


def _inventory():
    return collection_root() / LOCAL_INVENTORY


def _text(d: dict) -> str:
    return "\n".join(f"{k}: {d.get(k)}" for k in ("home", "running", "host", "port", "superuser", "database", "netns",
                                                   "endpoint"))


@click.group(name="local")
def group():
    """The embedded default: a throwaway PostgreSQL for the instance in $BERQENAS_HOME."""


@group.command("up")
@click.option("--network/--no-network", default=True, show_default=True,
              help="Also bring up the local VPN + gateway host (a network namespace; needs root). "
                   "--no-network: PostgreSQL and the tenants only.")
@json_option
@pass_app
def up(app: App, network: bool):
    """Start the local platform (created on first use) and write its inventory."""
    if network:  # before anything is touched (the local_network module checks the same)
        from ansible_collections.berqenas.platform.plugins.module_utils import localnet

        problem = localnet.privilege_problem(localnet.effective_capabilities())
        if problem:
            raise CommandError("local up: " + problem)
    result = app.run_or_fail("local_up.yml", {"berqenas_local_network": network}, inventory=_inventory())
    data = dict(result.answer)
    data.pop("inventory", None)
    if data.get("netns"):  # the local VPN + gateway host: WireGuard up (no peers yet), ufw default deny
        app.run_or_fail("vpn_apply.yml")
        app.run_or_fail("gateway_apply.yml")
    app.emit(data, text=_text(data))


@group.command("status")
@json_option
@pass_app
def status(app: App):
    """Where the local platform is and whether it runs (keys: host, port, socket_dir, superuser, database)."""
    result = app.run_or_fail("local_status.yml", inventory=_inventory(), quiet=True)
    data = dict(result.answer)
    app.emit(data, text=_text(data))


@group.command("down")
@click.option("--purge", is_flag=True, help="Also remove the cluster and everything the instance created.")
@json_option
@pass_app
def down(app: App, purge: bool):
    """Stop the local platform (and with --purge remove all of it)."""
    result = app.run_or_fail("local_down.yml", {"berqenas_local_state": "absent" if purge else "stopped"},
                             inventory=_inventory())
    data = {"home": str(app.home), "running": False, "purged": purge, "changed": result.changed > 0}
    app.emit(data, text=f"{'purged' if purge else 'stopped'}: {app.home}")

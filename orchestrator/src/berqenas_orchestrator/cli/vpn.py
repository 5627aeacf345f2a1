"""berqenas vpn: WireGuard peers (add, remove, list) and their live status.

Desired state: ``berqenas_vpn_peers`` in group_vars/all/vpn.yml (dicts with name, tenant, and optionally
public_key, expires). Every input is validated with the collection's own rules (module_utils.validation) before
it is written; playbooks/vpn_apply.yml then reconciles the WireGuard host (hitless ``wg syncconf``). Keys are
generated on the WireGuard host and stay there; ``peer add`` fetches the peer's client config (0600) into
$BERQENAS_HOME/vpn/NAME/ with playbooks/vpn_peer_config.yml (imported by vpn_apply.yml in the same run on the
CLI's own runner). No private key is ever printed.
"""

from __future__ import annotations

import contextlib
import os
import shutil

import click

from ..app import App, CommandError, json_option, pass_app
from ..authz import visible
from ..validate import rule, validation

STATE_FILE = "vpn.yml"
KEY = "berqenas_vpn_peers"
TENANTS_FILE = "tenants.yml"


def _local_dir(app: App, name: str) -> str:
    return os.path.join(str(app.home), "vpn", name)


def _dest(app: App, name: str) -> str:
    """$BERQENAS_HOME/vpn/NAME/ (0700): where NAME's client config (and QR files) land, 0600."""
    dest = _local_dir(app, name)
    os.makedirs(dest, mode=0o700, exist_ok=True)
    os.chmod(dest, 0o700)
    return dest


def _run_private(app: App, playbook: str, extravars: dict, quiet: bool = False):
    # ansible's fetch writes with the umask and the playbook chmods 0600 afterwards: under umask 077 the client's
    # private key is never in a 0644 file, not even for that moment (tests/integration/test_cli_leaks.py)
    previous = os.umask(0o077)
    try:
        return app.run_or_fail(playbook, extravars, quiet=quiet)
    finally:
        os.umask(previous)


def _files(app: App, name: str, result) -> dict:
    return {f: os.path.join(_local_dir(app, name), f) for f in result.answer.get("files", [])}


def _fetch(app: App, name: str) -> dict:
    """Client config (and QR files) of NAME from the WireGuard host into $BERQENAS_HOME/vpn/NAME/ (0700/0600)."""
    res = _run_private(app, "vpn_peer_config.yml", {"berqenas_vpn_peer": name, "berqenas_vpn_dest": _dest(app, name)},
                       quiet=True)
    return _files(app, name, res)


def _published(result) -> list[dict]:
    """The peers vpn_apply.yml published: ``peers``, the wireguard role's ``wireguard_peers_published``."""
    return result.answer.get("peers", [])


def _row(p: dict, keys=("name", "tenant", "addresses", "enabled", "expires")) -> dict:
    return {k: p.get(k) for k in keys}


@click.group(name="vpn")
def group():
    """WireGuard VPN: peers (generated or client-supplied keys), client configs, live status."""


@group.group(name="peer")
def peer():
    """Add, remove and list VPN peers."""


@peer.command("add")
@click.argument("name", callback=rule(validation.peer_name))
@click.option(
    "--tenant",
    required=True,
    callback=rule(validation.tenant_name),
    help="Tenant the peer belongs to.",
)
@click.option(
    "--public-key",
    "public_key",
    metavar="KEY",
    callback=rule(validation.wireguard_key),
    help="The client's own public key (then no private key is generated; the config lacks only it).",
)
@click.option("--expires", metavar="ISO-8601", callback=rule(validation.expiry, "expires", True),
              help="Expiry with timezone, e.g. 2026-12-31T00:00:00Z.")
@click.option("--qr", is_flag=True, help="Also fetch the QR code and show it in the terminal.")
@json_option
@pass_app
def add(app: App, name: str, tenant: str, public_key: str | None, expires, qr: bool):
    """Add peer NAME for TENANT (or update it), apply without disturbing other peers, fetch its client config."""
    app.require_inventory()
    entry: dict = {"name": name, "tenant": tenant}
    if public_key:
        entry["public_key"] = public_key
    if expires:
        entry["expires"] = validation.format_expiry(expires)
    tenants = app.state.load(TENANTS_FILE).get("berqenas_tenants", [])
    if tenant not in [t["name"] if isinstance(t, dict) else t for t in tenants]:
        raise CommandError(f"vpn peer add {name}: no tenant {tenant} in {app.inventory} (berqenas tenant create)")
    others = [p for p in app.state.load(STATE_FILE).get(KEY, []) if p.get("name") != name]
    if public_key and any(p.get("public_key") == public_key for p in others):
        raise CommandError(f"vpn peer add {name}: that public key belongs to another peer")
    with app.applying(STATE_FILE):  # a failed apply puts the desired state back as it was
        with app.state.edit(STATE_FILE) as data:
            data[KEY] = [p for p in data.get(KEY, []) if p.get("name") != name] + [entry]
        # on the CLI's own runner the same run fetches the client config (vpn_apply.yml imports
        # vpn_peer_config.yml when berqenas_vpn_peer is given): one playbook run instead of two
        fetch = {"berqenas_vpn_peer": name, "berqenas_vpn_dest": _dest(app, name)} if app.controller is None else {}
        try:
            result = _run_private(app, "vpn_apply.yml", fetch)
        except CommandError as exc:
            if fetch:
                with contextlib.suppress(OSError):  # nothing was fetched: no empty directory left behind
                    os.rmdir(fetch["berqenas_vpn_dest"])
            raise CommandError(f"vpn peer add {name}: {exc.message}", code=exc.exit_code, details=exc.details) from None
    mine = next((p for p in _published(result) if p.get("name") == name), None)
    if mine is None:
        raise CommandError(f"vpn peer add {name}: the WireGuard host did not publish the peer")
    files = _files(app, name, result) if fetch else _fetch(app, name)
    out = {
        "name": name,
        "tenant": tenant,
        "addresses": mine.get("addresses", []),
        "config_file": files.get(name + ".conf"),
        "qr_file": files.get(name + ".png") if qr else None,
    }
    text = f"peer {name} ({tenant}): {', '.join(out['addresses'])}\nclient config: {out['config_file']}"
    if mine.get("key_source") == "client":
        text += "\n(add your own PrivateKey line: the platform never had it)"
    if qr and files.get(name + ".qr.txt") and not app.json:
        with open(files[name + ".qr.txt"], encoding="utf-8") as f:
            text += "\n" + f.read()
    app.emit(out, text=text)


@peer.command("remove")
@click.argument("name", callback=rule(validation.peer_name))
@json_option
@pass_app
def remove(app: App, name: str):
    """Remove peer NAME: it passes no traffic after the run; its address is released, nobody else renumbered."""
    app.require_inventory()
    if not any(p.get("name") == name for p in app.state.load(STATE_FILE).get(KEY, [])):
        raise CommandError(f"vpn peer remove {name}: no such peer in {app.inventory}")
    with app.applying(STATE_FILE):
        with app.state.edit(STATE_FILE) as data:
            data[KEY] = [p for p in data.get(KEY, []) if p.get("name") != name]
        app.run_or_fail("vpn_apply.yml")
    shutil.rmtree(_local_dir(app, name), ignore_errors=True)
    app.emit({"name": name, "status": "removed"}, text=f"peer {name}: removed")


def _status(app: App) -> dict:
    app.require_inventory()
    return app.run_or_fail("vpn_status.yml", quiet=True).answer


@peer.command("list")
@json_option
@pass_app
def list_(app: App):
    """The peers on the WireGuard host: name, tenant, addresses, enabled, expires, config and QR file there."""
    rows = [_row(p, ("name", "tenant", "addresses", "enabled", "expires", "config_file", "qr_file"))
            for p in visible(app, _status(app).get("peers", []))]  # fmt: skip
    app.output_rows(rows, ("name", "tenant", "addresses", "enabled", "expires"), empty="no peers")


@group.command("status")
@json_option
@pass_app
def status(app: App):
    """Live state per peer: active | stale | never | disabled | expired, latest handshake age, bytes."""
    keys = ("name", "addresses", "latest_handshake_age_s", "rx_bytes", "tx_bytes", "state")
    rows = [_row(p, keys) for p in visible(app, _status(app).get("peers", []))]
    app.output_rows(rows, ("name", "state", ("latest_handshake_age_s", "handshake_s"), "rx_bytes", "tx_bytes"),
                    empty="no peers")

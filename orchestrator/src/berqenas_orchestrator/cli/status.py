"""berqenas status: the platform at a glance (tenants, VPN peers, exposures, sync, Hasura, health verdicts).

Read-only, and fast enough to watch (under 2 s for 100 tenants and 1,000 peers, bench/bench_status.py): a playbook
run through ansible-runner costs 5-7 s before it does anything, so status reads

- the desired state files (tenants, peers, exposures, remote databases, Hasura) directly;
- for an inventory host whose ``ansible_connection`` is ``local`` (the embedded instance, or a CLI on the platform
  host): the WireGuard allocations and ONE ``wg show IFACE dump`` through ``wireguard.interface_status`` (what the
  health module and ``vpn status`` call), and ONE connection to the platform database for the tenants' schemas and
  ``sync_state.read_states`` (what the health module reads), called in this process;
- for the hosts that are not local: ONE run of the read-only ``health_check.yml`` limited to those kinds (its
  wireguard and sync checks carry the same figures), so a remote platform costs one playbook, never one per item;
- Hasura's metadata (``hasura.info``) over HTTP when the inventory configures it.

The verdicts are the health module's own functions (``health.wireguard_results``, ``health.sync_results``) applied
to what was read, plus the database and Hasura answering; the tenants' logins and remote databases are
``berqenas health``'s (they cost a login each).
"""

from __future__ import annotations

import contextlib
import datetime
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import yaml

from .. import authz, vault
from ..app import App, CommandError, json_option, pass_app, render_table
from ..validate import module_utils, rule, validation

ROWS_SHOWN = 5  # per section on the screen; --all (or --json) shows every row


# ------------------------------------------------------------------------------------------------- reading
def _yaml_inventory_hosts(inventory: Path, group: str) -> list[tuple[str, bool]] | None:
    """(host, is_local) of GROUP in a YAML inventory (hosts.yml, the shape `berqenas local up` writes), read with
    libyaml: ansible's InventoryManager costs about a second of imports. None when the inventory is another kind."""
    path = inventory / "hosts.yml" if inventory.is_dir() else inventory
    if path.suffix not in (".yml", ".yaml") or not path.is_file() or (inventory.is_dir() and any(
            p.name not in ("hosts.yml", "group_vars", "host_vars") and not p.name.startswith(".")
            for p in inventory.iterdir())):
        return None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.load(f, Loader=loader)  # noqa: S506 - a safe loader
        except yaml.YAMLError:
            return None
    if not isinstance(data, dict) or set(data) - {"all"}:
        return None
    conn: dict[str, str | None] = {}
    members: dict[str, set] = {}

    def walk(name, node, inherited):
        node = node or {}
        if not isinstance(node, dict):
            raise ValueError(name)
        c = (node.get("vars") or {}).get("ansible_connection", inherited)
        hosts = set()
        for h, hv in (node.get("hosts") or {}).items():
            hosts.add(h)
            own = (hv or {}).get("ansible_connection")
            if own is not None or h not in conn or conn[h] is None:
                conn[h] = own if own is not None else (c if conn.get(h) is None else conn[h])
        for child, cnode in (node.get("children") or {}).items():
            hosts |= walk(child, cnode, c)
        members[name] = members.get(name, set()) | hosts
        return hosts

    try:
        walk("all", data.get("all"), None)
    except (ValueError, AttributeError):
        return None
    return [(h, conn.get(h) == "local") for h in sorted(members.get(group, ()))]


def _inventory_hosts(app: App, pattern: str) -> list[tuple[str, bool]]:
    """(host, is_local) of the inventory's hosts in group PATTERN (host_vars/ and group_vars/ connection
    settings count through InventoryManager only, so an inventory with host_vars takes that path)."""
    quick = None if (app.inventory / "host_vars").exists() else _yaml_inventory_hosts(app.inventory, pattern)
    if quick is not None:
        return quick
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    im = _inventory_hosts.cache.get(str(app.inventory))
    if im is None:
        im = _inventory_hosts.cache[str(app.inventory)] = InventoryManager(loader=DataLoader(),
                                                                           sources=[str(app.inventory)])
    out = []
    for h in im.get_hosts(pattern):
        conn = h.vars.get("ansible_connection")
        for g in h.get_groups():
            conn = conn or g.get_vars().get("ansible_connection")
        out.append((h.name, conn == "local"))
    return out


_inventory_hosts.cache = {}


def desired(app: App) -> dict:
    st = app.state
    tenants = [t if isinstance(t, dict) else {"name": t} for t in st.load("tenants.yml").get("berqenas_tenants", [])]
    return {
        "tenants": [dict(t, state=t.get("state", "present")) for t in tenants],
        "peers": [p for p in st.load("vpn.yml").get("berqenas_vpn_peers", []) or [] if isinstance(p, dict)],
        "exposures": [e for e in st.load("gateway.yml").get("berqenas_exposures", []) or [] if isinstance(e, dict)],
        "remotedbs": [d for d in st.load("remotedbs.yml").get("berqenas_remotedbs", []) or [] if isinstance(d, dict)],
        "platform": st.load("platform.yml"),
        "hasura": st.load("hasura.yml"),
    }


def _secret(app: App, value) -> str:
    if isinstance(value, dict) and "__vault__" in value:
        return vault.decrypt(app, value["__vault__"])
    return "" if value is None else str(value)


def read_database(app: App, platform: dict, tenants: list[str], timeout: float) -> dict:
    """The platform database, in one connection: which tenant schemas exist, and the sync state."""
    import psycopg

    sync_state = module_utils("sync_state")
    kw = {"dbname": platform.get("berqenas_db_name") or "berqenas", "user": platform.get("berqenas_db_user") or
          "postgres", "port": int(platform.get("berqenas_db_port") or 5432), "connect_timeout": max(1, int(timeout)),
          "application_name": "berqenas-status", "autocommit": True}
    host = platform.get("berqenas_db_socket") or platform.get("berqenas_db_host") or "/var/run/postgresql"
    kw["host"] = host
    password = _secret(app, platform.get("berqenas_db_password"))
    if password:
        kw["password"] = password
    t0 = time.monotonic()
    try:
        with contextlib.closing(psycopg.connect(**kw)) as conn:
            conn.execute("SET default_transaction_read_only = on")
            version, schemas = conn.execute(
                "SELECT current_setting('server_version'), coalesce(array_agg(nspname::text), '{}') "
                "FROM pg_namespace WHERE nspname = ANY(%s)", (tenants,)).fetchone()
            states = sync_state.read_states(conn)
    except psycopg.Error as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {"ok": False, "error": msg, "schemas": None, "sync": []}
    return {"ok": True, "version": version, "latency_s": round(time.monotonic() - t0, 4), "schemas": list(schemas),
            "sync": states}


def _run_command(argv):
    p = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv, no shell
    return p.returncode, p.stdout, p.stderr


def read_wireguard(platform: dict, stale_after: int) -> dict:
    wg = module_utils("wireguard")
    iface = platform.get("berqenas_vpn_interface") or platform.get("wireguard_interface") or "wg0"
    state_dir = platform.get("wireguard_state_dir") or "/etc/berqenas/wireguard"
    running, dump_iface, peers = wg.interface_status(state_dir, iface, _run_command, stale_after)
    return {"interface": iface, "running": running, "dump": dump_iface, "peers": peers}


def read_remote(app: App, kinds: list[str], timeout: float) -> list[dict]:
    """The non-local hosts' part: one read-only health_check.yml run limited to KINDS."""
    from .health import gather

    return gather(app, tuple(kinds), timeout)


def read_hasura(app: App, hasura_state: dict, timeout: float) -> dict | None:
    url = hasura_state.get("berqenas_hasura_url")
    if not url:
        return None
    H = module_utils("hasura")
    try:
        secrets = vault.entries(app, "hasura_secrets.yml", "berqenas_hasura_admin_secrets")
        client = H.Client(url, secrets.get("default", ""), H.open_url_transport(), timeout=timeout)
        return dict(H.info(client), url=url, ok=True)
    except (H.HasuraError, OSError, ValueError) as exc:
        return {"url": url, "ok": False, "error": str(exc), "sources": []}


# ---------------------------------------------------------------------------------------------- assembling
def _iso_ago(age):
    if age is None:
        return None
    return (datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=age)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def assemble(d: dict, db: dict | None, wg: dict | None, remote: list[dict], hasura: dict | None,
             stale_after: int = 180, max_lag: int = 3600) -> dict:
    """Every section as rows (the --json document), and the verdicts, from what was read."""
    H = module_utils("health")
    checks = []
    # peers: live figures from the local dump, else from the remote health checks
    live = {}
    if wg is not None:
        for p in wg["peers"]:
            live[p["name"]] = {"addresses": p.get("addresses") or [],
                               "handshake_age_s": p.get("latest_handshake_age_s"),
                               "rx_bytes": p.get("rx_bytes", 0), "tx_bytes": p.get("tx_bytes", 0),
                               "state": p["state"], "endpoint": p.get("endpoint")}
        for c in H.wireguard_results(wg["interface"], wg["running"], 0, wg["dump"], wg["peers"], int(time.time()),
                                     stale_after):
            checks.append(dict(c, host="local"))
    for c in remote:
        if c["kind"] == "wireguard" and "/peer/" in c["name"]:
            m = c.get("metrics") or {}
            live[c["name"].split("/peer/", 1)[1]] = {
                "addresses": m.get("addresses") or [], "handshake_age_s": m.get("latest_handshake_age_seconds"),
                "rx_bytes": m.get("rx_bytes", 0), "tx_bytes": m.get("tx_bytes", 0),
                "state": {"ok": "active"}.get(c["status"], c["status"]), "endpoint": None}
    peers = []
    for p in d["peers"]:
        lv = live.get(p.get("name"), {})
        enabled = p.get("enabled", True)
        peers.append({"name": p.get("name"), "tenant": p.get("tenant"), "addresses": lv.get("addresses", []),
                      "state": lv.get("state") or ("disabled" if not enabled else "unknown"),
                      "latest_handshake_age_s": lv.get("handshake_age_s"),
                      "latest_handshake": _iso_ago(lv.get("handshake_age_s")),
                      "rx_bytes": lv.get("rx_bytes", 0), "tx_bytes": lv.get("tx_bytes", 0),
                      "expires": p.get("expires")})
    # sync: the local catalog's state rows, else the remote checks' figures
    sync = []
    if db is not None:
        for s in db["sync"]:
            sync.append({"remotedb": s["job"], "source": "%s.%s" % (s["source_schema"], s["source_table"]),
                         "target": "%s.%s" % (s["target_schema"], s["target_table"]),
                         "last_run_at": s.get("last_run_at"), "last_result": s.get("last_result"),
                         "rows_total": s.get("rows_total") or 0, "lag_s": s.get("lag_s")})
        if db["ok"]:
            checks.append(H.result("postgres", "server", True, detail="PostgreSQL %s" % db.get("version"),
                                   metrics={"latency_seconds": db.get("latency_s")}) | {"host": "local"})
            checks += [dict(c, host="local") for c in H.sync_results(db["sync"], max_lag)]
        else:
            checks.append(H.result("postgres", "server", False, "error", db["error"]) | {"host": "local"})
    for c in remote:
        if c["kind"] == "sync" and c["name"] != "state":
            m = c.get("metrics") or {}
            sync.append({"remotedb": m.get("remotedb"), "source": m.get("source"), "target": m.get("target"),
                         "last_run_at": m.get("last_run_at"), "last_result": c["status"] if c["status"] == "failed"
                         else "ok", "rows_total": m.get("rows_total") or 0, "lag_s": m.get("lag_seconds")})
    checks += [c for c in remote if not (c["kind"] == "wireguard" and "/peer/" in c["name"] and c["healthy"])]
    # hasura
    tables = []
    if hasura is not None:
        bad = hasura.get("inconsistent_objects") or [] if hasura["ok"] else []
        health = hasura.get("health") or {}
        if bad:
            verdict = H.result("hasura", "engine", False, "inconsistent", "%d inconsistent objects" % len(bad))
        elif not hasura["ok"]:
            verdict = H.result("hasura", "engine", False, "error", hasura.get("error"))
        elif not health.get("ok"):
            verdict = H.result("hasura", "engine", False, "unhealthy", "/healthz: HTTP %s %s" % (
                health.get("status"), (health.get("text") or "")[:80]))
        else:
            verdict = H.result("hasura", "engine", True,
                               detail="Hasura %s, metadata consistent" % hasura.get("version"))
        checks.append(dict(verdict, host="hasura"))
        for s in hasura.get("sources") or []:
            for t, v in sorted(s["tables"].items()):
                tables.append({"source": s["name"], "table": t, "consistent": v.get("consistent", True),
                               "roles": sorted((v.get("select_permissions") or {}) if isinstance(
                                   v.get("select_permissions"), dict) else [])})
    # tenants
    schemas = set(db["schemas"]) if db is not None and db["schemas"] is not None else None
    tenants = []
    for t in d["tenants"]:
        name = t["name"]
        state = t["state"]
        if state == "present" and schemas is not None:
            state = "present" if name in schemas else "missing"
        tenants.append({"name": name, "state": state,
                        "peers": sum(1 for p in peers if p["tenant"] == name),
                        "peers_active": sum(1 for p in peers if p["tenant"] == name and p["state"] == "active"),
                        "exposures": sum(1 for e in d["exposures"] if e.get("tenant") == name),
                        "remotedbs": sum(1 for r in d["remotedbs"] if r.get("tenant") == name),
                        "hasura_tables": sum(1 for x in tables if x["source"] == name)})
    exposures = [{k: e.get(k) for k in ("tenant", "name", "port", "target", "sources")} for e in d["exposures"]]
    remotedbs = [{k: r.get(k) for k in ("name", "tenant", "host", "port", "database")} for r in d["remotedbs"]]
    checks.sort(key=lambda c: (c["healthy"], c["kind"], c["name"]))
    return {"tenants": tenants, "peers": peers, "exposures": exposures, "remotedbs": remotedbs, "sync": sync,
            "hasura_tables": tables, "health": [{k: c.get(k) for k in ("kind", "host", "name", "healthy", "status",
                                                                      "detail", "since")} for c in checks],
            "healthy": all(c["healthy"] for c in checks)}


def gather(app: App, timeout: float = 5.0) -> dict:
    """Read everything once (see the module's docstring) and assemble it (thresholds: the inventory's
    berqenas_health_stale_after and berqenas_health_max_sync_lag in platform.yml, as the health check's)."""
    app.require_inventory()
    d = desired(app)
    stale_after = int(d["platform"].get("berqenas_health_stale_after") or 180)
    max_lag = int(d["platform"].get("berqenas_health_max_sync_lag") or 3600)
    vpn_group = d["platform"].get("berqenas_vpn_hosts") or "wireguard"
    db_hosts = _inventory_hosts(app, "berqenas_db")
    wg_hosts = _inventory_hosts(app, vpn_group)
    remote_kinds = []
    db = wg = None
    sources = {"database": "none", "wireguard": "none"}
    if db_hosts and all(local for _, local in db_hosts):
        live_tenants = [t["name"] for t in d["tenants"] if t["state"] == "present"]
        db = read_database(app, d["platform"], live_tenants, timeout)
        sources["database"] = "local"
    elif db_hosts:
        remote_kinds.append("sync")
        sources["database"] = "playbook"
    if wg_hosts and all(local for _, local in wg_hosts):
        wg = read_wireguard(d["platform"], stale_after)
        sources["wireguard"] = "local"
    elif wg_hosts:
        remote_kinds.append("wireguard")
        sources["wireguard"] = "playbook"
    remote = read_remote(app, remote_kinds, timeout) if remote_kinds else []
    hasura = read_hasura(app, d["hasura"], timeout)
    out = assemble(d, db, wg, remote, hasura, stale_after, max_lag)
    out["read_from"] = sources
    out["at"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def only_visible(app: App, data: dict) -> dict:
    """A tenant key sees its tenant's rows only (and no platform-wide verdicts)."""
    scope = getattr(app, "scope", None)
    if scope is None or scope.kind != "tenant":
        return data
    owners = {r["name"]: r["tenant"] for r in data["remotedbs"]}
    out = dict(data)
    out["tenants"] = authz.visible(app, data["tenants"], "name")
    for key in ("peers", "exposures", "remotedbs"):
        out[key] = authz.visible(app, data[key])
    out["sync"] = authz.visible(app, data["sync"], lambda r: owners.get(r["remotedb"]))
    out["hasura_tables"] = authz.visible(app, data["hasura_tables"], "source")
    peers = {p["name"] for p in out["peers"]}
    dbs = {r["name"] for r in out["remotedbs"]}

    def mine(c):
        if c["kind"] == "wireguard" and "/peer/" in c["name"]:
            return c["name"].split("/peer/", 1)[1] in peers
        if c["kind"] == "sync":
            return c["name"].split("/", 1)[0] in dbs
        return False

    out["health"] = [c for c in data["health"] if mine(c)]
    out["healthy"] = all(c["healthy"] for c in out["health"])
    return out


# ---------------------------------------------------------------------------------------------- rendering
def _bytes(n):
    n = float(n or 0)
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return ("%d%s" % (n, unit)) if unit == "B" else ("%.1f%s" % (n, unit))
        n /= 1024
    return str(n)


def _age(s):
    if s is None:
        return "-"
    s = int(s)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return "%d%s ago" % (s // size, unit)
    return "%ds ago" % s


def _section(title, rows, columns, show_all, tty, width, order=None):
    if not rows:
        return ""
    rows = sorted(rows, key=order) if order else rows
    shown = rows if show_all else rows[:ROWS_SHOWN]
    more = len(rows) - len(shown)
    text = f"{title} ({len(rows)})\n" + render_table(shown, columns, tty=tty, width=width)
    if more:
        text += f"  ... {more} more (--all, or --json)\n"
    return text


def render(data: dict, show_all: bool = False, tty: bool = False, width: int = 80) -> str:
    """The screen: one short table per section, problems first, each within WIDTH columns."""
    bad = [c for c in data["health"] if not c["healthy"]]
    head = (f"berqenas status {data.get('at', '')}: {'healthy' if data['healthy'] else 'UNHEALTHY'} "
            f"({len(data['health']) - len(bad)}/{len(data['health'])} checks ok)")
    parts = [head + "\n"]
    parts.append(_section("TENANTS", data["tenants"], [("name", "tenant"), "state", ("peers", "peers"),
                                                        ("peers_active", "active"), ("exposures", "exposed"),
                                                        ("remotedbs", "remotedbs"), ("hasura_tables", "tables")],
                          show_all, tty, width, order=lambda r: (r["state"] == "present", r["name"])))
    rank = {"stale": 0, "expired": 1, "unknown": 2, "never": 3, "disabled": 5}
    parts.append(_section("VPN PEERS", [dict(p, handshake=_age(p["latest_handshake_age_s"]), rx=_bytes(p["rx_bytes"]),
                                             tx=_bytes(p["tx_bytes"])) for p in data["peers"]],
                          [("name", "peer"), "tenant", ("addresses", "address"), "handshake", "rx", "tx", "state"],
                          show_all, tty, width, order=lambda r: (rank.get(r["state"], 4), r["name"] or "")))
    parts.append(_section("EXPOSURES", data["exposures"], ["tenant", "name", "port", "target", "sources"], show_all,
                          tty, width))
    parts.append(_section("REMOTE DATABASES", data["remotedbs"], ["name", "tenant", "host", "port", "database"],
                          show_all, tty, width))
    parts.append(_section("SYNC", [dict(s, lag=_age(s["lag_s"]), last_run=(s["last_run_at"] or "-")[:19])
                                   for s in data["sync"]],
                          ["remotedb", "source", ("last_run", "last run"), ("last_result", "result"),
                           ("rows_total", "rows"), "lag"], show_all, tty, width,
                          order=lambda r: (r["last_result"] == "ok", -(r["lag_s"] or 0))))
    parts.append(_section("HASURA TABLES", data["hasura_tables"], ["source", "table", "consistent"], show_all, tty,
                          width, order=lambda r: (r["consistent"], r["source"], r["table"])))
    ok = len(data["health"]) - len(bad)
    if bad:
        parts.append(_section(f"HEALTH: {ok} checks ok, unhealthy", [dict(c, detail=(c["detail"] or "")[:40])
                                                                     for c in bad],
                              ["kind", "name", "status", "detail"], show_all, tty, width))
    else:
        parts.append(f"HEALTH: all {ok} checks ok\n")
    return "\n".join(p for p in parts if p)


@click.command(name="status")
@click.option("--watch", type=float, metavar="SECONDS", callback=rule(validation.seconds, "watch interval", 0.5, 86400),
              help="Redraw every SECONDS until interrupted (with --json: one document per line each time).")
@click.option("--all", "show_all", is_flag=True, help=f"Every row of each section (the screen shows {ROWS_SHOWN}).")
@click.option("--check-timeout", type=float, default=5.0, show_default=True,
              callback=rule(validation.seconds, "check timeout", 0.1, 3600),
              help="Seconds the database and Hasura may take to answer.")
@json_option
@pass_app
def group(app: App, watch, show_all, check_timeout):
    """The platform at a glance: tenants, VPN peers, exposures, sync, Hasura tables, health verdicts (read-only)."""
    import json

    tty = sys.stdout.isatty()
    while True:
        try:
            data = only_visible(app, gather(app, check_timeout))
        except OSError as exc:
            raise CommandError(f"status: {exc}") from None
        if app.json:
            click.echo(json.dumps(data, sort_keys=True, default=str, indent=None if watch else 2))
        else:
            width = min(shutil.get_terminal_size().columns, 200) if tty else 80
            if watch and tty:
                click.clear()
            click.echo(render(data, show_all, tty, width), nl=False)
        if not watch:
            return
        sys.stdout.flush()
        time.sleep(watch)

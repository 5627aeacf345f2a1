"""`berqenas status`: assembling what was read into sections and verdicts, the 80-column screen, tenant keys."""

import types

import pytest
from berqenas_orchestrator.apikeys import parse_scope
from berqenas_orchestrator.cli import status as S

pytestmark = pytest.mark.unit


def _read(n_tenants=100, n_peers=1000, stale=()):
    """Desired state, a database answer and a WireGuard reading of N tenants and peers (peers of stale names
    shook hands 1,000 s ago, the others 10 s ago, peer 7 never)."""
    tenants = [{"name": "t%03d" % i, "state": "present"} for i in range(n_tenants)]
    peers = [{"name": "p%04d" % i, "tenant": "t%03d" % (i % n_tenants)} for i in range(n_peers)]
    d = {"tenants": tenants, "peers": peers,
         "exposures": [{"tenant": "t000", "name": "db", "port": 5432, "target": "127.0.0.1:5432",
                        "sources": ["198.51.100.2"]}],
         "remotedbs": [{"name": "erp", "tenant": "t001", "host": "192.0.2.10", "port": 1433, "database": "erp"}],
         "platform": {}, "hasura": {}}
    db = {"ok": True, "version": "15.8", "latency_s": 0.002, "schemas": [t["name"] for t in tenants[1:]],
          "sync": [{"job": "erp", "source_schema": "dbo", "source_table": "Orders", "target_schema": "t001",
                    "target_table": "orders", "last_run_at": "2026-12-02T20:00:00+00:00", "last_result": "ok",
                    "last_ok_at": "2026-12-02T20:00:00+00:00", "rows_total": 42, "lag_s": 7200.0}]}
    wg_peers = []
    for i, p in enumerate(peers):
        age = None if i == 7 else (1000 if p["name"] in stale else 10)
        wg_peers.append({"name": p["name"], "tenant": p["tenant"], "addresses": ["198.51.100.%d/32" % (i % 250 + 2)],
                         "latest_handshake_age_s": age, "rx_bytes": 1536 * i, "tx_bytes": 10, "endpoint": None,
                         "state": "never" if age is None else ("stale" if age > 180 else "active"),
                         "enabled": True, "expired": False, "live": True})
    wg = {"interface": "wg0", "running": True, "dump": {"listen_port": 51820}, "peers": wg_peers}
    return d, db, wg


def test_sections_and_verdicts_from_what_was_read():
    d, db, wg = _read(stale=("p0003",))
    data = S.assemble(d, db, wg, [], None)
    t0, t1 = data["tenants"][0], data["tenants"][1]
    assert t0 == {"name": "t000", "state": "missing", "peers": 10, "peers_active": 10, "exposures": 1,
                  "remotedbs": 0, "hasura_tables": 0}
    assert t1["state"] == "present" and t1["remotedbs"] == 1 and t1["peers_active"] == 10
    assert data["tenants"][3]["peers_active"] == 9 and data["tenants"][7]["peers_active"] == 9  # stale; never
    p3 = next(p for p in data["peers"] if p["name"] == "p0003")
    assert p3["state"] == "stale" and p3["latest_handshake_age_s"] == 1000 and p3["addresses"] == ["198.51.100.5/32"]
    bad = [(c["kind"], c["name"], c["status"]) for c in data["health"] if not c["healthy"]]
    assert bad == [("sync", "erp/dbo.Orders", "lagging"), ("wireguard", "wg0/peer/p0003", "stale")]
    assert data["healthy"] is False
    assert data["sync"] == [{"remotedb": "erp", "source": "dbo.Orders", "target": "t001.orders",
                             "last_run_at": "2026-12-02T20:00:00+00:00", "last_result": "ok", "rows_total": 42,
                             "lag_s": 7200.0}]


def test_the_screen_fits_80_columns_problems_first():
    d, db, wg = _read(stale=("p0999",))
    text = S.render(S.assemble(d, db, wg, [], None), width=80)
    lines = text.splitlines()
    assert max(len(ln) for ln in lines) <= 80
    assert lines[0].startswith("berqenas status") and "UNHEALTHY" in lines[0]
    assert "TENANTS (100)" in text and "VPN PEERS (1000)" in text and "... 995 more" in text
    peers = text.split("VPN PEERS")[1].splitlines()
    assert "p0999" in peers[2] and "stale" in peers[2]  # the stale peer first
    assert "t000" in text.split("TENANTS")[1].splitlines()[2]  # the missing tenant first
    assert "HEALTH: 1001 checks ok, unhealthy (2)" in text and "wg0/peer/p0000" not in text
    assert len(lines) < 60
    everything = S.render(S.assemble(d, db, wg, [], None), show_all=True, width=80)
    assert "p0500" in everything and "more (--all" not in everything


def test_remote_hosts_figures_come_from_the_health_checks():
    d, _, _ = _read(2, 2)
    remote = [{"kind": "wireguard", "host": "hub", "name": "wg0/peer/p0001", "healthy": False, "status": "stale",
               "detail": "latest handshake 900s ago", "since": None,
               "metrics": {"latest_handshake_age_seconds": 900, "rx_bytes": 5, "tx_bytes": 6, "tenant": "t001",
                           "addresses": ["198.51.100.3/32"]}},
              {"kind": "sync", "host": "db", "name": "erp/dbo.Orders", "healthy": True, "status": "ok", "detail": "",
               "since": None, "metrics": {"remotedb": "erp", "source": "dbo.Orders", "target": "t001.orders",
                                          "lag_seconds": 5, "rows_total": 9, "last_run_at": "2026-12-02T20:00:00"}}]
    data = S.assemble(d, None, None, remote, None)
    p1 = next(p for p in data["peers"] if p["name"] == "p0001")
    assert (p1["state"], p1["latest_handshake_age_s"], p1["addresses"]) == ("stale", 900, ["198.51.100.3/32"])
    assert next(p for p in data["peers"] if p["name"] == "p0000")["state"] == "unknown"
    assert data["sync"][0]["rows_total"] == 9 and data["sync"][0]["lag_s"] == 5
    assert [c["name"] for c in data["health"] if not c["healthy"]] == ["wg0/peer/p0001"]


def test_hasura_errors_and_inconsistent_metadata_are_verdicts():
    d, db, wg = _read(2, 2)
    down = S.assemble(d, db, wg, [], {"url": "http://127.0.0.1:1", "ok": False, "error": "did not answer",
                                      "sources": []})
    h = next(c for c in down["health"] if c["kind"] == "hasura")
    assert (h["healthy"], h["status"], h["detail"]) == (False, "error", "did not answer")
    incons = S.assemble(d, db, wg, [], {"url": "u", "ok": True, "version": "v2", "health": {"ok": True},
                                        "inconsistent_objects": [{"type": "table"}],
                                        "sources": [{"name": "t001", "tables": {"orders": {"consistent": False}}}]})
    h = next(c for c in incons["health"] if c["kind"] == "hasura")
    assert (h["healthy"], h["status"]) == (False, "inconsistent")
    assert incons["hasura_tables"] == [{"source": "t001", "table": "orders", "consistent": False, "roles": []}]
    assert incons["tenants"][1]["hasura_tables"] == 1


def test_a_tenant_key_sees_its_own_rows_only():
    d, db, wg = _read(3, 9, stale=("p0000", "p0001"))
    data = S.assemble(d, db, wg, [], None)
    app = types.SimpleNamespace(scope=parse_scope("tenant:t001"))
    mine = S.only_visible(app, data)
    assert [t["name"] for t in mine["tenants"]] == ["t001"]
    assert {p["tenant"] for p in mine["peers"]} == {"t001"} and len(mine["peers"]) == 3
    assert mine["exposures"] == [] and [r["name"] for r in mine["remotedbs"]] == ["erp"]
    names = {c["name"] for c in mine["health"]}
    assert "wg0/peer/p0000" not in names and "wg0/peer/p0001" in names and "erp/dbo.Orders" in names
    assert not any(c["kind"] in ("postgres", "hasura") or c["name"] == "wg0" for c in mine["health"])
    admin = S.only_visible(types.SimpleNamespace(scope=parse_scope("admin")), data)
    assert admin is data


def test_yaml_inventory_hosts_without_ansible_inventory_manager(tmp_path):
    (tmp_path / "hosts.yml").write_text(
        "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n    hub: {}\n"
        "  children:\n    berqenas_db:\n      hosts:\n        localhost: {}\n"
        "    wireguard:\n      vars: {ansible_connection: community.docker.nsenter}\n      hosts:\n        hub: {}\n"
        "    edge:\n      vars: {ansible_connection: local}\n      children:\n        wireguard: {}\n")
    assert S._yaml_inventory_hosts(tmp_path, "berqenas_db") == [("localhost", True)]
    assert S._yaml_inventory_hosts(tmp_path, "wireguard") == [("hub", False)]
    assert S._yaml_inventory_hosts(tmp_path, "berqenas_gateway") == []
    ini = tmp_path / "inventory.ini"
    ini.write_text("[berqenas_db]\nlocalhost ansible_connection=local\n")
    assert S._yaml_inventory_hosts(ini, "berqenas_db") is None  # another kind: InventoryManager's

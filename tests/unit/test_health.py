"""module_utils/health.py and the Prometheus file of `berqenas health`: concurrency, timeouts, drift, verdicts."""

import threading
import time

import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import gateway as G
from ansible_collections.berqenas.platform.plugins.module_utils import health as H
from berqenas_orchestrator.cli import health as cli_health
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.unit


def test_a_probe_past_its_timeout_is_abandoned_and_the_others_report():
    release = threading.Event()

    def dead():
        release.wait(30)
        return H.result("remotedb", "dead", True)

    probes = [H.Probe("remotedb", "dead", dead, 0.5)] + [
        H.Probe("postgres", "tenant/t%d" % i, lambda i=i: H.result("postgres", "tenant/t%d" % i, True), 5)
        for i in range(20)]
    t0 = time.monotonic()
    out = H.run_probes(probes, workers=4)
    took = time.monotonic() - t0
    release.set()
    assert took < 5, took
    assert [r["name"] for r in out] == ["dead"] + ["tenant/t%d" % i for i in range(20)]
    assert out[0]["status"] == "timeout" and not out[0]["healthy"]
    assert all(r["healthy"] for r in out[1:])


def test_probes_run_concurrently_at_most_workers_at_a_time():
    lock = threading.Lock()
    now = {"running": 0, "max": 0}

    def slow():
        with lock:
            now["running"] += 1
            now["max"] = max(now["max"], now["running"])
        time.sleep(0.2)
        with lock:
            now["running"] -= 1
        return H.result("sync", "x", True)

    t0 = time.monotonic()
    H.run_probes([H.Probe("sync", "x", slow, 10) for _ in range(8)], workers=4)
    assert now["max"] == 4 and time.monotonic() - t0 < 1.5


def test_a_probe_that_raises_is_an_error_result():
    def boom():
        raise OSError("connection refused")

    (r,) = H.run_probes([H.Probe("postgres", "server", boom, 1)])
    assert r["status"] == "error" and "connection refused" in r["detail"] and not r["healthy"]


def test_since_is_kept_from_the_first_unhealthy_run_and_cleared_when_healthy():
    bad = [H.result("postgres", "server", False, "error")]
    first = H.apply_since(bad, {}, 1_000_000)
    assert bad[0]["since"] == "1970-01-12T13:46:40Z"
    again = [H.result("postgres", "server", False, "error")]
    assert H.apply_since(again, first, 2_000_000) == first and again[0]["since"] == bad[0]["since"]
    ok = [H.result("postgres", "server", True)]
    assert H.apply_since(ok, first, 3_000_000) == {} and ok[0]["since"] is None


def _plan():
    return G.build_plan({"exposures": [{"tenant": "acme", "service": "postgres"}],
                         "vpn_peers": [{"name": "p1", "tenant": "acme", "addresses": ["198.51.100.2"]}],
                         "wireguard": {"port": 51820}})


def test_gateway_drift_from_the_rendered_rules():
    rules = H.rendered_chain_rules(_plan()["before_rules"])
    live = {chain: ["-N %s" % chain] + list(expected) for (table, chain), expected in rules.items()}
    chains = [(t, c, e, 0, live[c], "ipv4") for (t, c), e in rules.items()]
    assert all(r["healthy"] for r in H.gateway_results("Status: active\nDefault: deny (incoming), allow "
                                                       "(outgoing), deny (routed)\n", chains))
    # a rule removed by hand, one added by hand, a chain gone
    inp = [ln for ln in live["BQ-INPUT"] if "bq:acme:db" not in ln] + ["-A BQ-INPUT -p tcp -m tcp --dport 9 -j ACCEPT"]
    chains = [(t, c, e, 1 if c == "BQ-FORWARD" else 0, inp if c == "BQ-INPUT" else live[c], "ipv4")
              for (t, c), e in rules.items()]
    res = {r["name"]: r for r in H.gateway_results("Status: inactive\n", chains)}
    assert res["ufw"]["status"] == "inactive"
    assert res["ipv4/filter/BQ-INPUT"]["status"] == "drift"
    assert res["ipv4/filter/BQ-INPUT"]["metrics"] == {"missing_rules": 1, "extra_rules": 1}
    assert res["ipv4/filter/BQ-FORWARD"]["status"] == "missing"
    assert res["ipv4/nat/BQ-PREROUTING"]["healthy"]


def test_wireguard_verdicts():
    status = [
        {"name": "a", "tenant": "acme", "state": "active", "latest_handshake_age_s": 5, "live": True},
        {"name": "s", "tenant": "acme", "state": "stale", "latest_handshake_age_s": 600, "live": True},
        {"name": "n", "tenant": "acme", "state": "never", "latest_handshake_age_s": None, "live": True},
        {"name": "e", "tenant": "acme", "state": "expired", "expires": "2026-01-01T00:00:00Z", "live": True},
        {"name": "g", "tenant": "acme", "state": "expired", "expires": "2026-01-01T00:00:00Z", "live": False},
        {"name": "d", "tenant": "acme", "state": "disabled", "live": False},
    ]
    res = {r["name"]: r for r in H.wireguard_results("wg0", True, 51820, {"listen_port": 51820}, status,
                                                     1_000_000, 180)}
    assert set(res) == {"wg0", "wg0/peer/a", "wg0/peer/s", "wg0/peer/n", "wg0/peer/e"}
    assert res["wg0"]["healthy"] and res["wg0/peer/a"]["healthy"] and res["wg0/peer/n"]["healthy"]
    assert res["wg0/peer/s"]["status"] == "stale" and res["wg0/peer/s"]["since"] == "1970-01-12T13:36:40Z"
    assert res["wg0/peer/e"]["status"] == "expired"
    wrong = H.wireguard_results("wg0", True, 51820, {"listen_port": 51821}, [], 0, 180)
    assert not wrong[0]["healthy"] and "51821" in wrong[0]["detail"]
    assert H.wireguard_results("wg0", False, 0, None, [], 0, 180)[0]["status"] == "down"


def test_sync_verdicts():
    base = {"job": "erp", "source_schema": "dbo", "source_table": "Orders", "target_schema": "acme",
            "target_table": "Orders", "rows_total": 7, "last_ok_at": "2026-12-01T00:00:00+00:00"}
    res = H.sync_results([dict(base, last_result="ok", lag_s=10), dict(base, source_table="B", last_result="ok",
                                                                       lag_s=7200),
                          dict(base, source_table="C", last_result="error", last_error="boom\nmore", lag_s=5)],
                         3600)
    assert [r["status"] for r in res] == ["ok", "lagging", "failed"]
    assert res[2]["detail"] == "last run error: boom"


def test_sqlserver_error_number_through_the_sync_error():
    class OperationalError(Exception):
        pass

    try:
        try:
            raise OperationalError(18456, b"Login failed for user 'sa'.")
        except OperationalError:
            raise ValueError("connect to SQL Server x: login failed")  # noqa: B904 (as mssql_sync raises)
    except ValueError as e:
        assert H.sqlserver_error_number(e) == 18456


def test_a_remote_database_without_a_password_is_reported_not_tried():
    def ping(source):
        raise AssertionError("no login may be tried without a password")

    r = H.remotedb_check("erp", "acme", None, ping)
    assert (r["healthy"], r["status"], r["metrics"]) == (False, "no_password", {"tenant": "acme"})
    assert "password_file" in r["detail"]


def _checks(n):
    return [{"kind": "wireguard", "host": "hub", "name": "wg0/peer/p%d" % i, "healthy": i % 2 == 0,
             "status": "ok" if i % 2 == 0 else "stale", "since": None if i % 2 == 0 else "2026-12-02T10:00:00Z",
             "duration_s": 0.01, "metrics": {"latest_handshake_age_seconds": i, "rx_bytes": i, "tx_bytes": 2 * i,
                                             "tenant": "acme"}} for i in range(n)]


def test_prometheus_file_parses_with_conventional_names(tmp_path):
    path = tmp_path / "berqenas.prom"
    cli_health.write_prometheus(str(path), _checks(4), now=1_700_000_000)
    fams = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    assert all(n.startswith("berqenas_") for n in fams)
    assert fams["berqenas_wireguard_peer_receive_bytes"].type == "counter"
    assert {s.name for s in fams["berqenas_wireguard_peer_receive_bytes"].samples} == {
        "berqenas_wireguard_peer_receive_bytes_total"}
    ages = {s.labels["peer"]: s.value for s in fams["berqenas_wireguard_peer_latest_handshake_age_seconds"].samples}
    assert ages == {"p0": 0, "p1": 1, "p2": 2, "p3": 3}
    assert fams["berqenas_health_checks_unhealthy"].samples[0].value == 2
    since = fams["berqenas_health_check_unhealthy_since_timestamp_seconds"].samples
    assert {s.labels["check"] for s in since} == {"wg0/peer/p1", "wg0/peer/p3"}
    assert fams["berqenas_health_last_run_timestamp_seconds"].samples[0].value == 1_700_000_000


def test_a_host_address_rendered_without_prefix_matches_iptables_listing():
    """iptables -S lists `-d 203.0.113.2` as `-d 203.0.113.2/32` (found on the gateway machine): not drift."""
    block = ("*filter\n:BQ-FORWARD - [0:0]\n-A BQ-FORWARD -s 198.51.100.3/32 -d 203.0.113.2 -p tcp -m tcp --dport 8080 "
             "-m conntrack --ctstate DNAT -m comment --comment \"bq:globex:web\" -j ACCEPT\n"
             "-A BQ-FORWARD -d fd00:b::2 -j ACCEPT\nCOMMIT\n")
    expected = H.rendered_chain_rules(block)[("filter", "BQ-FORWARD")]
    live = ["-N BQ-FORWARD",
            "-A BQ-FORWARD -s 198.51.100.3/32 -d 203.0.113.2/32 -p tcp -m tcp --dport 8080 -m conntrack --ctstate DNAT "
            "-m comment --comment bq:globex:web -j ACCEPT",
            "-A BQ-FORWARD -d fd00:b::2/128 -j ACCEPT"]
    assert H.chain_drift(expected, live, "BQ-FORWARD") == ([], [])
    missing, extra = H.chain_drift(expected, live[:2], "BQ-FORWARD")
    assert missing == ["-A BQ-FORWARD -d fd00:b::2/128 -j ACCEPT"] and extra == []

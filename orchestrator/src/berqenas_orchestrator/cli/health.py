"""berqenas health: every component's checks (playbooks/health_check.yml), as a table, JSON or Prometheus metrics.

Exit code 0 when every check is healthy, 1 when one is not (the report says what, where and since when).
``--prometheus FILE`` writes node_exporter's textfile format with prometheus-client (``write_to_textfile``:
a temporary file in the same directory, then a rename, so the collector reads the old file or the new one).
"""

from __future__ import annotations

import sys
import time

import click

from ..app import App, CommandError, json_option, pass_app
from ..validate import rule, validation

KINDS = ("wireguard", "gateway", "postgres", "remotedb", "sync", "hasura")


def gather(app: App, kinds=KINDS, timeout: float = 10.0, pending: bool = False) -> list[dict]:
    """Run health_check.yml; every check as a dict with its host."""
    app.require_inventory()
    extravars = {"berqenas_health_kinds": list(kinds), "berqenas_health_timeout": float(timeout)}
    if pending:
        extravars["berqenas_health_sync_pending"] = True
    if app.is_local:
        extravars["berqenas_health_state_dir"] = str(app.home / "health")
    result = app.run_or_fail("health_check.yml", extravars, quiet=True)
    checks = []
    for host, plays in sorted((result.answer.get("hosts") or {}).items()):
        for play in ("wireguard", "gateway", "database"):
            for c in plays.get(play) or []:
                checks.append(dict(c, host=host))
    return checks


def rows(checks: list[dict]) -> list[dict]:
    """What, where, since when: one row per check, unhealthy first."""
    return [{"kind": c["kind"], "where": f"{c['host']}:{c['name']}", "status": c["status"],
             "since": c.get("since"), "detail": c.get("detail") or ""}
            for c in sorted(checks, key=lambda c: (c["healthy"], c["kind"], c["host"], c["name"]))]


class HealthCollector:
    """The checks as Prometheus metric families (prometheus-client's custom collector interface)."""

    def __init__(self, checks: list[dict], now: float | None = None):
        self.checks = checks
        self.now = now if now is not None else time.time()

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        up = GaugeMetricFamily("berqenas_health_check_healthy", "1 when the check is healthy, else 0.",
                               labels=["kind", "host", "check", "status"])
        dur = GaugeMetricFamily("berqenas_health_check_duration_seconds", "Seconds the check's probe took.",
                                labels=["kind", "host", "check"])
        since = GaugeMetricFamily("berqenas_health_check_unhealthy_since_timestamp_seconds",
                                  "Unix time since when the check has been unhealthy.",
                                  labels=["kind", "host", "check"])
        hs = GaugeMetricFamily("berqenas_wireguard_peer_latest_handshake_age_seconds",
                               "Seconds since the peer's latest handshake.", labels=["host", "peer", "tenant"])
        rx = CounterMetricFamily("berqenas_wireguard_peer_receive_bytes", "Bytes received from the peer.",
                                 labels=["host", "peer", "tenant"])
        tx = CounterMetricFamily("berqenas_wireguard_peer_transmit_bytes", "Bytes sent to the peer.",
                                 labels=["host", "peer", "tenant"])
        lat = GaugeMetricFamily("berqenas_remotedb_latency_seconds", "Round trip of one query after login.",
                                labels=["host", "remotedb", "tenant"])
        login = GaugeMetricFamily("berqenas_remotedb_login_seconds", "Seconds the login took.",
                                  labels=["host", "remotedb", "tenant"])
        lag = GaugeMetricFamily("berqenas_sync_lag_seconds", "Seconds since the table's last successful sync.",
                                labels=["host", "remotedb", "source", "target"])
        rows = CounterMetricFamily("berqenas_sync_rows", "Rows the sync has written into the table.",
                                   labels=["host", "remotedb", "source", "target"])
        pend = GaugeMetricFamily("berqenas_sync_pending_rows", "Rows changed on the source since the last sync "
                                 "(with --pending).", labels=["host", "remotedb", "source", "target"])
        unhealthy = GaugeMetricFamily("berqenas_health_checks_unhealthy", "Number of unhealthy checks.")
        last = GaugeMetricFamily("berqenas_health_last_run_timestamp_seconds", "Unix time of this report.")
        from datetime import datetime

        for c in self.checks:
            key = [c["kind"], c["host"], c["name"]]
            up.add_metric([*key, c["status"]], 1.0 if c["healthy"] else 0.0)
            dur.add_metric(key, float(c.get("duration_s") or 0.0))
            if c.get("since"):
                try:
                    since.add_metric(key, datetime.fromisoformat(c["since"].replace("Z", "+00:00")).timestamp())
                except ValueError:
                    pass
            m = c.get("metrics") or {}
            if c["kind"] == "wireguard" and "/peer/" in c["name"]:
                lab = [c["host"], c["name"].split("/peer/", 1)[1], m.get("tenant") or ""]
                if m.get("latest_handshake_age_seconds") is not None:
                    hs.add_metric(lab, float(m["latest_handshake_age_seconds"]))
                rx.add_metric(lab, float(m.get("rx_bytes") or 0))
                tx.add_metric(lab, float(m.get("tx_bytes") or 0))
            elif c["kind"] == "remotedb" and "latency_seconds" in m:
                lab = [c["host"], c["name"], m.get("tenant") or ""]
                lat.add_metric(lab, float(m["latency_seconds"]))
                login.add_metric(lab, float(m["login_seconds"]))
            elif c["kind"] == "sync":
                lab = [c["host"], m.get("remotedb") or "", m.get("source") or "", m.get("target") or ""]
                if m.get("lag_seconds") is not None:
                    lag.add_metric(lab, float(m["lag_seconds"]))
                rows.add_metric(lab, float(m.get("rows_total") or 0))
                if m.get("pending_rows") is not None:
                    pend.add_metric(lab, float(m["pending_rows"]))
        unhealthy.add_metric([], float(sum(1 for c in self.checks if not c["healthy"])))
        last.add_metric([], self.now)
        yield from (up, dur, since, hs, rx, tx, lat, login, lag, rows, pend, unhealthy, last)


def write_prometheus(path: str, checks: list[dict], now: float | None = None) -> None:
    """node_exporter textfile format, written atomically (prometheus-client's temp file + rename)."""
    from prometheus_client import CollectorRegistry, write_to_textfile

    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(checks, now))
    write_to_textfile(path, registry)


@click.command(name="health")
@click.option("--prometheus", "prometheus_file", type=click.Path(dir_okay=False, writable=True),
              help="Also write the checks as Prometheus metrics to FILE (node_exporter textfile collector).")
@click.option("--only", "only", type=click.Choice(KINDS), multiple=True,
              help="Only checks of this kind (repeatable).")
@click.option("--check-timeout", type=float, default=10.0, show_default=True,
              callback=rule(validation.seconds, "check timeout", 0.1, 3600),
              help="Seconds each probe may take before it is reported as timed out.")
@click.option("--pending", is_flag=True,
              help="Also count each synced table's rows pending on its source (one login per remote database).")
@json_option
@pass_app
def group(app: App, prometheus_file, only, check_timeout, pending):
    """Check every component; exit 0 when all are healthy, 1 when one is not."""
    kinds = tuple(only) or KINDS
    checks = gather(app, kinds, check_timeout, pending)
    if prometheus_file:
        try:
            write_prometheus(prometheus_file, checks)
        except OSError as exc:
            raise CommandError(f"write {prometheus_file}: {exc.strerror or exc}") from None
    healthy = all(c["healthy"] for c in checks)
    app.output_rows(rows(checks), [("kind", "KIND"), ("where", "WHERE"), ("status", "STATUS"), ("since", "SINCE"),
                                   ("detail", "DETAIL")], empty="no checks ran",
                    obj={"healthy": healthy, "checks": checks})
    if not healthy:
        bad = [c for c in checks if not c["healthy"]]
        app.progress(f"unhealthy: {len(bad)} of {len(checks)} checks")
        sys.exit(1)  # the report is on stdout already: no error object after it

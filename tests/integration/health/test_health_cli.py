"""`berqenas health` against real components, each failure made for real: a platform database of its own
(a throwaway cluster, stopped at the end), the TDS emulator refusing logins and answering too slowly."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import pg as support_pg
from tests.support.cli import Cli
from tests.support.env import VENV_BIN

pytestmark = [pytest.mark.health, pytest.mark.cli]


@pytest.fixture(scope="module")
def erp_db(tds_emulator, pg_cluster):
    """One emulator database for the module: the inventory's remote database `erp` points at it."""
    from tests.support.fixtures_tds import _emulated_server

    server = _emulated_server(tds_emulator, pg_cluster)
    db = server.new_database()
    yield db
    server.drop_database(db)


@pytest.fixture(scope="module")
def platform(tmp_path_factory, ansible_env, erp_db):
    """An operator inventory on a cluster of this module's own (it is stopped by a test), tenant acme, and
    remote database erp (the emulator) whose table dbo.Orders is synced once."""
    cluster = support_pg.TestCluster()
    root = tmp_path_factory.mktemp("health")
    inv = root / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(
        "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n      ansible_python_interpreter: %s\n"
        "  children:\n    berqenas_db:\n      hosts:\n        localhost: {}\n" % sys.executable)
    (inv / "group_vars" / "all" / "platform.yml").write_text(json.dumps({
        "berqenas_db_socket": cluster.host, "berqenas_db_host": "", "berqenas_db_port": cluster.port,
        "berqenas_db_user": cluster.superuser, "berqenas_db_name": "berqenas",
        "berqenas_credentials_dir": str(root / "credentials"), "berqenas_backup_dir": str(root / "backups"),
        "berqenas_health_state_dir": str(root / "health")}))
    home = root / "home"
    home.mkdir(mode=0o700)
    cli = Cli(ansible_env, str(home))

    def run(*a, **kw):
        return cli("-i", str(inv), *a, **kw)

    run.cli, run.inventory = cli, inv
    run("tenant", "create", "acme", "--json")
    db = erp_db
    db.execute("CREATE TABLE dbo.Orders (id int NOT NULL PRIMARY KEY, rv rowversion)")
    db.execute("INSERT INTO dbo.Orders (id) VALUES (1), (2), (3)")
    p = db.params()
    pw = root / "pw"
    pw.write_text(p["password"])
    run("remotedb", "add", "erp", "--tenant", "acme", "--host", p["server"], "--port", str(p["port"]),
        "--user", p["user"], "--password-file", str(pw), "--database", p["database"], "--table", "dbo.Orders",
        "--json")
    pw.unlink()
    assert run("sync", "run", "erp", "--json").json["status"] == "ok"
    yield run, cluster, root
    cluster.stop()


def health(run, *args):
    r = run("health", "--json", *args, check=False)
    assert r.rc in (0, 1), (r.rc, r.stdout, r.stderr)
    data = r.json
    assert data["healthy"] == (r.rc == 0)
    return r.rc, {(c["kind"], c["name"]): c for c in data["checks"]}


def test_healthy_platform_reports_every_check_healthy_and_metrics(platform, erp_db, tmp_path):
    run, cluster, root = platform
    p = erp_db.params()
    prom = tmp_path / "metrics" / "berqenas.prom"
    prom.parent.mkdir()
    rc, checks = health(run, "--prometheus", str(prom))
    assert rc == 0, checks
    assert set(checks) == {("postgres", "server"), ("postgres", "pg_hba"), ("postgres", "tenant/acme"),
                           ("remotedb", "erp"), ("sync", "erp/dbo.Orders")}
    assert all(c["healthy"] and c["status"] == "ok" and c["since"] is None for c in checks.values())
    assert "acme_app logs in, sees only acme" in checks[("postgres", "tenant/acme")]["detail"]
    assert checks[("sync", "erp/dbo.Orders")]["metrics"]["rows_total"] == 3
    assert p["password"] not in prom.read_text()

    families = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    healthy = {s.labels["check"]: s.value for s in families["berqenas_health_check_healthy"].samples}
    assert healthy == {"server": 1.0, "pg_hba": 1.0, "tenant/acme": 1.0, "erp": 1.0, "erp/dbo.Orders": 1.0}
    assert families["berqenas_health_checks_unhealthy"].samples[0].value == 0
    lat = families["berqenas_remotedb_latency_seconds"].samples
    assert lat[0].labels == {"host": "localhost", "remotedb": "erp", "tenant": "acme"} and lat[0].value > 0
    assert families["berqenas_sync_rows"].type == "counter"
    assert [s.value for s in families["berqenas_sync_rows"].samples if s.name == "berqenas_sync_rows_total"] == [3]

    # the text report: one row per check
    r = run("health", check=False)
    assert r.rc == 0 and "localhost:tenant/acme" in r.stdout and r.stdout.splitlines()[0].split()[:3] == [
        "KIND", "WHERE", "STATUS"]

    # --only: just that kind
    rc, only = health(run, "--only", "remotedb")
    assert rc == 0 and set(only) == {("remotedb", "erp")}


def test_refused_login_reports_the_sql_server_error_number(platform, erp_db):
    run, cluster, root = platform
    db = erp_db
    db.faults.refuse_logins = True
    try:
        rc, checks = health(run, "--only", "remotedb")
    finally:
        db.faults.reset()
    c = checks[("remotedb", "erp")]
    assert rc == 1 and not c["healthy"] and c["status"] == "login_failed", c
    assert c["metrics"]["error_number"] == 18456 and c["since"]
    assert db.params()["password"] not in json.dumps(list(checks.values()))


def test_slow_remote_database_times_out_without_stalling_the_report(platform, erp_db):
    run, cluster, root = platform
    db = erp_db
    db.faults.packet_delay = 20  # every packet after the login
    t0 = time.monotonic()
    try:
        rc, checks = health(run, "--check-timeout", "2")
    finally:
        db.faults.reset()
    took = time.monotonic() - t0
    c = checks[("remotedb", "erp")]
    assert rc == 1 and c["status"] == "timeout" and not c["healthy"], c
    assert checks[("postgres", "tenant/acme")]["healthy"] and checks[("postgres", "server")]["healthy"]
    assert took < 20, took  # the 20 s answer was not waited for


def test_pending_rows_are_a_check_mode_count_on_the_source(platform, erp_db, tmp_path):
    """--pending: the rows changed on the source since the last sync, counted (nothing is synced)."""
    run, cluster, root = platform
    erp_db.execute("INSERT INTO dbo.Orders (id) VALUES (4), (5)")
    erp_db.execute("UPDATE dbo.Orders SET id = 30 WHERE id = 3")
    prom = tmp_path / "b.prom"
    rc, checks = health(run, "--only", "sync", "--pending", "--prometheus", str(prom))
    c = checks[("sync", "erp/dbo.Orders")]
    assert rc == 0 and c["metrics"]["pending_rows"] == 3 and "3 pending" in c["detail"], c
    assert c["metrics"]["rows_total"] == 3  # counted, not synced
    fams = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    assert [s.value for s in fams["berqenas_sync_pending_rows"].samples] == [3]
    rc, checks = health(run, "--only", "sync")
    assert "pending_rows" not in checks[("sync", "erp/dbo.Orders")]["metrics"]  # only when asked


def test_status_shows_the_platform_on_one_80_column_screen(platform, erp_db):
    """`berqenas status` reads the local platform directly (no playbook): tenants, remote databases, sync rows
    and lag, the verdicts; the text fits 80 columns, --json carries the same data."""
    run, cluster, root = platform
    r = run("status", "--json")
    data = r.json
    assert data["read_from"] == {"database": "local", "wireguard": "none"}
    assert data["tenants"] == [{"name": "acme", "state": "present", "peers": 0, "peers_active": 0, "exposures": 0,
                                "remotedbs": 1, "hasura_tables": 0}]
    assert [(d["name"], d["tenant"]) for d in data["remotedbs"]] == [("erp", "acme")]
    (s,) = data["sync"]
    assert (s["remotedb"], s["source"], s["last_result"], s["rows_total"]) == ("erp", "dbo.Orders", "ok", 3)
    assert s["lag_s"] is not None and s["lag_s"] >= 0 and s["last_run_at"]
    verdicts = {(c["kind"], c["name"]): c for c in data["health"]}
    assert verdicts[("postgres", "server")]["healthy"] and verdicts[("sync", "erp/dbo.Orders")]["healthy"]
    assert data["healthy"] is True
    assert erp_db.params()["password"] not in r.stdout
    text = run("status").stdout
    assert text.startswith("berqenas status ") and "healthy" in text.splitlines()[0]
    for section in ("TENANTS (1)", "REMOTE DATABASES (1)", "SYNC (1)", "HEALTH: all 2 checks ok"):
        assert section in text, text
    assert "acme" in text and "dbo.Orders" in text
    assert max(len(line) for line in text.splitlines()) <= 80, text


def test_status_watch_redraws_until_interrupted(platform):
    """--watch with --json: one document per line each interval; Ctrl-C (SIGINT) ends it with exit code 130."""
    run, cluster, root = platform
    p = subprocess.Popen([os.path.join(VENV_BIN, "berqenas"), "-i", str(run.inventory), "status", "--json",
                          "--watch", "0.5"], env=run.cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd="/")
    try:
        docs = [json.loads(p.stdout.readline()) for _ in range(2)]
    finally:
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    assert [d["tenants"][0]["name"] for d in docs] == ["acme", "acme"] and docs[0]["at"] <= docs[1]["at"]
    assert p.returncode == 130, err


def test_status_reports_a_missing_tenant_schema(platform):
    """A tenant whose schema is gone from the database shows as missing (desired state against the catalog)."""
    run, cluster, root = platform
    superuser = cluster.connect("berqenas")
    try:
        superuser.execute("ALTER SCHEMA acme RENAME TO acme_moved")
        data = run("status", "--json").json
        assert data["tenants"][0]["state"] == "missing", data["tenants"]
    finally:
        superuser.execute("ALTER SCHEMA acme_moved RENAME TO acme")
        superuser.close()


def test_zz_stopped_postgres_is_reported_down(platform):
    run, cluster, root = platform
    cluster.cluster.stop()
    rc, checks = health(run, "--only", "postgres", "--only", "sync")
    assert rc == 1
    server = checks[("postgres", "server")]
    assert not server["healthy"] and server["status"] == "error" and "connect" in server["detail"].lower(), server
    assert checks[("postgres", "tenant/acme")]["status"] == "login_failed"
    assert checks[("sync", "state")]["status"] == "error"
    first = server["since"]
    # the since of a check that cannot tell it is when it was first seen unhealthy, kept across runs
    assert os.path.exists(root / "health" / "database.json")
    time.sleep(1.1)
    rc, again = health(run, "--only", "postgres")
    assert rc == 1 and again[("postgres", "server")]["since"] == first
    # status stays a report: the database's verdict says it is down, the desired state still shows
    r = run("status", "--json")
    data = r.json
    server = next(c for c in data["health"] if (c["kind"], c["name"]) == ("postgres", "server"))
    assert r.rc == 0 and not data["healthy"] and server["status"] == "error", data["health"]
    assert [t["name"] for t in data["tenants"]] == ["acme"] and data["sync"] == []

"""Role sync_schedule on an nspawn machine (the runner host): the timer fires and the service runs the sync the
way the CLI does, a run that finds the job locked exits 0 with a 'locked' line, a run killed by TimeoutStartSec
leaves target and watermark as the last committed run left them and the next run resumes, changed=0 on
re-applying (and in check mode). Role health_timer on the same machine, applied by the same playbook from the
second apply on (while a sync run waits to be killed): its timer fires, the service runs `berqenas health
--prometheus FILE` and the file parses with prometheus-client; changed=0 on re-applying.

The machine runs the checkout's own .venv and CLI (bound read-only at the same path). The platform database is
the harness PostgreSQL (its socket directory bound into the machine), the SQL Server source a TDS emulator
process in the machine's network namespace serving the same backing database as the session's emulator (which
the test seeds through)."""

import datetime
import json
import os
import re
import secrets
import subprocess
import time

import psycopg
import pytest
import yaml
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from tests.support import env as support_env
from tests.support.machines import Topology

from .emu import target_rows

pytestmark = pytest.mark.sync

PG_SOCK = "/run/bq-pg"  # the harness PostgreSQL's socket directory inside the machine
HOME = "/var/lib/berqenas"
INV = "/etc/berqenas/inventory"
BERQENAS = os.path.join(support_env.VENV_BIN, "berqenas")
IN_TMP = os.path.realpath(support_env.REPO).startswith(("/tmp/", "/var/tmp/"))
PROM = "/var/lib/prometheus/node-exporter/berqenas.prom"  # the health_timer role's default textfile


def wait_for(what, probe, timeout=120, interval=0.3, detail=lambda: ""):
    """Poll probe() until it returns something truthy; fail naming WHAT (the last value, detail()) after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})\n{detail()}")


class Runner:
    """The booted runner machine with the CLI set up as an operator would: inventory, keys, a remote database."""

    def __init__(self, cluster, node, job, tenant, tmp):
        self.cluster, self.node, self.job, self.tenant, self.tmp = cluster, node, job, tenant, tmp
        self.unit = f"berqenas-sync-{job}"

    def cli(self, *args, check=True, env=()):
        argv = ["env", f"BERQENAS_HOME={HOME}", *env, BERQENAS, *args]
        return self.node.run(argv, check=check, timeout=300)

    def journal_lines(self):
        out = self.node.run(["journalctl", "-u", self.unit + ".service", "-o", "cat", "--no-pager"],
                            check=False).stdout
        return out.splitlines()

    def runs(self):
        return [ln for ln in self.journal_lines() if ln.startswith(f"sync {self.job}: ")]

    def show(self, *props):
        out = self.node.run(["systemctl", "show", self.unit + ".service", "-p", ",".join(props)]).stdout
        return dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln)

    def wait_inactive(self):
        """The journal line comes before the run's process exits: a start before that merges into the run."""
        wait_for(f"{self.unit} to finish", lambda: self.show("ActiveState")["ActiveState"] in ("inactive", "failed"),
                 timeout=120)

    def apply(self, check=False, health=False, **over):
        """The playbook: role sync_schedule with job JOB (+ OVER), then (HEALTH) role health_timer."""
        job = {"name": self.job, "interval": "1h", "first_delay": "1s", "randomized_delay": "0",
               "timeout": "60s", "lock_timeout": 2}
        job.update(over)
        extra = {"sync_schedule_jobs": [job], "sync_schedule_command": BERQENAS, "sync_schedule_home": HOME,
                 "sync_schedule_inventory": INV, "sync_schedule_restart_sec": "1s",
                 "sync_schedule_start_limit_burst": 20,
                 # a checkout under /tmp (a CI clone) holds the venv the unit runs: a private /tmp would hide it
                 "sync_schedule_private_tmp": not IN_TMP,
                 "bq_health": health,
                 # one check 1 s after the timer starts, then hourly (so it runs once in this test)
                 "health_timer_command": BERQENAS, "health_timer_home": HOME, "health_timer_inventory": INV,
                 "health_timer_first_delay": "1s", "health_timer_interval": "1h", "health_timer_check_timeout": 10,
                 "health_timer_private_tmp": not IN_TMP}
        path = os.path.join(self.tmp, "vars.json")
        with open(path, "w") as f:
            json.dump(extra, f)
        return self.cluster.playbook(os.path.join(self.tmp, "apply.yml"), extravars_file=path, check=check,
                                     diff=check)

    def health_show(self):
        out = self.node.run(["systemctl", "show", "berqenas-health.service", "-p",
                             "ActiveState,Result,ExecMainStatus,ExecMainStartTimestampMonotonic"]).stdout
        return dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln)


@pytest.fixture
def runner(machines, pg_cluster, tenant, emulated_mssql_db, tmp_path):
    db = emulated_mssql_db
    tmp = str(tmp_path)
    topo = Topology().machine("runner", groups=["sync_runner"], mask=["postgresql.service"],
                              binds=[(support_env.REPO, True), (pg_cluster.host, False, PG_SOCK)])
    cluster = machines(topo)
    node = cluster["runner"]

    # the source: a TDS emulator in the machine's network namespace, on the session emulator's backing database
    pwfile = os.path.join(tmp, "emu.pw")
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(db.server.password)
    dsn = psycopg.conninfo.make_conninfo(**pg_cluster.conninfo("tds_" + db.name.lower()))
    emu = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{node.ns}", "--", support_env.PYTHON, "-m", "tests.support.tds_emulator",
         "--pg-dsn", dsn, "--port", "0", "--user", db.server.user, "--password-file", pwfile,
         "--database", db.name],
        cwd=support_env.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    cluster._procs.append(emu)
    line = emu.stdout.readline()
    assert line, emu.stderr.read()
    emu_port = json.loads(line)["port"]

    # the operator's inventory on the runner host, as in tests/integration/sync/test_sync_cli.py
    hosts = {"all": {"hosts": {"localhost": {"ansible_connection": "local",
                                             "ansible_python_interpreter": support_env.PYTHON}},
                     "children": {"berqenas_db": {"hosts": {"localhost": {}}}}}}
    node.write_file(f"{INV}/hosts.yml", yaml.safe_dump(hosts))
    node.write_file(f"{INV}/group_vars/all/platform.yml", json.dumps({
        "berqenas_db_socket": PG_SOCK, "berqenas_db_port": pg_cluster.port, "berqenas_db_user": pg_cluster.superuser,
        "berqenas_db_name": tenant.db}))
    node.write_file(f"{INV}/group_vars/all/tenants.yml", json.dumps({"berqenas_tenants": [{"name": tenant.name}]}))
    node.run(["install", "-d", "-m", "0700", HOME])
    node.run(["env", f"BERQENAS_HOME={HOME}", BERQENAS, "apikey", "init", "--save", f"{HOME}/admin.key"])
    job = "sch" + secrets.token_hex(3)
    r = Runner(cluster, node, job, tenant, tmp)
    admin = [f"BERQENAS_API_KEY_FILE={HOME}/admin.key"]
    # the scheduled runs use a key that covers only the tenant
    r.cli("apikey", "create", "--name", "sync", "--scope", f"tenant:{tenant.name}", "--save", f"{HOME}/sync.key",
          env=admin)
    node.write_file("/root/src.pw", db.server.password + "\n", mode=0o600)
    r.cli("-i", INV, "remotedb", "add", job, "--tenant", tenant.name, "--host", "127.0.0.1", "--port",
          str(emu_port), "--user", db.server.user, "--password-file", "/root/src.pw", "--database", db.name,
          "--table", "dbo.Orders", env=admin)
    node.run(["rm", "-f", "/root/src.pw"])
    with open(os.path.join(tmp, "apply.yml"), "w") as f:
        f.write("- name: Schedule the syncs and the health checks\n  hosts: sync_runner\n  gather_facts: false\n"
                "  roles:\n    - berqenas.platform.sync_schedule\n"
                "    - {role: berqenas.platform.health_timer, when: bq_health}\n")
    r.db = db
    return r


def changed_by_role(res):
    """{role: number of its tasks that reported changed} from a playbook's default-callback output."""
    out, task = {}, None
    for ln in res.stdout.splitlines():
        m = re.match(r"TASK \[([\w.]+) : ", ln)
        if m or ln.startswith("TASK ["):
            task = m and m.group(1)
            counted = False
        elif task and ln.startswith("changed: ") and not counted:
            out[task] = out.get(task, 0) + 1
            counted = True
    return out


def watermark(tenant, job):
    with tenant.connect() as c:
        row = c.execute("SELECT hwm FROM berqenas.sync_state WHERE job = %s", (job,)).fetchone()
    return row and bytes(row[0])


def test_schedule_timer_lock_timeout_resume(runner, pg_cluster, tenant):
    db, job = runner.db, runner.job
    db.execute("CREATE TABLE dbo.Orders (id int NOT NULL PRIMARY KEY, note nvarchar(20) NULL, rv rowversion)")
    db.execute("INSERT INTO dbo.Orders (id, note) VALUES (1, N'one'), (2, N'two')")

    # bad input fails before anything is written
    bad = runner.apply(name="Not A Name")
    assert bad.returncode != 0 and "invalid remote database name" in bad.stdout, bad.stdout[-3000:]
    assert runner.node.run(["test", "-e", f"/etc/systemd/system/{runner.unit}.timer"], check=False).returncode == 1

    res = runner.apply()
    assert res.returncode == 0, res.stdout[-4000:]
    assert res.recap()["runner"]["changed"] > 0
    unit_text = runner.node.read_file(f"/etc/systemd/system/{runner.unit}.service")
    for secret in (db.server.password, runner.node.read_file(f"{HOME}/sync.key").strip(),
                   runner.node.read_file(f"{HOME}/vault/pass").strip()):
        assert secret not in unit_text
    assert "BERQENAS_API_KEY_FILE=/var/lib/berqenas/sync.key" in unit_text and "TimeoutStartSec=60s" in unit_text
    assert f"PrivateTmp={'no' if IN_TMP else 'yes'}" in unit_text

    # the timer fires (OnActiveSec=1s): one journal line with the run's counts
    # (a run takes 10-40 s on a loaded 2-core box: TimeoutStartSec 60 s, never 25 s, which killed every attempt)
    first = wait_for("the timer's first run", runner.runs, timeout=240,
                     detail=lambda: "\n".join(runner.journal_lines()[-40:]))
    assert re.fullmatch(rf"sync {job}: ok tables=1 inserted=2 updated=0 deleted=0 changed=true", first[0]), first
    assert target_rows(tenant, "Orders", "id, note") == [(1, "one"), (2, "two")]
    w1 = watermark(tenant, job)
    assert w1
    runner.wait_inactive()

    # a run killed by its timeout: the source table is locked in the emulator's backing database, so the run
    # blocks mid-sync (holding the job's lock) until systemd kills it (and again after each restart, until the
    # table is unlocked)
    db.execute("INSERT INTO dbo.Orders (id, note) VALUES (3, N'three'), (4, N'four')")
    backing = psycopg.connect(**pg_cluster.conninfo("tds_" + db.name.lower()), autocommit=False)
    try:
        (rel,) = backing.execute("SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables "
                                 "WHERE lower(table_name) = 'orders'").fetchone()
        backing.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.SQL(rel)))
        runner.node.run(["systemctl", "start", "--no-block", runner.unit + ".service"])

        def blocked():
            with pg_cluster.connect(backing.info.dbname) as c:
                return c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND wait_event_type = 'Lock'").fetchone()[0]

        wait_for("the run to block on the locked source table", blocked, timeout=60,
                 detail=lambda: "\n".join(runner.journal_lines()[-40:]) + f"\ntable {rel}")

        # meanwhile: re-applying changes nothing of the sync, nor does check mode (and the running sync is left
        # alone); the re-apply adds role health_timer (a read-scoped key is all its checks need), whose service
        # then runs beside the blocked sync (its own re-apply is the last apply's)
        runner.cli("apikey", "create", "--name", "health", "--scope", "read", "--save", f"{HOME}/health.key",
                   env=[f"BERQENAS_API_KEY_FILE={HOME}/admin.key"])
        again = runner.apply(health=True)
        assert again.returncode == 0, again.stdout[-3000:]
        assert set(changed_by_role(again)) == {"berqenas.platform.health_timer"}, again.stdout[-3000:]
        assert f"PrivateTmp={'no' if IN_TMP else 'yes'}" in runner.node.read_file(
            "/etc/systemd/system/berqenas-health.service")
        check = runner.apply(check=True)
        assert check.returncode == 0 and check.recap()["runner"]["changed"] == 0, check.stdout[-3000:]

        # the health timer fired: its service ran to its end (exit 0 all healthy, 1 something unhealthy: both a
        # success of the unit) and wrote the textfile, which prometheus-client's parser reads whole
        def health_ran():
            st = runner.health_show()
            return st.get("ExecMainStartTimestampMonotonic", "0") != "0" and st["ActiveState"] in (
                "inactive", "failed") and st
        st = wait_for("the health timer's run", health_ran, timeout=180, detail=lambda: runner.node.run(
            ["journalctl", "-u", "berqenas-health.service", "-o", "cat", "--no-pager"], check=False).stdout[-3000:])
        assert st["Result"] == "success" and st["ExecMainStatus"] in ("0", "1"), st
        fams = {f.name: f for f in text_string_to_metric_families(runner.node.read_file(PROM))}
        verdicts = {(s.labels["kind"], s.labels["check"]): s.value
                    for s in fams["berqenas_health_check_healthy"].samples}
        assert verdicts[("postgres", "server")] == 1.0, verdicts
        # the job's source answers (its table is locked, not the server) and its table's last success is recent
        assert verdicts[("remotedb", job)] == 1.0, verdicts
        assert [v for (kind, check), v in verdicts.items() if kind == "sync" and check.startswith(job + "/")] == [
            1.0], verdicts
        (last,) = fams["berqenas_health_last_run_timestamp_seconds"].samples
        assert abs(last.value - time.time()) < 600, last
        (bad,) = fams["berqenas_health_checks_unhealthy"].samples
        assert bad.value == sum(1 for v in verdicts.values() if v == 0.0)
        assert (st["ExecMainStatus"] == "0") == (bad.value == 0), (st, verdicts)

        wait_for("systemd to kill the run at TimeoutStartSec",
                 lambda: any("timed out" in ln.lower() for ln in runner.journal_lines()), timeout=180)
        # killed mid-run: target and watermark are the last committed run's
        assert target_rows(tenant, "Orders", "id, note") == [(1, "one"), (2, "two")]
        assert watermark(tenant, job) == w1
        assert len(runner.runs()) == 1
    finally:
        backing.rollback()
        backing.close()

    # Restart=on-failure runs it again: it resumes from the watermark (only the two new rows)
    runs = wait_for("the restarted run", lambda: (lambda r: r if len(r) >= 2 else None)(runner.runs()))
    assert re.fullmatch(rf"sync {job}: ok tables=1 inserted=2 updated=0 deleted=0 changed=true", runs[1]), runs
    assert target_rows(tenant, "Orders", "id, note") == [(1, "one"), (2, "two"), (3, "three"), (4, "four")]
    assert watermark(tenant, job) > w1
    assert int(runner.show("NRestarts")["NRestarts"]) >= 1
    runner.wait_inactive()

    # an overlapping run: the service started while another session holds the job's lock (as a run from an
    # operator or AWX would) waits lock_timeout, logs 'locked' and succeeds
    holder = psycopg.connect(**pg_cluster.conninfo(tenant.db), autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (S.LOCK_CLASS, S.job_lock_id(holder, job)))
        runner.node.run(["systemctl", "start", runner.unit + ".service"], timeout=120)
    finally:
        holder.close()
    assert runner.runs()[-1].startswith(f"sync {job}: locked"), runner.runs()
    st = runner.show("Result", "ExecMainStatus")
    assert st == {"Result": "success", "ExecMainStatus": "0"}, st

    # `berqenas sync status` on the runner host: the timer's next run, the lag, and with --pending the rows
    # waiting at the source
    db.execute("INSERT INTO dbo.Orders (id, note) VALUES (5, N'five')")
    status = runner.cli("-i", INV, "sync", "status", "--pending", "--json",
                        env=[f"BERQENAS_API_KEY_FILE={HOME}/sync.key"])
    (row,) = [r for r in json.loads(status.stdout) if r["remotedb"] == job]
    left = datetime.datetime.fromisoformat(row["next_run"]) - datetime.datetime.now(datetime.UTC)
    assert 0 < left.total_seconds() <= 3600 and row["pending"] == 1 and row["rows_total"] == 4, row
    assert 0 <= row["lag_s"] < 600 and row["last_result"] == "ok", row

    # state: absent stops and disables the timer and removes both units
    # (re-applying health_timer alongside changes nothing of it)
    gone = runner.apply(state="absent", health=True)
    assert gone.returncode == 0 and gone.recap()["runner"]["changed"] > 0, gone.stdout[-3000:]
    assert set(changed_by_role(gone)) == {"berqenas.platform.sync_schedule"}, gone.stdout[-3000:]
    for suffix in ("timer", "service"):
        path = f"/etc/systemd/system/{runner.unit}.{suffix}"
        assert runner.node.run(["test", "-e", path], check=False).returncode == 1, path
    listed = runner.node.run(["systemctl", "list-timers", "--all", "--no-legend", "--output=json",
                              runner.unit + ".timer"]).stdout
    # systemd may keep the stopped timer in memory for a while, never with a next elapse
    assert all(not t.get("next") for t in json.loads(listed or "[]")), listed
    assert runner.show("LoadState")["LoadState"] == "not-found"

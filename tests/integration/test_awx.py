"""AWX as code, against the AWX double (tests/support/awx_double.py) and the real PostgreSQL:
configure_controller.yml creates the credential types, job templates and schedules (a second run changes
nothing); a launched template runs its playbook for real with the survey answers and the injected credential;
a survey violation or an invalid answer is refused before anything is touched; `berqenas --controller` launches
the matching template, follows its events and exits with its result."""

import json
import os
import secrets
import subprocess
import time

import psycopg
import pytest
from psycopg import sql

from tests.support.awx_double import AwxDouble
from tests.support.cli import Cli
from tests.support.env import REPO, VENV_BIN

pytestmark = [pytest.mark.awx, pytest.mark.cli]

ADMIN = "awx_admin"


@pytest.fixture(scope="module")
def awx(pg_cluster, tmp_path_factory, ansible_env):
    """An AWX double whose project is this checkout and whose inventory names the test cluster as berqenas_db,
    reached over TCP with a password only the "berqenas PostgreSQL admin" credential carries."""
    root = tmp_path_factory.mktemp("awx")
    db = pg_cluster.create_database("bq_awx_platform")
    password = secrets.token_urlsafe(18)
    with pg_cluster.connect() as c:
        # the tenant jobs write their managed pg_hba block into the session cluster's pg_hba.conf (tenant roles
        # reach only this module's database): put the file back afterwards, for the session's other tests
        hba_file = c.execute("SHOW hba_file").fetchone()[0]
        c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ADMIN)))
        c.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(sql.Identifier(ADMIN),
                                                                               sql.Literal(password)))
    projects = root / "projects"
    projects.mkdir()
    os.symlink(REPO, projects / "berqenas")
    inv = root / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(json.dumps({"berqenas_db": {"hosts": {"dbhost": {
        "ansible_connection": "local", "ansible_python_interpreter": os.path.join(VENV_BIN, "python")}}}}))
    (inv / "group_vars" / "all" / "platform.yml").write_text(json.dumps({
        "berqenas_db_socket": "", "berqenas_db_host": "127.0.0.1", "berqenas_db_port": pg_cluster.port,
        "berqenas_db_name": db,
        "berqenas_credentials_dir": str(root / "credentials"), "berqenas_backup_dir": str(root / "backups"),
        # the health checks' since-when records: under the test's root, never this host's /var/lib/berqenas
        "berqenas_health_state_dir": str(root / "health")}))
    token = secrets.token_urlsafe(24)
    env = {k: ansible_env[k] for k in ("PATH", "HOME", "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_HOME",
                                       "ANSIBLE_LOCAL_TEMP", "ANSIBLE_NOCOLOR")}
    double = AwxDouble(token, str(projects), {"berqenas": str(inv)}, runner_env=env).start()
    for kind, body in (("organizations", {"name": "Default"}),
                       ("projects", {"name": "berqenas", "organization": 1, "scm_type": "", "local_path": "berqenas"}),
                       ("inventories", {"name": "berqenas", "organization": 1})):
        status, _ = double.handle("POST", f"/api/v2/{kind}/", "Bearer " + token, json.dumps(body).encode())
        assert status == 201
    with open(hba_file) as f:
        hba = f.read()
    yield double, token, password, db, root
    double.stop()
    with open(hba_file, "w") as f:
        f.write(hba)
    with pg_cluster.connect() as c:
        c.execute("SELECT pg_reload_conf()")
    with pg_cluster.connect() as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ADMIN)))


def _configure(awx, ansible_env, extra):
    double, token, *_ = awx
    varfile = os.path.join(str(awx[4]), "configure.json")
    with open(os.open(varfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(extra, f)
    env = dict(ansible_env, CONTROLLER_HOST=double.url, CONTROLLER_OAUTH_TOKEN=token, CONTROLLER_VERIFY_SSL="false")
    return subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", "localhost,",
                           os.path.join(REPO, "extensions", "awx", "configure_controller.yml"), "-e", "@" + varfile],
                          env=env, capture_output=True, text=True, timeout=600)


def _api(awx, method, path, body=None):
    double, token, *_ = awx
    return double.handle(method, path, "Bearer " + token, json.dumps(body).encode() if body is not None else b"")


def _wait(awx, job_id, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, job = _api(awx, "GET", f"/api/v2/jobs/{job_id}/")
        if job["status"] in ("successful", "failed", "error", "canceled"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s")


def _schemas(pg_cluster, db):
    with pg_cluster.connect(db) as c:
        return {r[0] for r in c.execute("SELECT nspname FROM pg_namespace")}


@pytest.fixture(scope="module")
def configured(awx, ansible_env):
    double, token, password, db, root = awx
    # the credentials' secrets, as an operator keeps them in Ansible Vault
    extra = {"berqenas_awx_project": "berqenas", "berqenas_awx_inventory": "berqenas",
             "berqenas_awx_credential_inputs": {"berqenas PostgreSQL admin": {"user": ADMIN, "password": password},
                                                "berqenas SQL Server source": {"password": "unused-here"},
                                                "berqenas Hasura admin secret": {"admin_secret": "unused-here"}},
             "berqenas_awx_sync_schedules": [{"remotedb": "erp", "rrule": "DTSTART:20270101T000000Z "
                                              "RRULE:FREQ=MINUTELY;INTERVAL=15"}]}
    first = _configure(awx, ansible_env, extra)
    assert first.returncode == 0, first.stdout + first.stderr
    assert password not in first.stdout + first.stderr
    return extra


def test_configure_controller_creates_everything_once(awx, configured, ansible_env):
    import yaml

    data = yaml.safe_load(open(os.path.join(REPO, "extensions", "awx", "job_templates.yml")))
    jts = {j["name"]: j for j in _api(awx, "GET", "/api/v2/job_templates/")[1]["results"]}
    assert set(jts) == {j["name"] for j in data["berqenas_awx_job_templates"]}
    for want in data["berqenas_awx_job_templates"]:
        got = jts[want["name"]]
        assert got["playbook"] == want["playbook"] and got["project"] and got["inventory"]
        assert got["allow_simultaneous"] == want.get("allow_simultaneous", False), got
        survey = _api(awx, "GET", f"/api/v2/job_templates/{got['id']}/survey_spec/")[1]
        assert survey == (want.get("survey_spec") or {})
        creds = _api(awx, "GET", f"/api/v2/job_templates/{got['id']}/credentials/")[1]["results"]
        assert sorted(c["name"] for c in creds) == sorted(want.get("credentials", []))
    types = {t["name"]: t for t in _api(awx, "GET", "/api/v2/credential_types/")[1]["results"]}
    assert set(types) == {t["name"] for t in data["berqenas_awx_credential_types"]}
    (sched,) = _api(awx, "GET", "/api/v2/schedules/")[1]["results"]
    assert sched["name"] == "berqenas sync erp" and sched["extra_data"] == {"berqenas_remotedb": "erp"}
    assert sched["unified_job_template"] == jts["berqenas sync run"]["id"]
    # a second run changes nothing and writes nothing
    before = len([r for r in awx[0].requests if r[0] in ("POST", "PATCH", "DELETE")])
    again = _configure(awx, ansible_env, configured)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "changed=0" in again.stdout.split("PLAY RECAP", 1)[1]
    assert len([r for r in awx[0].requests if r[0] in ("POST", "PATCH", "DELETE")]) == before


def _template_id(awx, name):
    return _api(awx, "GET", "/api/v2/job_templates/?name=" + name.replace(" ", "%20"))[1]["results"][0]["id"]


def test_launch_runs_the_playbook_with_survey_answers_and_credentials(awx, configured, pg_cluster):
    db = awx[3]
    jt = _template_id(awx, "berqenas tenant create")
    status, launched = _api(awx, "POST", f"/api/v2/job_templates/{jt}/launch/",
                            {"extra_vars": {"berqenas_tenant": "awxacme", "berqenas_home": "/ignored"}})
    assert status == 201, launched
    assert launched["ignored_fields"] == {"extra_vars": {"berqenas_home": "/ignored"}}
    job = _wait(awx, launched["job"])
    failures = [(e["event_data"].get("res") or {}).get("msg") for e in awx[0].events[job["id"]] if e["failed"]]
    assert job["status"] == "successful", failures
    tenants = job["artifacts"]["berqenas_result"]["tenants"]
    assert [t["name"] for t in tenants] == ["awxacme"] and tenants[0]["status"] == "created"
    assert "awxacme" in _schemas(pg_cluster, db)
    events = _api(awx, "GET", f"/api/v2/jobs/{job['id']}/job_events/?counter__gt=0&order_by=counter")[1]["results"]
    assert any(e["event"] == "runner_on_ok" and e["changed"] for e in events)
    # the admin password came from the credential only: it is in no event and no job field
    assert awx[2] not in json.dumps(events) and awx[2] not in json.dumps(job)


def test_survey_and_argument_spec_refuse_bad_answers_before_anything_is_touched(awx, configured, pg_cluster):
    db = awx[3]
    before = _schemas(pg_cluster, db)
    jt = _template_id(awx, "berqenas tenant create")
    status, body = _api(awx, "POST", f"/api/v2/job_templates/{jt}/launch/",
                        {"extra_vars": {"berqenas_tenant": "x" * 41}})
    assert status == 400 and "variables_needed_to_start" in body
    status, body = _api(awx, "POST", f"/api/v2/job_templates/{jt}/launch/", {"extra_vars": {}})
    assert status == 400 and "berqenas_tenant" in json.dumps(body)
    for bad in ("Bad;Name", "{{ lookup('pipe', 'id') }}", "pg_catalog"):
        status, launched = _api(awx, "POST", f"/api/v2/job_templates/{jt}/launch/",
                                {"extra_vars": {"berqenas_tenant": bad}})
        assert status == 201
        job = _wait(awx, launched["job"])
        assert job["status"] == "failed"
        msgs = [str((e["event_data"].get("res") or {}).get("msg", "")) for e in awx[0].events[job["id"]] if e["failed"]]
        assert any("invalid tenant name" in m for m in msgs), msgs
    assert _schemas(pg_cluster, db) == before


def test_berqenas_controller_launches_and_follows_the_job(awx, configured, pg_cluster, ansible_env, tmp_path):
    double, token, _, db, _ = awx
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    os.chmod(token_file, 0o600)
    cli = Cli(ansible_env, str(tmp_path / "home"))
    ctl = ("--controller", double.url, "--controller-token-file", str(token_file))
    res = cli(*ctl, "tenant", "create", "awxglobex", "--json")
    out = res.json
    assert out["name"] == "awxglobex" and out["status"] == "created" and out["changed"] is True
    assert "AWX job" in res.stderr and "changed" in res.stderr  # progress from the job's events
    assert "awxglobex" in _schemas(pg_cluster, db)
    # the booleans of the command reach AWX as the survey's choices ("true"/"false")
    deleted = cli(*ctl, "tenant", "delete", "awxglobex", "--yes", "--no-backup", check=False)
    assert deleted.rc == 0, deleted.stderr
    assert "awxglobex" not in _schemas(pg_cluster, db)
    # a command that edits local desired state says where desired state lives instead
    vpn = cli(*ctl, "vpn", "peer", "add", "alice", "--tenant", "awxglobex", check=False)
    assert vpn.rc == 1 and "controller" in vpn.stderr
    # a token file others can read is refused before any request
    os.chmod(token_file, 0o644)
    n = len(double.requests)
    loose = cli(*ctl, "tenant", "create", "awxinitech", check=False)
    assert loose.rc == 2 and "0600" in loose.stderr and len(double.requests) == n
    os.chmod(token_file, 0o600)
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token")
    os.chmod(wrong, 0o600)
    denied = cli("--controller", double.url, "--controller-token-file", str(wrong), "tenant", "create", "awxinitech",
                 check=False)
    assert denied.rc == 1 and "unauthorized" in denied.stderr


def _launch(awx, template, extra, **fields):
    status, launched = _api(awx, "POST", f"/api/v2/job_templates/{_template_id(awx, template)}/launch/",
                            dict(fields, extra_vars=extra))
    assert status == 201, launched
    job = _wait(awx, launched["job"])
    failures = [(e["event_data"].get("res") or {}).get("msg") for e in awx[0].events[job["id"]] if e["failed"]]
    return job, failures


@pytest.mark.sync
def test_sync_templates_run_with_the_sql_server_credential_only(awx, configured, emulated_mssql_db, ansible_env,
                                                                 tmp_path):
    """The remote database's password reaches sync_run only through the credential's 0600 file."""
    root = awx[4]
    emulated_mssql_db.execute("CREATE TABLE dbo.Orders (id int NOT NULL PRIMARY KEY, amount money NULL, rv rowversion)")
    emulated_mssql_db.execute("INSERT INTO dbo.Orders (id, amount) VALUES (1, 10.5), (2, 20.25)")
    p = emulated_mssql_db.params()
    (root / "inventory" / "group_vars" / "all" / "remotedbs.yml").write_text(json.dumps({"berqenas_remotedbs": [
        {"name": "erp", "tenant": "awxsync", "host": p["server"], "port": int(p["port"]), "user": p["user"],
         "database": p["database"], "tables": ["[dbo].[Orders]"]}]}))
    job, failures = _launch(awx, "berqenas tenant create", {"berqenas_tenant": "awxsync"})
    assert job["status"] == "successful", failures
    # without the secret the credential holds, the run cannot log in
    (cred,) = [c for c in _api(awx, "GET", "/api/v2/credentials/")[1]["results"]
               if c["name"] == "berqenas SQL Server source"]
    job, failures = _launch(awx, "berqenas remotedb test", {"berqenas_remotedb": "erp"})
    assert job["status"] == "failed" and any("login" in str(f).lower() for f in failures), failures
    status, _ = _api(awx, "PATCH", cred["url"], {"inputs": {"password": p["password"]}})
    assert status == 200
    job, failures = _launch(awx, "berqenas remotedb test", {"berqenas_remotedb": "erp"})
    assert job["status"] == "successful", failures
    job, failures = _launch(awx, "berqenas sync run", {"berqenas_remotedb": "erp"}, job_type="check")
    assert job["status"] == "successful", failures
    assert job["artifacts"]["berqenas_result"]["tables"][0]["pending"] == 2
    # an empty list answer arrives as null: the configured tables, not an argument-spec failure
    job, failures = _launch(awx, "berqenas sync run", {"berqenas_remotedb": "erp", "berqenas_sync_tables": None},
                            job_type="check")
    assert job["status"] == "successful", failures
    assert json.loads(job["extra_vars"])["berqenas_sync_tables"] is None
    assert [t["pending"] for t in job["artifacts"]["berqenas_result"]["tables"]] == [2]
    job, failures = _launch(awx, "berqenas sync run", {"berqenas_remotedb": "erp"})  # survey defaults fill the rest
    assert job["status"] == "successful", failures
    assert job["artifacts"]["berqenas_result"]["tables"][0]["inserted"] == 2
    job, failures = _launch(awx, "berqenas sync status", {"berqenas_remotedb": "erp"})
    assert job["status"] == "successful", failures
    (st,) = [t for t in job["artifacts"]["berqenas_result"]["tables"] if t["job"] == "erp"]
    assert st["rows_total"] == 2 and st["last_result"] == "ok"
    # `berqenas --controller ... sync run|status`: the controller inventory's remote database, nothing local
    emulated_mssql_db.execute("INSERT INTO dbo.Orders (id, amount) VALUES (3, 30)")
    token_file = tmp_path / "token"
    token_file.write_text(awx[1] + "\n")
    os.chmod(token_file, 0o600)
    cli = Cli(ansible_env, str(tmp_path / "home"))
    ctl = ("--controller", awx[0].url, "--controller-token-file", str(token_file))
    n_jobs = len(awx[0].events)
    res = cli(*ctl, "sync", "run", "erp", "--json")
    assert res.json["status"] == "ok" and res.json["tables"][0]["inserted"] == 1, (res.stdout, res.stderr)
    assert "AWX job" in res.stderr and len(awx[0].events) == n_jobs + 1
    st = [r for r in cli(*ctl, "sync", "status", "--json").json if r["remotedb"] == "erp"]
    assert st[0]["rows_total"] == 3 and st[0]["last_result"] == "ok", st
    assert st[0]["next_run"] == "2027-01-01T00:00:00Z", st  # the AWX schedule's (configured above)
    n = len(awx[0].requests)
    forced = cli(*ctl, "sync", "run", "erp", "--force", check=False)
    assert forced.rc == 2 and "--force" in forced.stderr and len(awx[0].requests) == n
    unknown = cli(*ctl, "sync", "run", "nosuchdb", "--json", check=False)
    assert unknown.rc == 1 and "nosuchdb" in unknown.json["error"], (unknown.stdout, unknown.stderr)
    events = json.dumps([awx[0].events[j] for j in awx[0].events])
    assert p["password"] not in events


def _credential(awx, name):
    (cred,) = [c for c in _api(awx, "GET", "/api/v2/credentials/")[1]["results"] if c["name"] == name]
    return cred


@pytest.mark.hasura
@pytest.mark.health
def test_tenant_hasura_and_health_templates_run_as_awx_jobs(awx, configured, pg_cluster, hasura):
    """tenant list, hasura mirror, hasura status, health and tenant delete launched as AWX jobs against the session
    PostgreSQL and the Hasura double: each job's effect, and its result."""
    from ansible_collections.berqenas.platform.plugins.module_utils import tenants as T

    db, root = awx[3], awx[4]
    gv = root / "inventory" / "group_vars" / "all"
    (gv / "hasura.yml").write_text(json.dumps({"berqenas_hasura_url": hasura.url}))
    status, _ = _api(awx, "PATCH", _credential(awx, "berqenas Hasura admin secret")["url"],
                     {"inputs": {"admin_secret": hasura.double.admin_secret}})
    assert status == 200
    try:
        # the tenant, made by the reconciler the tenant create job runs (that job is tested above)
        store = T.CredentialStore(str(root / "credentials"))
        with pg_cluster.connect(db) as conn:
            T.reconcile(conn, [T.TenantSpec("awxhx")], db, store)
        app = store.load("awxhx")["app"]
        dsn = "postgresql://%s:%s@127.0.0.1:%d/%s" % (app["user"], app["password"], pg_cluster.port, db)
        hasura.double.environment["BERQENAS_AWXHX_DATABASE_URL"] = dsn  # the engine's own environment
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as c:
            c.execute("CREATE TABLE awxhx.orders (id int PRIMARY KEY, total numeric)")

        # tenant list: the live state of each tenant the controller's inventory lists (one never created)
        (gv / "tenants.yml").write_text(json.dumps({"berqenas_tenants": [{"name": "awxhx"}, {"name": "awxnotyet"}]}))
        job, failures = _launch(awx, "berqenas tenant list", {})
        assert job["status"] == "successful", failures
        listed = {t["name"]: t["state"] for t in job["artifacts"]["berqenas_result"]["tenants"]}
        assert listed == {"awxhx": "ok", "awxnotyet": "missing"}, job["artifacts"]

        # hasura mirror: the tenant's source and table tracked in the engine, the secret from the credential only
        job, failures = _launch(awx, "berqenas hasura mirror", {"berqenas_tenant": "awxhx"})
        assert job["status"] == "successful", failures
        assert job["artifacts"]["berqenas_result"]["tracked"] == ["awxhx.orders"], job["artifacts"]
        (src,) = [s for s in hasura.double.metadata["sources"] if s["name"] == "awxhx"]
        assert src["configuration"]["connection_info"]["database_url"] == {"from_env": "BERQENAS_AWXHX_DATABASE_URL"}
        assert [(t["table"]["schema"], t["table"]["name"], [p["role"] for p in t.get("select_permissions", [])])
                for t in src["tables"]] == [("awxhx", "orders", ["awxhx_user"])], src["tables"]
        job, failures = _launch(awx, "berqenas hasura status", {})
        assert job["status"] == "successful", failures
        st = job["artifacts"]["berqenas_result"]
        assert st["is_consistent"] is True and st["inconsistent_objects"] == [], st
        (seen,) = [s for s in st["sources"] if s["name"] == "awxhx"]
        assert "orders" in json.dumps(seen), seen

        # health: the job succeeds and carries every check's verdict; a remote database whose password the job
        # has no credential for is reported, not tried (it failed the whole job before)
        (gv / "zz_remotedbs.yml").write_text(json.dumps({"berqenas_remotedbs": [
            {"name": "awxnopw", "tenant": "awxhx", "host": "127.0.0.1", "port": 9, "user": "u", "database": "d"}]}))
        job, failures = _launch(awx, "berqenas health", {"berqenas_health_timeout": 5})
        (gv / "zz_remotedbs.yml").unlink()
        assert (root / "health" / "database.json").is_file()  # the inventory's state dir, not the host's
        assert job["status"] == "successful", failures
        checks = {(c["kind"], c["name"]): c for c in job["artifacts"]["berqenas_result"]["hosts"]["dbhost"]["database"]}
        assert checks[("postgres", "server")]["healthy"] is True, checks
        assert checks[("postgres", "tenant/awxhx")]["healthy"] is True, checks
        assert (checks[("postgres", "tenant/awxnotyet")]["healthy"], checks[("postgres", "tenant/awxnotyet")]["status"]
                ) == (False, "missing"), checks
        assert (checks[("remotedb", "awxnopw")]["healthy"], checks[("remotedb", "awxnopw")]["status"]) == (
            False, "no_password"), checks
        # the Hasura check reads the metadata with the credential's admin secret
        assert (checks[("hasura", "engine")]["healthy"], checks[("hasura", "engine")]["status"]) == (True, "ok"), checks

        # tenant delete (dumped first, the survey's default): gone from the catalog, its roles too
        job, failures = _launch(awx, "berqenas tenant delete", {"berqenas_tenant": "awxhx", "berqenas_confirm": "true"})
        assert job["status"] == "successful", failures
        (gone,) = job["artifacts"]["berqenas_result"]["tenants"]
        assert (gone["name"], gone["status"]) == ("awxhx", "deleted"), gone
        assert "awxhx" not in _schemas(pg_cluster, db)
        with pg_cluster.connect() as c:
            left = c.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'awxhx%'").fetchall()
        assert left == [], left
        assert any(f.startswith("awxhx") for f in os.listdir(root / "backups")), os.listdir(root / "backups")
        events = json.dumps([awx[0].events[j] for j in awx[0].events])
        assert hasura.double.admin_secret not in events and awx[2] not in events
    finally:
        for f in ("tenants.yml", "hasura.yml", "zz_remotedbs.yml"):
            (gv / f).unlink(missing_ok=True)


@pytest.mark.vpn
@pytest.mark.gateway
def test_vpn_and_gateway_answers_breaking_the_rules_fail_before_anything_is_touched(tmp_path, ansible_env):
    """No machine: a VPN hub that is this host over a local connection (only the read-only status template runs on
    it) and a gateway no module can run on (no Python there): a bad answer is refused by AWX's survey, by the
    playbook's argument spec or by the module's own rule, with a clear message, before anything is read or
    changed. (A template in an answer stays text: test_survey_and_argument_spec_refuse_bad_answers_...)"""
    from tests.support.awx_double import TemplateJobs

    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(json.dumps({"all": {"children": {
        "wireguard": {"hosts": {"hub": {"ansible_connection": "local",
                                        "ansible_python_interpreter": os.path.join(VENV_BIN, "python")}}},
        "berqenas_gateway": {"hosts": {"gw": {"ansible_connection": "local",
                                              "ansible_python_interpreter": "/nonexistent/python3"}}}}}}))
    # the gateway's peers given: gateway_peers.yml reads nothing on the hub
    (inv / "group_vars" / "all" / "gateway.yml").write_text(json.dumps({"gateway_vpn_peers": [],
                                                                       "berqenas_exposures": []}))
    names = ("berqenas vpn status", "berqenas gateway apply")
    jobs = TemplateJobs(tmp_path, inv, names, ansible_env, timeout=180)
    try:
        def failed(name, answers, want):
            job, fails = jobs.launch(name, answers)
            assert job["status"] == "failed" and any(want in str(m) for m in fails), (job["job_explanation"], fails)
            return job, jobs.double.events[job["id"]]

        # VPN: an interface name the survey's length allows and the rule does not: refused before anything is read
        _, events = failed("berqenas vpn status", {"berqenas_vpn_interface": "wg0;id"}, "invalid interface 'wg0;id'")
        assert [e["event_data"]["task"] for e in events if e["event"] == "runner_on_ok"] == ["Validate the inputs"]

        # gateway: AWX's survey refuses a state it does not offer, and no job starts
        n = len(jobs.double.jobs)
        status, body = jobs.api("POST", f"/api/v2/job_templates/{jobs.ids['berqenas gateway apply']}/launch/",
                                {"extra_vars": {"berqenas_gateway_state": "destroy"}})
        assert status == 400 and "destroy" in json.dumps(body["variables_needed_to_start"]), body
        assert len(jobs.double.jobs) == n
        # the same answer on a template whose survey an operator turned off (prompting for variables instead):
        # the playbook's argument spec refuses it, and no module ran on the gateway
        status, _ = jobs.api("PATCH", f"/api/v2/job_templates/{jobs.ids['berqenas gateway apply']}/",
                             {"survey_enabled": False, "ask_variables_on_launch": True})
        assert status == 200
        _, events = failed("berqenas gateway apply", {"berqenas_gateway_state": "destroy"},
                           "berqenas_gateway_state must be one of: present, absent")
        on_gw = {e["event_data"]["task"] for e in events if e["event_data"].get("host") == "gw"}
        assert on_gw == {"Validate the inputs"}, events
    finally:
        jobs.close()

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
        "berqenas_credentials_dir": str(root / "credentials"), "berqenas_backup_dir": str(root / "backups")}))
    token = secrets.token_urlsafe(24)
    env = {k: ansible_env[k] for k in ("PATH", "HOME", "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_HOME",
                                       "ANSIBLE_LOCAL_TEMP", "ANSIBLE_NOCOLOR")}
    double = AwxDouble(token, str(projects), {"berqenas": str(inv)}, runner_env=env).start()
    for kind, body in (("organizations", {"name": "Default"}),
                       ("projects", {"name": "berqenas", "organization": 1, "scm_type": "", "local_path": "berqenas"}),
                       ("inventories", {"name": "berqenas", "organization": 1})):
        status, _ = double.handle("POST", f"/api/v2/{kind}/", "Bearer " + token, json.dumps(body).encode())
        assert status == 201
    yield double, token, password, db, root
    double.stop()
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

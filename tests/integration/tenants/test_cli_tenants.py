"""The three front doors: the CLI (through ansible-runner), ansible-playbook, and the same playbook's inputs."""

import glob
import json
import os
import stat
import subprocess
import tempfile

import psycopg
import pytest

from tests.support.env import VENV_BIN

pytestmark = [pytest.mark.tenants, pytest.mark.cli]


def _superuser(status, db=None):
    return psycopg.connect(host=status["socket_dir"], port=status["port"], user=status["superuser"],
                           dbname=db or status["database"], autocommit=True)


def test_local_status_keys_and_superuser_over_socket(local_platform):
    cli, status = local_platform
    st = cli("local", "status", "--json").json
    assert {"host", "port", "socket_dir", "superuser", "database"} <= set(st)
    assert st["host"] == st["socket_dir"] and st["port"] == status["port"] and st["running"] is True
    assert stat.S_IMODE(os.stat(st["socket_dir"]).st_mode) == 0o700
    with _superuser(st) as c:
        assert c.execute("SELECT current_database()").fetchone()[0] == st["database"]
    # the instance directory lives under a 0700 home (the harness's), made absolute
    assert os.path.isabs(cli.home) and stat.S_IMODE(os.stat(os.path.dirname(cli.home)).st_mode) == 0o700


def test_create_check_mode_changes_nothing(local_platform):
    cli, status = local_platform
    res = cli("tenant", "create", "checkonly", "--check", "--json").json
    assert res["status"] == "created" and res["changed"] and res["check"]
    with _superuser(status) as c:
        assert c.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'checkonly%'").fetchone()[0] == 0
    assert "checkonly" not in [t["name"] for t in cli("tenant", "list", "--json").json]


def test_create_is_idempotent_and_listed(local_platform):
    cli, status = local_platform
    first = cli("tenant", "create", "idem", "--json").json
    assert first["status"] == "created"
    second = cli("tenant", "create", "idem", "--json").json
    assert second["status"] == "unchanged" and second["changed"] is False and second["actions"] == []
    listed = {t["name"]: t for t in cli("tenant", "list", "--json").json}
    assert listed["idem"]["state"] == "ok"
    show = cli("tenant", "show", "idem", "--json").json
    assert {k: show[k] for k in ("name", "schema", "owner_role", "login_role", "readonly_role", "database")} == {
        "name": "idem", "schema": "idem", "owner_role": "idem_owner", "login_role": "idem_app",
        "readonly_role": "idem_ro", "database": status["database"]}
    assert show["credentials_file"].endswith("/idem.json") and "credentials" not in show
    # desired state is data: every value tagged !unsafe
    text = open(os.path.join(cli.home, "inventory/group_vars/all/tenants.yml")).read()
    assert "name: !unsafe 'idem'" in text


def test_list_reports_drift(local_platform):
    cli, status = local_platform
    cli("tenant", "create", "drifty", "--json")
    with _superuser(status) as c:
        c.execute("ALTER ROLE drifty_ro NOLOGIN")
        c.execute("REVOKE USAGE ON SCHEMA drifty FROM drifty_ro")
    assert {t["name"]: t for t in cli("tenant", "list", "--json").json}["drifty"]["state"] == "drifted"
    assert cli("tenant", "create", "drifty", "--json").json["status"] == "updated"
    assert {t["name"]: t for t in cli("tenant", "list", "--json").json}["drifty"]["state"] == "ok"


def test_secrets_never_leak(local_platform):
    cli, status = local_platform
    tmpdir = tempfile.mkdtemp(prefix="bq-secret-tmp-")  # the CLI's own TMPDIR: other processes' runs stay out
    cli.env["TMPDIR"] = tmpdir
    try:
        res = cli("tenant", "create", "secretive", "--json")
    finally:
        del cli.env["TMPDIR"]
    creds = cli("tenant", "show", "secretive", "--credentials", "--json").json["credentials"]
    pw = [creds["app"]["password"], creds["ro"]["password"]]
    # not in the create command's output, nor in the desired-state files
    for p in pw:
        assert p not in res.stdout and p not in res.stderr
        for path in glob.glob(os.path.join(cli.home, "inventory", "**", "*"), recursive=True):
            if os.path.isfile(path):
                assert p not in open(path, errors="replace").read(), path
    # no runner private data dir (artifacts, command file) is left behind
    assert os.listdir(tmpdir) == []
    os.rmdir(tmpdir)
    # the credentials file is 0600 in a 0700 directory, and holds what the server accepts
    f = os.path.join(cli.home, "credentials", "secretive.json")
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(f)).st_mode) == 0o700
    with psycopg.connect(host="127.0.0.1", port=status["port"], dbname=status["database"],
                         user="secretive_app", password=creds["app"]["password"]) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == "secretive_owner"


def test_invalid_names_rejected_before_state_is_written(local_platform):
    cli, status = local_platform
    before = open(os.path.join(cli.home, "inventory/group_vars/all/tenants.yml")).read()
    for bad in ["Bad", "pg_x", "public", "ab{{ 6*7 }}cd", "{{ lookup('pipe','touch /tmp/bq-pwned') }}"]:
        res = cli("tenant", "create", bad, "--json", check=False)
        assert res.rc == 2, (bad, res.stdout, res.stderr)
        assert "invalid tenant name" in res.stderr
    assert open(os.path.join(cli.home, "inventory/group_vars/all/tenants.yml")).read() == before
    assert not os.path.exists("/tmp/bq-pwned")


def test_template_payload_in_state_file_is_data(local_platform):
    """A lookup written into the vars file (as the CLI would write it, !unsafe) is never run."""
    cli, status = local_platform
    path = os.path.join(cli.home, "inventory/group_vars/all/hostile.yml")
    marker = os.path.join(cli.home, "pwned")
    with open(path, "w") as f:
        f.write("berqenas_tenant: !unsafe \"{{ lookup('pipe', 'touch %s') }}\"\n" % marker)
    try:
        res = cli("tenant", "list", "--json", check=False)  # any run loads the file
        res2 = subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", os.path.join(cli.home, "inventory"),
                               "playbooks/tenant_create.yml"], env=cli.env, capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.dirname(VENV_BIN)))
        assert res2.returncode != 0 and "invalid tenant name" in res2.stdout
        assert res.rc == 0
        assert not os.path.exists(marker)
    finally:
        os.unlink(path)


def test_delete_refuses_without_yes_and_with_dependents(local_platform):
    cli, status = local_platform
    cli("tenant", "create", "doomed", "--json")
    res = cli("tenant", "delete", "doomed", "--json", check=False)
    assert res.rc == 2 and "refused without --yes" in res.stdout + res.stderr
    vpn = os.path.join(cli.home, "inventory/group_vars/all/vpn.yml")
    with open(vpn, "w") as f:
        f.write("berqenas_vpn_peers:\n  - {name: !unsafe 'laptop1', tenant: !unsafe 'doomed'}\n"
                "  - {name: !unsafe 'other1', tenant: !unsafe 'acme'}\n")
    cli("remotedb", "add", "doomeddb", "--tenant", "doomed", "--host", "127.0.0.1", "--user", "sa",
        "--password-file", "-", "--database", "src", "--json", input="Remote-Pass-123\n")
    secrets_file = os.path.join(cli.home, "inventory/group_vars/all/remotedb_secrets.yml")
    assert "doomeddb" in open(secrets_file).read()
    res = cli("tenant", "delete", "doomed", "--yes", "--json", check=False)
    assert res.rc == 1
    err = json.loads(res.stdout)
    assert "still has dependents" in err["error"] and "vpn peer laptop1" in err["error"]
    with _superuser(status) as c:
        assert c.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'doomed'").fetchone()[0] == 1
    # --cascade: deleted, dumped first, dependents removed from desired state
    with _superuser(status) as c:
        c.execute("CREATE TABLE doomed.keepme (id int)")
        c.execute("ALTER TABLE doomed.keepme OWNER TO doomed_owner")
        c.execute("INSERT INTO doomed.keepme VALUES (42)")
    out = cli("tenant", "delete", "doomed", "--yes", "--cascade", "--json").json
    assert out["status"] == "deleted"
    dump = out["backup_file"]
    assert stat.S_IMODE(os.stat(dump).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(dump)).st_mode) == 0o700
    listing = subprocess.run(["/usr/lib/postgresql/15/bin/pg_restore", "--list", dump], capture_output=True,
                             text=True, check=True).stdout
    assert "TABLE DATA doomed keepme" in listing
    with _superuser(status) as c:
        assert c.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'doomed'").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'doomed\\_%'").fetchone()[0] == 0
    assert "laptop1" not in open(vpn).read() and "other1" in open(vpn).read()
    assert "doomeddb" not in [d["name"] for d in cli("remotedb", "list", "--json").json]
    assert "doomeddb" not in open(secrets_file).read()  # its vaulted password is forgotten too
    assert "doomed" not in [t["name"] for t in cli("tenant", "list", "--json").json]
    assert not os.path.exists(os.path.join(cli.home, "credentials", "doomed.json"))
    os.unlink(vpn)


def test_json_error_object_and_exit_codes(local_platform):
    cli, status = local_platform
    res = cli("tenant", "show", "nosuch", "--json", check=False)
    assert res.rc == 1 and json.loads(res.stdout)["error"].startswith("show tenant nosuch")
    res = cli("tenant", "frobnicate", check=False)
    assert res.rc == 2


def test_ansible_playbook_front_door(local_platform):
    """The same playbook without the orchestrator: ansible-playbook with the instance's inventory."""
    cli, status = local_platform
    env = dict(cli.env)
    repo = os.path.dirname(os.path.dirname(VENV_BIN))
    args = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", os.path.join(cli.home, "inventory"),
            "playbooks/tenant_create.yml", "-e", "berqenas_tenant=viaplaybook"]
    first = subprocess.run(args, env=env, capture_output=True, text=True, cwd=repo)
    assert first.returncode == 0, first.stdout[-2000:]
    second = subprocess.run(args, env=env, capture_output=True, text=True, cwd=repo)
    assert "changed=0" in second.stdout.split("PLAY RECAP")[-1]
    with _superuser(status) as c:
        assert c.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'viaplaybook'"
                         ).fetchone()[0] == "viaplaybook_owner"

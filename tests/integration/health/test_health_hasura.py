"""The Hasura check of `berqenas health` (and status's Hasura verdict) against the metadata double, each failure
made for real: a tracked table dropped from PostgreSQL (inconsistent metadata), the engine refusing the admin
secret, the engine gone (nothing listening)."""

import json
import os
import subprocess

import pytest

from tests.support.cli import local_inventory
from tests.support.env import VENV_BIN

pytestmark = [pytest.mark.health, pytest.mark.hasura]


def _post(srv, body):
    import urllib.request

    req = urllib.request.Request(srv.url + "/v1/metadata", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "X-Hasura-Admin-Secret": srv.double.admin_secret})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture()
def hasura_platform(tmp_path, hasura, hasura_tenants, ansible_env):
    """An inventory whose database is hx_acme's platform database and whose Hasura is the double, with hx_acme's
    source holding one tracked table (hx_acme.kept)."""
    t = hasura_tenants["hx_acme"]
    with t.connect() as c:
        for n in ("kept", "dropped"):
            c.execute("DROP TABLE IF EXISTS hx_acme.%s" % n)
            c.execute("CREATE TABLE hx_acme.%s (id int PRIMARY KEY)" % n)
    _post(hasura, {"type": "pg_add_source", "args": {"name": t.name, "configuration": {
        "connection_info": {"database_url": {"from_env": t.env}}}}})
    for n in ("kept", "dropped"):
        _post(hasura, {"type": "pg_track_table", "args": {"source": t.name, "table": {"schema": t.name, "name": n}}})
    inv = tmp_path / "inv"
    local_inventory(inv, variables={
        "berqenas_db_host": "127.0.0.1", "berqenas_db_socket": "", "berqenas_db_port": t.port,
        "berqenas_db_user": t.user, "berqenas_db_password": t.password, "berqenas_db_name": t.db,
        "berqenas_health_state_dir": str(tmp_path / "health")})
    secret_file = tmp_path / "admin_secret"
    secret_file.write_text(hasura.double.admin_secret + "\n")
    env = dict(ansible_env, BERQENAS_HOME=str(tmp_path / "home"))
    env.pop("ANSIBLE_VAULT_PASSWORD_FILE", None)

    def cli(*args):
        return subprocess.run([os.path.join(VENV_BIN, "berqenas"), "-i", str(inv), *args], env=env,
                              capture_output=True, text=True, timeout=300, cwd="/")

    r = cli("hasura", "configure", "--url", hasura.url, "--admin-secret-file", str(secret_file), "--json")
    assert r.returncode == 0, r.stderr
    secret_file.unlink()
    yield cli, t, inv
    with t.connect() as c:
        c.execute("DROP TABLE IF EXISTS hx_acme.kept")
        c.execute("DROP TABLE IF EXISTS hx_acme.dropped")


def _hasura_check(cli):
    r = cli("health", "--json", "--only", "hasura", "--check-timeout", "5")
    assert r.returncode in (0, 1), r.stdout + r.stderr
    data = json.loads(r.stdout)
    (check,) = [c for c in data["checks"] if c["kind"] == "hasura"]
    assert data["healthy"] == (r.returncode == 0)
    return r, check


def test_hasura_healthy_then_inconsistent_metadata(hasura_platform, hasura):
    cli, t, inv = hasura_platform
    r, check = _hasura_check(cli)
    assert r.returncode == 0 and check["healthy"] and check["status"] == "ok", check
    assert hasura.double.admin_secret not in r.stdout + r.stderr

    with t.connect() as c:
        c.execute("DROP TABLE hx_acme.dropped")  # still tracked: the metadata is inconsistent
    r, check = _hasura_check(cli)
    assert r.returncode == 1 and check["status"] == "inconsistent", check
    assert "table hx_acme.dropped in source hx_acme" in check["detail"] and check["since"]

    # status reads the same engine directly: the table marked inconsistent, the verdict unhealthy
    data = json.loads(cli("status", "--json").stdout)
    tables = {x["table"]: x["consistent"] for x in data["hasura_tables"]}
    assert tables == {"hx_acme.kept": True, "hx_acme.dropped": False}, data["hasura_tables"]
    engine = next(c for c in data["health"] if c["kind"] == "hasura")
    assert engine["status"] == "inconsistent" and not data["healthy"]


def test_hasura_refusing_the_secret_or_gone_is_an_error(hasura_platform, hasura):
    cli, t, inv = hasura_platform
    real = hasura.double.admin_secret
    hasura.double.admin_secret = "another-secret"  # the engine now refuses the stored one (401)
    try:
        r, check = _hasura_check(cli)
    finally:
        hasura.double.admin_secret = real
    assert r.returncode == 1 and check["status"] == "error" and "refused the admin secret" in check["detail"], check
    assert real not in r.stdout + r.stderr

    # nothing listens at the configured URL any more: reported, not a hang or a crash
    state = inv / "group_vars" / "all" / "hasura.yml"
    state.write_text(state.read_text().replace(hasura.url, "http://127.0.0.1:9"))
    r, check = _hasura_check(cli)
    assert r.returncode == 1 and check["status"] == "error" and "did not answer" in check["detail"], check
    data = json.loads(cli("status", "--json").stdout)
    engine = next(c for c in data["health"] if c["kind"] == "hasura")
    assert engine["status"] == "error" and "did not answer" in engine["detail"]

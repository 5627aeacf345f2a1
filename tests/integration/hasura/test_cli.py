"""berqenas hasura configure / mirror / status and token issue through the real command."""

import json
import os
import subprocess
import sys

import pytest

from .conftest import reset_schema

pytestmark = pytest.mark.hasura

BERQENAS = os.path.join(os.path.dirname(sys.executable), "berqenas")


def test_hasura_cli_configure_mirror_status(tmp_path, hasura, hasura_tenants, ansible_env):
    t = hasura_tenants["hx_acme"]
    reset_schema(t)
    inv = tmp_path / "inv"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(
        "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n      ansible_python_interpreter: %s\n"
        "  children:\n    berqenas_db:\n      hosts:\n        localhost: {}\n" % sys.executable)
    (inv / "group_vars" / "all" / "platform.yml").write_text(json.dumps({
        "berqenas_db_host": "127.0.0.1", "berqenas_db_socket": "", "berqenas_db_port": t.port,
        "berqenas_db_user": t.user, "berqenas_db_password": t.password, "berqenas_db_name": t.db}))
    secret_file = tmp_path / "admin_secret"
    secret_file.write_text(hasura.double.admin_secret + "\n")
    env = dict(ansible_env, BERQENAS_HOME=str(tmp_path / "home"))
    env.pop("ANSIBLE_VAULT_PASSWORD_FILE", None)

    def cli(*args):
        return subprocess.run([BERQENAS, "-i", str(inv), *args], env=env, capture_output=True, text=True,
                              timeout=300)

    r = cli("hasura", "configure", "--url", hasura.url, "--admin-secret-file", str(secret_file), "--json")
    assert r.returncode == 0, r.stderr
    stored = (inv / "group_vars" / "all" / "hasura_secrets.yml").read_text()
    assert hasura.double.admin_secret not in stored and "!vault" in stored
    r = cli("hasura", "mirror", t.name, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["tracked"] == ["hx_acme.customers", "hx_acme.invoices", "hx_acme.orders"]
    r = cli("hasura", "status", "--json")
    assert r.returncode == 0, r.stderr
    assert [s["name"] for s in json.loads(r.stdout)["sources"]] == ["hx_acme"]
    assert hasura.double.admin_secret not in r.stdout + r.stderr
    r = cli("hasura", "track", "Bad", "--table", "x")
    assert r.returncode == 2 and "invalid tenant name" in r.stderr

"""playbooks/hasura_mirror.yml through the orchestrator's runner adapter, the admin secret vaulted in the inventory."""

import json
import sys

import pytest

from .conftest import reset_schema

pytestmark = pytest.mark.hasura


class _App:
    def __init__(self, tmp_path):
        self.home = tmp_path / "home"
        self.inventory = tmp_path / "inv"
        self.is_local = True


@pytest.fixture()
def inventory(tmp_path, hasura, hasura_tenants, pg_cluster):
    from berqenas_orchestrator import vault

    app = _App(tmp_path)
    gv = app.inventory / "group_vars" / "all"
    gv.mkdir(parents=True)
    (app.inventory / "hosts.yml").write_text(
        "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n      ansible_python_interpreter: %s\n"
        "  children:\n    berqenas_db:\n      hosts:\n        localhost: {}\n" % sys.executable)
    t = hasura_tenants["hx_acme"]
    (gv / "platform.yml").write_text(json.dumps({
        "berqenas_db_host": "127.0.0.1", "berqenas_db_socket": "", "berqenas_db_port": t.port,
        "berqenas_db_user": t.user, "berqenas_db_password": t.password, "berqenas_db_name": t.db}))
    (gv / "hasura.yml").write_text(json.dumps({"berqenas_hasura_url": hasura.url}))
    # the admin secret: a !vault value in the inventory (what `berqenas hasura configure` writes), never extravars
    vault.store(app, "hasura_secrets.yml", "berqenas_hasura_admin_secrets", "default", hasura.double.admin_secret)
    reset_schema(t)
    return app, {"ANSIBLE_VAULT_PASSWORD_FILE": str(vault.password_file(app))}


def test_mirror_playbook_idempotent_and_no_secret_anywhere(inventory, hasura, hasura_tenants):
    from berqenas_orchestrator import runner

    app, env = inventory
    t = hasura_tenants["hx_acme"]
    lines = []
    r = runner.run_playbook("hasura_mirror.yml", inventory=app.inventory, extravars={"berqenas_tenant": t.name},
                            env=env, progress=lines.append, diff=True)
    assert r.ok, r.failures
    res = r.data["berqenas_result"]
    assert res["changed"] and res["tracked"] == ["hx_acme.customers", "hx_acme.invoices", "hx_acme.orders"]
    md = hasura.double.metadata
    src = next(s for s in md["sources"] if s["name"] == t.name)
    assert src["configuration"]["connection_info"]["database_url"] == {"from_env": t.env}
    assert {p["role"] for tb in src["tables"] for p in tb.get("select_permissions", [])} == {"hx_acme_user"}
    hasura.double.requests.clear()
    r2 = runner.run_playbook("hasura_mirror.yml", inventory=app.inventory, extravars={"berqenas_tenant": t.name},
                             env=env, progress=lines.append)
    assert r2.ok and not r2.data["berqenas_result"]["changed"] and hasura.double.writes() == []
    r3 = runner.run_playbook("hasura_mirror.yml", inventory=app.inventory, env=env, progress=lines.append,
                             extravars={"berqenas_tenant": t.name, "berqenas_hasura_action": "untrack",
                                        "berqenas_hasura_tables": ["orders"]})
    assert r3.ok and r3.data["berqenas_result"]["tracked"] == ["hx_acme.customers", "hx_acme.invoices"]
    st = runner.run_playbook("hasura_status.yml", inventory=app.inventory, env=env, progress=lines.append)
    assert st.ok, st.failures
    srcs = {s["name"]: s for s in st.data["berqenas_result"]["sources"]}
    assert set(srcs[t.name]["tables"]) == {"hx_acme.customers", "hx_acme.invoices"}
    assert srcs[t.name]["database_url_env"] == t.env and st.data["berqenas_result"]["is_consistent"]
    everything = json.dumps([r.data, r.failures, r.diffs, r2.data, r3.data, st.data, lines], default=str)
    assert hasura.double.admin_secret not in everything and t.password not in everything
    assert hasura.double.admin_secret not in json.dumps(md)


def test_mirror_playbook_wrong_secret_fails_clearly(inventory, hasura, hasura_tenants):
    from berqenas_orchestrator import runner

    app, env = inventory
    real = hasura.double.admin_secret
    hasura.double.admin_secret = "rotated-elsewhere-" + real[:4]
    try:
        r = runner.run_playbook("hasura_mirror.yml", inventory=app.inventory, env=env,
                                extravars={"berqenas_tenant": "hx_acme"})
    finally:
        hasura.double.admin_secret = real
    assert not r.ok and any("refused the admin secret" in f for f in r.failures), r.failures
    assert real not in json.dumps([r.data, r.failures])

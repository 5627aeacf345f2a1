"""Bad input through the playbooks' own front door (ansible-playbook -e, as AWX or an operator would call them,
bypassing the CLI and its !unsafe marking): template, shell and SQL payloads and NULs in the tenant playbooks'
inputs are refused before anything changes. No payload runs (no marker file appears) and the database catalog
(roles, memberships, schemas, ACLs, databases) is the same before and after."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from berqenas_orchestrator import runner

from tests.support.catalog import catalog
from tests.support.cli import local_inventory
from tests.support.env import COLLECTIONS, VENV_BIN

pytestmark = pytest.mark.cli

def test_tenant_playbooks_refuse_hostile_extra_vars(pg_cluster, ansible_env, tmp_path):
    db = pg_cluster.create_database("hostile_pb")
    marker = tmp_path / "marker"
    creds = tmp_path / "creds"
    inv = local_inventory(tmp_path / "inv", variables={
        "berqenas_db_socket": pg_cluster.host, "berqenas_db_port": pg_cluster.port,
        "berqenas_db_user": pg_cluster.superuser, "berqenas_db_name": db, "berqenas_credentials_dir": str(creds)})
    template = "{{ lookup('pipe', 'touch %s') }}" % marker
    cases = [
        ("tenant_create", {"berqenas_tenant": template}),
        ("tenant_create", {"berqenas_tenant": "$(touch %s)" % marker}),
        ("tenant_create", {"berqenas_tenant": "x'; CREATE ROLE pwned SUPERUSER; --"}),
        ("tenant_create", {"berqenas_tenant": "acme\x00pwned"}),
        ("tenant_create", {"berqenas_tenants": [{"name": "ok_one"},
                                                {"name": '"; DROP ROLE %s; --' % pg_cluster.superuser}]}),
        ("tenant_create", {"berqenas_tenant": "acme", "berqenas_db_port": "5432; touch %s" % marker}),
        ("tenant_delete", {"berqenas_tenant": template}),
    ]
    before = catalog(pg_cluster, db)

    def run(i_case):
        i, (book, extravars) = i_case
        # marked !unsafe, as the runner and AWX's surveys hand them over (a plain `-e` value is a trusted template
        # in ansible-core: whoever writes one runs code by design)
        varfile = tmp_path / f"vars{i}.yml"
        varfile.write_text(runner.dump_unsafe_yaml(extravars))
        return subprocess.run(
            [os.path.join(VENV_BIN, "ansible-playbook"), "-i", inv, f"berqenas.platform.{book}", "-e", f"@{varfile}"],
            env=dict(ansible_env, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_PYTHON_INTERPRETER=sys.executable),
            capture_output=True, text=True, timeout=300, cwd=str(tmp_path))

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(run, enumerate(cases)))
        for (book, extravars), r in zip(cases, results, strict=True):
            assert r.returncode != 0, (book, extravars, r.stdout[-2000:])
            assert "Traceback" not in r.stdout + r.stderr, (book, extravars, r.stdout[-2000:], r.stderr[-2000:])
            # refused by the play's own checks, before the role's first task (not by a failed connection)
            assert "TASK [berqenas.platform.postgres_tenant" not in r.stdout, (book, extravars, r.stdout[-2000:])
            assert "fatal:" in r.stdout, (book, extravars, r.stdout[-2000:])
        assert not marker.exists(), "a payload ran"
        assert catalog(pg_cluster, db) == before
        assert not creds.exists() or not os.listdir(creds)  # no credential written for a refused tenant
    finally:
        with pg_cluster.connect() as c:
            c.execute(psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(psycopg.sql.Identifier(db)))

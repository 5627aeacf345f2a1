"""Bad input through the playbooks' own front door (ansible-playbook -e, as AWX or an operator would call them,
bypassing the CLI): template, shell and SQL payloads, NULs, bad ports and paths in every front-door playbook's
inputs are refused before anything changes. No payload runs (no marker file appears) and the database catalog
(roles, memberships, schemas, ACLs, databases, relations) is the same before and after.

Every value of the CLI test's HOSTILE set goes through each playbook's own front check, for every input: its
validate_argument_spec spec (ansible's ArgumentSpecValidator, as the action runs it) and its "Refuse malformed
..." asserts, evaluated by ansible's templar (the expressions as the playbook writes them, the value untrusted as a
!unsafe extra var is), in one process of its own (tests/support/front_checks.py). One payload per playbook goes
through a real ansible-playbook run whose hosts have no Python: any module task would fail loudly on it, so a
refusal there is one before any host is touched.

Values are !unsafe as the runner and AWX hand them over. A plain `-e` value (key=value, inline JSON or @file) is a
trusted template in ansible-core 2.19: whoever writes one runs code by design, before any check can see it (the
first read of the variable renders it), so no playbook can refuse it."""

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import yaml
from berqenas_orchestrator import runner

from tests.integration.test_cli_hostile_input import _PG_TABLE_OK, _TABLE_REFUSED, HOSTILE
from tests.integration.test_cli_hostile_input import ACCEPTED as CLI_ACCEPTED
from tests.support.catalog import catalog, files
from tests.support.cli import local_inventory
from tests.support.env import COLLECTIONS, REPO, VENV_BIN

pytestmark = pytest.mark.cli
PLAYBOOKS = os.path.join(REPO, "playbooks")
# imported by others, not a front door of its own (gateway_peers), or only importing one (local_up, local_down)
NOT_FRONT_DOOR = {"gateway_peers.yml", "local_up.yml", "local_down.yml"}
# legitimate values of the required inputs: the baseline every check must pass
SAMPLE = {"berqenas_tenant": "acme", "berqenas_hasura_url": "http://127.0.0.1:8080", "berqenas_remotedb": "erp",
          "berqenas_vpn_peer": "acme-laptop", "berqenas_vpn_dest": "/tmp/dest", "berqenas_fetch_dir": "/tmp/fetch",
          "berqenas_home": "/tmp/home", "berqenas_local_state": "started"}

def _front_checks():
    """{(playbook, input): [(spec, [assert expressions naming the input]), ...]}: every play's validate_argument_spec
    spec and the "Refuse malformed ..." asserts right after it."""
    out = {}
    for pb in sorted(os.listdir(PLAYBOOKS)):
        if not pb.endswith(".yml") or pb in NOT_FRONT_DOOR:
            continue
        with open(os.path.join(PLAYBOOKS, pb)) as f:
            plays = yaml.safe_load(f)
        for play in plays:
            tasks = play.get("tasks") or []
            for i, task in enumerate(tasks):
                if "ansible.builtin.validate_argument_spec" not in task:
                    continue
                spec = task["ansible.builtin.validate_argument_spec"]["argument_spec"]
                exprs = []
                for after in tasks[i + 1:]:
                    if "ansible.builtin.assert" not in after or not after["name"].startswith("Refuse malformed"):
                        break
                    that = after["ansible.builtin.assert"]["that"]
                    exprs += [that] if isinstance(that, str) else that
                # the spec's inputs, and those only the asserts check (berqenas_vpn_peers: too big to deep-copy)
                named_in = [n for e in exprs for n in re.findall(r"(?<![\w'])berqenas_[a-z_]+", e)]  # not a default
                names = dict.fromkeys([*spec, *named_in])
                for name in names:
                    named = [e for e in exprs if re.search(r"\b%s\b" % name, e)]
                    out.setdefault((pb, name), []).append((spec, named))
    return out


# values legitimately valid for an input (a path may hold any character but NUL, line breaks and template syntax;
# a host pattern or an interface name may look like a word, a number or a date), by rule
_TEMPLATES = {"{{ 6*7 }}", "{% if 1 %}x{% endif %}", "{# c #}", "{{ lookup('pipe','id') }}"}
_PATH_OK = set(HOSTILE) - _TEMPLATES - {"a\nb", "a\rb", "a\x00b", ""}
# T-SQL and PostgreSQL table names are quoted wherever they go (the CLI test's rule; PostgreSQL's at most 63)
_TABLE_OK = set(HOSTILE) - _TABLE_REFUSED
_HOST_PATTERN_OK = {
    "*", "0x10", "192.0.2.1:99999", "1e400", "2026-12-01", "2026-12-01T25:00:00Z", "2026-13-01T00:00:00Z",
    "300.1.1.1", "65536", "99999999999999999999", "ACME", "NaN", "a&&b", "a_b!.example", "a" * 41,
    "bq_000000000000_" + "A" * 43, "host..example", "null", "root", "tenant:", "tenant:Acme", "yesterday",
}
_INTERFACE_OK = {"0x10", "1e400", "2026-12-01", "300.1.1.1", "65536", "AAAA=", "ACME", "NaN", "host..example", "null",
                 "root", "yesterday"}
ACCEPTED = {
    "berqenas_db_name": {"a" * 41, "null", "root", "yesterday"},
    "berqenas_tenant": {"yesterday"},
    ("tenant_create.yml", "berqenas_tenant"): {"", "yesterday"},  # none: the inventory's berqenas_tenants
    "berqenas_remotedb": {"yesterday"},
    ("sync_status.yml", "berqenas_remotedb"): {"", "yesterday"},  # none: every remote database
    "berqenas_vpn_peer": {"0x10", "1e400", "2026-12-01", "65536", "99999999999999999999", "root", "yesterday"},
    "berqenas_vpn_interface": _INTERFACE_OK,
    "berqenas_vpn_hosts": _HOST_PATTERN_OK,
    "berqenas_gateway_hosts": _HOST_PATTERN_OK,
    "berqenas_hasura_url": {"http://x"},
    "berqenas_health_stale_after": {"65536"},
    "berqenas_health_max_sync_lag": {"65536"},
    "berqenas_sync_tables": _TABLE_OK | {""},  # empty: the configured tables (AWX's empty answer)
    "berqenas_hasura_tables": _PG_TABLE_OK | {""},
    "berqenas_remotedb_password_file": _PATH_OK | {""},  # empty: the vaulted password
    **dict.fromkeys(["berqenas_home", "berqenas_fetch_dir", "berqenas_vpn_dest", "berqenas_vpn_state_dir",
                     "berqenas_health_state_dir"], _PATH_OK),
}


# playbook, input: a good entry, the CLI command writing such entries, {field: the command's parameter}
ENTRY_FIELDS = {
    ("gateway_apply.yml", "berqenas_exposures"): (
        {"tenant": "acme", "name": "db", "allow": ["192.0.2.0/24"]}, ("gateway", "expose"),
        {"tenant": "tenant", "name": "name", "target": "target", "public_port": "public_port", "allow": "allow"}),
    ("sync_run.yml", "berqenas_remotedbs"): (
        {"name": "erp", "tenant": "acme", "host": "192.0.2.10", "port": 1433, "user": "sa", "database": "erp",
         "tables": ["[dbo].[Orders]"]}, ("remotedb", "add"),
        {f: f for f in ("name", "tenant", "host", "port", "user", "database", "tables")}),
    ("vpn_apply.yml", "berqenas_vpn_peers"): (
        {"name": "acme-laptop", "tenant": "acme"}, ("vpn", "peer", "add"),
        {"name": "name", "tenant": "tenant", "public_key": "public_key", "expires": "expires"}),
}
# where an entry's empty value means the default: an exposure named db, a peer whose key the host generates, a peer
# that never expires; a valid tenant name (the CLI refuses it as no tenant of its state: the playbook does not know)
ENTRY_ACCEPTED = {("berqenas_exposures", "name"): {""}, ("berqenas_vpn_peers", "public_key"): {""},
                  ("berqenas_vpn_peers", "expires"): {""},
                  **{(i, "tenant"): {"yesterday"} for i in ("berqenas_exposures", "berqenas_vpn_peers",
                                                            "berqenas_remotedbs")}}


def test_front_checks_refuse_every_hostile_value():
    checks = _front_checks()
    # every front door validates its inputs (the AWX test checks the surveys against these specs)
    front = {pb for pb in os.listdir(PLAYBOOKS) if pb.endswith(".yml") and pb not in NOT_FRONT_DOOR}
    assert {pb for pb, _ in checks} == front
    cases, keys = [], []
    # the fields of list entries (exposures, remote databases, VPN peers): each hostile value in one field of an
    # otherwise good entry, refused exactly where the CLI command that writes that field refuses it
    for (pb, name), (entry, _, fields) in ENTRY_FIELDS.items():
        ((spec, exprs),) = checks[(pb, name)][:1]
        required = {k: SAMPLE[k] for k, a in spec.items() if a.get("required") and k != name}
        cases.append([spec, exprs, dict(required, **{name: [entry]})])
        keys.append((pb, name, None, True))
        for field in fields:
            for value in HOSTILE:
                bad = dict(entry, **{field: [value] if isinstance(entry.get(field), list) else value})
                cases.append([spec, exprs, dict(required, **{name: [bad]})])
                keys.append((pb, f"{name}[].{field}", value, False))
    for (pb, name), plays in sorted(checks.items()):
        for spec, exprs in plays:
            required = {k: SAMPLE[k] for k, a in spec.items() if a.get("required") and k != name}
            # the baseline first: legitimate values pass (or the checks would refuse everything)
            attrs = spec.get(name, {})
            baseline = ({name: SAMPLE[name]} if name in SAMPLE else {name: attrs["default"]} if "default" in attrs
                        else {})
            cases.append([spec, exprs, dict(required, **baseline)])
            keys.append((pb, name, None, True))
            for value in HOSTILE:
                cases.append([spec, exprs, dict(required, **{name: value})])
                keys.append((pb, name, value, False))
    r = subprocess.run([sys.executable, "-m", "tests.support.front_checks", COLLECTIONS], cwd=REPO,
                       input=json.dumps({"cases": cases}), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    refusals = json.loads(r.stdout)
    assert len(refusals) == len(cases) >= 60 * len(checks)
    accepted, baseline = {}, []
    for (pb, name, value, is_baseline), refusal in zip(keys, refusals, strict=True):
        assert refusal is None or "Traceback" not in refusal, (pb, name, value, refusal)
        if is_baseline:
            if refusal is not None:
                baseline.append((pb, name, refusal))
        elif refusal is None:
            accepted.setdefault((pb, name), set()).add(value)
    assert baseline == []
    if os.environ.get("BQ_HOSTILE_DUMP"):  # what was accepted, to review ACCEPTED
        with open(os.environ["BQ_HOSTILE_DUMP"], "w") as f:
            for k, v in sorted(accepted.items()):
                f.write(f"{k!r}: {sorted(v)!r},\n")
    # by input, or by playbook and input where a playbook differs (an empty berqenas_tenant: only the inventory's)
    expected = {(pb, name): ACCEPTED.get((pb, name), ACCEPTED.get(name, set())) for pb, name in checks}
    # an entry's field: at most what the CLI command writing it accepts (its test lists them the same way)
    for (pb, name), (_, command, fields) in ENTRY_FIELDS.items():
        for field, cli_field in fields.items():
            key = (pb, f"{name}[].{field}")
            allowed = CLI_ACCEPTED.get((command, cli_field), set()) | ENTRY_ACCEPTED.get((name, field), set())
            got = accepted.pop(key, set())
            assert got <= allowed, (key, sorted(got - allowed))
    assert {k: sorted(v) for k, v in accepted.items()} == {k: sorted(v) for k, v in expected.items() if v}


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


def test_front_door_playbooks_refuse_hostile_extra_vars(pg_cluster, ansible_env, tmp_path):
    """One or two payloads per front-door playbook through a real ansible-playbook run, as the runner and AWX pass
    them (!unsafe): refused by the play's own checks with a message naming the input, before any module runs
    (the hosts' Python does not exist: a module task would fail on it), no marker, catalog and files unchanged."""
    db = pg_cluster.create_database("hostile_doors")
    marker = tmp_path / "marker"
    home = tmp_path / "home"
    home.mkdir()
    inv = local_inventory(tmp_path / "inv", groups=("berqenas_db", "wireguard", "berqenas_gateway"), variables={
        "berqenas_db_socket": pg_cluster.host, "berqenas_db_port": pg_cluster.port,
        "berqenas_db_user": pg_cluster.superuser, "berqenas_db_name": db,
        "berqenas_credentials_dir": str(tmp_path / "creds"), "berqenas_backup_dir": str(tmp_path / "backups"),
        "berqenas_tenants": [{"name": "acme"}], "gateway_vpn_peers": [],
        "berqenas_remotedbs": [{"name": "erp", "tenant": "acme", "host": "192.0.2.10", "port": 1433, "user": "sa",
                                "database": "erp", "password_file": str(tmp_path / "pw")}]})
    hosts = os.path.join(inv, "hosts.yml")
    with open(hosts) as f:
        text = f.read()
    with open(hosts, "w") as f:  # the tripwire: no module can run on any host
        f.write(text.replace(sys.executable, str(tmp_path / "no-python")))
    template = "{{ lookup('pipe', 'touch %s') }}" % marker
    shell = "$(touch %s)" % marker
    cases = [
        ("vpn_apply", {"berqenas_vpn_peers": [{"name": "ok-peer", "tenant": "acme"},
                                              {"name": shell, "tenant": "acme"}]}, "peer name"),
        ("vpn_status", {"berqenas_vpn_interface": template}, "berqenas_vpn_interface"),
        ("vpn_peer_config", {"berqenas_vpn_peer": "../../etc/shadow", "berqenas_vpn_dest": str(tmp_path / "dest")},
         "peer name"),
        ("gateway_apply", {"berqenas_exposures": [{"tenant": "acme", "name": "db", "allow": ["192.0.2.1/33"]}]},
         "allowed CIDR"),
        ("gateway_status", {"berqenas_exposures": [{"tenant": "acme", "target": "192.0.2.1:99999"}]}, "port"),
        ("remotedb_test", {"berqenas_remotedb": "erp", "berqenas_remotedbs": [
            {"name": "erp", "tenant": "acme", "host": shell, "user": "sa", "database": "erp"}]}, "host"),
        ("sync_run", {"berqenas_remotedb": "erp", "berqenas_sync_tables": ["[dbo].[Orders]\x00"]},
         "berqenas_sync_tables"),
        ("sync_status", {"berqenas_remotedb": "x'; DROP TABLE sync_state; --"}, "berqenas_remotedb"),
        ("hasura_mirror", {"berqenas_tenant": "acme", "berqenas_hasura_url": "http://127.0.0.1:9/" + template},
         "berqenas_hasura_url"),
        ("hasura_status", {"berqenas_hasura_url": "http://127.0.0.1:9/\u202e"}, "berqenas_hasura_url"),
        ("health_check", {"berqenas_health_state_dir": template}, "berqenas_health_state_dir"),
        ("local_up", {"berqenas_home": "%s\nx" % home}, "berqenas_home"),
        ("local_status", {"berqenas_home": str(home), "berqenas_db_name": "x; DROP DATABASE postgres"},
         "berqenas_db_name"),
        ("tenant_show", {"berqenas_tenant": "acme", "berqenas_fetch_dir": template}, "berqenas_fetch_dir"),
        ("tenant_list", {"berqenas_tenants": [{"name": "acme", "connection_limit": "1; DROP ROLE acme"}]},
         "connection_limit"),
    ]
    assert {book + ".yml" for book, _, _ in cases} | {"tenant_create.yml", "tenant_delete.yml", "local_apply.yml"} \
        == {pb for pb in os.listdir(PLAYBOOKS) if pb.endswith(".yml")} - {"gateway_peers.yml", "local_down.yml"}
    before = catalog(pg_cluster, db), files(tmp_path)

    def run(i_case):
        i, (book, extravars, _) = i_case
        varfile = tmp_path / "vars" / f"{i}.yml"
        varfile.parent.mkdir(exist_ok=True)
        varfile.write_text(runner.dump_unsafe_yaml(extravars))
        return subprocess.run(
            [os.path.join(VENV_BIN, "ansible-playbook"), "-i", inv, f"berqenas.platform.{book}", "-e", f"@{varfile}"],
            env=dict(ansible_env, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS), capture_output=True, text=True,
            timeout=300, cwd=str(tmp_path))

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(run, enumerate(cases)))
        before_files = {p: d for p, d in before[1].items() if "/vars/" not in p}
        for (book, extravars, named), r in zip(cases, results, strict=True):
            out = r.stdout + r.stderr
            why = (book, extravars, r.stdout[-2500:])
            assert r.returncode == 2, why  # a failed task (4: unreachable, 1: an error of ansible itself)
            assert "Traceback" not in out, why
            assert "no-python" not in out and "interpreter" not in out, why  # no module ran anywhere
            failed = re.findall(r"TASK \[([^\]]+)\][^\n]*\n(?:(?!TASK \[).*\n)*?fatal:", r.stdout)
            assert failed and all(t.startswith(("Refuse malformed", "Validate the inputs")) for t in failed), why
            assert named in r.stdout, why  # the message names the input or the rule
        assert not marker.exists(), "a payload ran"
        assert catalog(pg_cluster, db) == before[0]
        after_files = {p: d for p, d in files(tmp_path).items() if "/vars/" not in p}
        assert after_files == before_files  # the inventory, the home: nothing written
    finally:
        with pg_cluster.connect() as c:
            c.execute(psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(psycopg.sql.Identifier(db)))

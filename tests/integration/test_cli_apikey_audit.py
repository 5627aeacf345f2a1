"""`berqenas apikey` and `berqenas audit` as a user runs them: a fresh install, keys by scope, revocation, and the
audit log (every command, denied ones too; tampering found; concurrent commands keep whole lines)."""

import concurrent.futures
import json
import os

import pytest
from berqenas_orchestrator import apikeys

from tests.support.cli import Cli

pytestmark = pytest.mark.cli


@pytest.fixture()
def fresh(ansible_env, tmp_path):
    env = {k: v for k, v in ansible_env.items()
           if k not in (apikeys.ENV_KEY, apikeys.ENV_KEY_FILE, apikeys.ENV_KEYSTORE, "BERQENAS_AUDIT_LOG")}
    home = tmp_path / "home"
    return Cli(env, str(home)), home, env


def test_fresh_install_keys_scopes_revocation(fresh, tmp_path):
    cli, home, env = fresh
    r = cli("tenant", "list", check=False)
    assert r.rc == 1 and "unauthorized" in r.stderr and "apikey init" in r.stderr
    init = cli("apikey", "init", "--json")
    admin = init.json["key"]
    assert apikeys.KEY_RE.match(admin) and "shown once" in init.stderr
    assert cli("apikey", "init", check=False).rc == 1  # only once
    assert admin not in (home / "apikeys.json").read_text()
    as_admin = Cli(dict(env, **{apikeys.ENV_KEY: admin}), str(home))
    ro = as_admin("apikey", "create", "--name", "ro", "--scope", "read", "--json").json
    listed = as_admin("apikey", "list", "--json").json
    assert {k["name"] for k in listed} == {"admin", "ro"} and all("key" not in k and "hash" not in k for k in listed)
    as_ro = Cli(dict(env, **{apikeys.ENV_KEY: ro["key"]}), str(home))
    denied = as_ro("apikey", "list", "--json", check=False)
    assert denied.rc == 1 and denied.json["error"].startswith("unauthorized")
    assert "no local platform" in as_ro("tenant", "list", check=False).stderr  # allowed, then fails honestly
    as_admin("apikey", "revoke", ro["id"])
    r = as_ro("tenant", "list", "--json", check=False)
    assert (r.rc, r.json["error"]) == (1, "unauthorized")
    # --api-key-file must be 0600
    key_file = tmp_path / "admin.key"
    key_file.write_text(admin + "\n")
    os.chmod(key_file, 0o644)
    r = cli("--api-key-file", str(key_file), "apikey", "list", check=False)
    assert r.rc == 1 and "too open" in r.stderr
    os.chmod(key_file, 0o600)
    assert cli("--api-key-file", str(key_file), "apikey", "list").rc == 0

    lines = as_admin("audit", "show", "--json").json
    outcomes = [(r["command"], r["outcome"]) for r in lines]
    assert ("tenant list", "denied") in outcomes and ("apikey list", "denied") in outcomes
    assert ("apikey init", "ok") in outcomes and ("apikey init", "failed") in outcomes
    assert all(admin not in json.dumps(r) and ro["key"] not in json.dumps(r) for r in lines)
    assert {r["key_id"] for r in lines} >= {init.json["id"], ro["id"], None}
    assert as_admin("audit", "show", "--key", ro["id"], "--json").json[0]["key_id"] == ro["id"]
    assert as_admin("audit", "verify", "--json").json["ok"] is True

    log = home / "audit" / "audit.log"
    raw = log.read_bytes().split(b"\n")
    assert b'"outcome":"denied"' in raw[0]  # the first command, refused for want of a key
    raw[0] = raw[0].replace(b'"outcome":"denied"', b'"outcome":"ok"')
    log.write_bytes(b"\n".join(raw))
    r = as_admin("audit", "verify", "--json", check=False)
    assert r.rc == 1 and r.json["ok"] is False and "line 2" in r.stdout


def test_concurrent_commands_keep_the_chain(fresh):
    cli, home, env = fresh
    admin = cli("apikey", "init", "--json").json["key"]
    as_admin = Cli(dict(env, **{apikeys.ENV_KEY: admin}), str(home))
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: as_admin("apikey", "list", "--json", check=False), range(12)))
    assert all(r.rc == 0 for r in results)
    recs = as_admin("audit", "show", "--json").json
    assert [r["seq"] for r in recs] == list(range(1, 14))
    assert as_admin("audit", "verify").rc == 0

"""authz.TABLE: every registered command has an entry and is guarded; every command x every scope is decided
on the command's real parsed arguments; and the CLI itself refuses what the table refuses, changing nothing."""

import os

import pytest
from berqenas_orchestrator import apikeys, audit, authz
from berqenas_orchestrator.apikeys import Scope
from berqenas_orchestrator.cli import main, root
from berqenas_orchestrator.state import StateStore

pytestmark = pytest.mark.unit

# valid arguments of each command, acting on tenant {t} (the table is checked on what click parses from them)
SAMPLES = {
    ("apikey", "init"): [],
    ("apikey", "create"): ["--name", "ci", "--scope", "tenant:{t}"],
    ("apikey", "list"): [],
    ("apikey", "revoke"): ["0123456789ab"],
    ("audit", "show"): [],
    ("audit", "verify"): [],
    ("local", "up"): [],
    ("local", "down"): ["--purge"],
    ("local", "status"): [],
    ("tenant", "create"): ["{t}"],
    ("tenant", "delete"): ["{t}", "--yes"],
    ("tenant", "list"): [],
    ("tenant", "show"): ["{t}"],
    ("vpn", "peer", "add"): ["{t}-phone", "--tenant", "{t}"],
    ("vpn", "peer", "remove"): ["{t}-laptop"],
    ("vpn", "peer", "list"): [],
    ("vpn", "status"): [],
    ("gateway", "expose"): ["{t}", "--name", "db"],
    ("gateway", "unexpose"): ["{t}"],
    ("gateway", "list"): [],
    ("gateway", "status"): [],
    ("remotedb", "add"): ["{t}_crm", "--tenant", "{t}", "--host", "db.example.com", "--user", "u",
                          "--password-file", "/dev/null", "--database", "D"],
    ("remotedb", "list"): [],
    ("remotedb", "test"): ["{t}_erp"],
    ("remotedb", "remove"): ["{t}_erp"],
    ("sync", "run"): ["{t}_erp"],
    ("sync", "status"): [],
    ("hasura", "configure"): ["--url", "http://127.0.0.1:8080", "--admin-secret-file", "/dev/null"],
    ("hasura", "status"): [],
    ("health",): [],
    ("status",): [],
    ("hasura", "track"): ["{t}", "--table", "orders"],
    ("hasura", "untrack"): ["{t}", "--table", "orders"],
    ("hasura", "mirror"): ["{t}"],
    ("token", "config"): ["--out", "/tmp/jwt.json"],
    ("token", "key", "add"): [],
    ("token", "key", "list"): [],
    ("token", "key", "retire"): ["k1"],
    ("token", "issue"): ["--tenant", "{t}"],
}
SCOPES = [None, Scope("admin"), Scope("read"), Scope("tenant", "acme"), Scope("tenant", "globex")]
LEAVES = dict(authz.leaf_commands(root))


@pytest.fixture()
def state(tmp_path):
    store = StateStore(tmp_path / "inventory")
    with store.edit("tenants.yml") as d:
        d["berqenas_tenants"] = [{"name": "acme"}, {"name": "globex"}]
    with store.edit("vpn.yml") as d:
        d["berqenas_vpn_peers"] = [{"name": "acme-laptop", "tenant": "acme"},
                                   {"name": "globex-laptop", "tenant": "globex"}]
    with store.edit("remotedbs.yml") as d:
        d["berqenas_remotedbs"] = [{"name": "acme_erp", "tenant": "acme"}, {"name": "globex_erp", "tenant": "globex"}]
    return store


def test_every_command_has_exactly_one_entry_and_a_sample():
    paths = set(LEAVES)
    assert paths - set(authz.TABLE) == set(), "commands without an entry in authz.TABLE"
    assert set(authz.TABLE) - paths == set(), "authz.TABLE entries for commands that do not exist"
    assert paths - set(SAMPLES) == set(), "commands without a sample in this test"
    assert all(r.kind in authz.KINDS for r in authz.TABLE.values())


def test_every_command_is_guarded():
    for path, cmd in LEAVES.items():
        assert getattr(cmd.callback, "__berqenas_guarded__", None) == path, " ".join(path)


def _params(path, tenant):
    cmd = LEAVES[path]
    ctx = cmd.make_context(path[-1], [a.format(t=tenant) for a in SAMPLES[path]], resilient_parsing=False)
    return ctx.params


def expected(rule, scope, target, params):
    """What the table promises, stated plainly (independently of authz.decide)."""
    if rule.kind == "bootstrap":
        return True
    if scope is None:
        return False
    if scope.kind == "admin":
        return True
    if scope.kind == "read":
        return rule.kind in ("read", "list") or (rule.kind == "tenant-read"
                                                 and not any(params.get(f) for f in rule.secret_flags))
    return rule.kind == "list" or (rule.kind in ("tenant", "tenant-read") and target == scope.tenant)


@pytest.mark.parametrize("path", sorted(SAMPLES), ids=" ".join)
def test_every_command_times_every_scope(path, state):
    rule = authz.TABLE[path]
    for target in ("acme", "globex"):
        params = _params(path, target)
        for scope in SCOPES:
            allowed = authz.decide(rule, scope, params, state) is None
            assert allowed == expected(rule, scope, target, params), (path, str(scope), target)


def test_the_table_says_what_the_issue_says(state):
    acme, read = Scope("tenant", "acme"), Scope("read")

    def ok(scope, *argv):
        for n in range(len(argv), 0, -1):
            if tuple(argv[:n]) in LEAVES:
                path = tuple(argv[:n])
                break
        ctx = LEAVES[path].make_context(path[-1], list(argv[len(path):]))
        return authz.decide(authz.TABLE[path], scope, ctx.params, state) is None

    # read changes nothing
    assert ok(read, "tenant", "list") and ok(read, "tenant", "show", "acme") and ok(read, "sync", "status")
    for argv in (("tenant", "create", "x"), ("vpn", "peer", "remove", "acme-laptop"), ("sync", "run", "acme_erp"),
                 ("remotedb", "remove", "acme_erp"), ("apikey", "list"), ("local", "down")):
        assert not ok(read, *argv), argv
    assert not ok(read, "tenant", "show", "acme", "--credentials")
    # tenant:acme acts on acme only, and never on another tenant's things under its own name
    assert ok(acme, "vpn", "peer", "add", "acme-new", "--tenant", "acme")
    assert ok(acme, "tenant", "show", "acme", "--credentials")
    assert not ok(acme, "tenant", "show", "globex")
    assert not ok(acme, "vpn", "peer", "add", "globex-laptop", "--tenant", "acme")  # hijacking globex's peer
    assert not ok(acme, "remotedb", "add", "globex_erp", "--tenant", "acme", "--host", "h", "--user", "u",
                  "--password-file", "/dev/null", "--database", "d")
    assert not ok(acme, "vpn", "peer", "remove", "nosuch")  # existence of other tenants' names is not revealed
    assert not ok(acme, "gateway", "status") and not ok(acme, "tenant", "create", "acme")
    assert not ok(acme, "apikey", "create", "--name", "x", "--scope", "tenant:acme")


def test_visible_filters_rows_for_tenant_keys():
    class A:
        scope = Scope("tenant", "acme")

    rows = [{"tenant": "acme"}, {"tenant": "globex"}]
    assert authz.visible(A(), rows) == [{"tenant": "acme"}]
    A.scope = Scope("read")
    assert authz.visible(A(), rows) == rows


@pytest.fixture()
def keyed(tmp_path, monkeypatch, state):
    home = tmp_path / "home"
    monkeypatch.delenv(apikeys.ENV_KEYSTORE, raising=False)
    monkeypatch.delenv(apikeys.ENV_KEY_FILE, raising=False)
    monkeypatch.delenv("BERQENAS_AUDIT_LOG", raising=False)
    store = apikeys.Keystore(home / "apikeys.json")
    store.init()
    keys = {s: store.create(s.replace(":", "-"), s)[1] for s in ("read", "tenant:acme")}
    return home, keys, state


def _snapshot(d):
    out = {}
    for base, _, files in os.walk(d):
        for f in files:
            with open(os.path.join(base, f), "rb") as fh:
                out[os.path.join(base, f)] = fh.read()
    return out


@pytest.mark.parametrize("scope,argv", [
    ("read", ["tenant", "create", "x"]),
    ("read", ["vpn", "peer", "remove", "acme-laptop"]),
    ("tenant:acme", ["vpn", "peer", "remove", "globex-laptop"]),
    ("tenant:acme", ["remotedb", "remove", "globex_erp"]),
    ("tenant:acme", ["apikey", "create", "--name", "x", "--scope", "admin"]),
    ("tenant:acme", ["gateway", "status"]),
])
def test_the_cli_refuses_and_changes_nothing(keyed, scope, argv, monkeypatch, capsys):
    home, keys, state = keyed
    before = _snapshot(state.dir)
    monkeypatch.setenv(apikeys.ENV_KEY, keys[scope])
    with pytest.raises(SystemExit) as exc:
        main(["--home", str(home), "--inventory", str(state.dir), *argv, "--json"])
    out = capsys.readouterr().out
    assert exc.value.code == 1, out
    assert '"error": "unauthorized' in out
    assert _snapshot(state.dir) == before
    last = audit.AuditLog(audit.log_path(home)).records()[-1]
    assert (last["outcome"], last["command"], last["scope"]) == ("denied", " ".join(argv[:-1] if argv[0] == "vpn"
                                                                                   else argv[:2]), scope)
    # nothing but last_used moved in the keystore
    assert len(apikeys.Keystore(home / "apikeys.json").keys()) == 3

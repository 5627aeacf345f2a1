"""berqenas_orchestrator.apikeys: key text, the 0600 keystore under a lock, argon2id, scopes, key files."""

import datetime as dt
import json
import multiprocessing
import os
import stat

import pytest
from berqenas_orchestrator import apikeys
from berqenas_orchestrator.apikeys import ApiKeyError, Keystore, Scope, Unauthorized

pytestmark = pytest.mark.unit


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_init_prints_once_and_stores_only_an_argon2id_hash(tmp_path):
    store = Keystore(tmp_path / "home" / "apikeys.json")
    key, text = store.init()
    m = apikeys.KEY_RE.match(text)
    assert m and m.group(1) == key.id and len(m.group(2)) == 43  # 43 urlsafe chars = 256 bits
    raw = store.path.read_text()
    assert m.group(2) not in raw and text not in raw
    assert json.loads(raw)["keys"][0]["hash"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert mode(store.path) == 0o600
    assert key.scope == "admin" and key.status() == "active"
    with pytest.raises(ApiKeyError, match="already set up"):
        store.init()
    assert len(store.keys()) == 1


def test_keys_are_random(tmp_path):
    texts = {apikeys.new_key_text()[0] for _ in range(200)}
    assert len(texts) == 200
    ids = {apikeys.new_key_text()[1] for _ in range(200)}
    assert len(ids) == 200


def test_authenticate_accepts_the_key_and_refuses_everything_else_alike(tmp_path):
    store = Keystore(tmp_path / "k.json")
    admin, text = store.init()
    assert store.authenticate(text).id == admin.id
    assert store.keys()[0].last_used is not None
    _, read_text = store.create("ro", "read")
    wrong_secret = text[:-1] + ("A" if text[-1] != "A" else "B")
    unknown_id = "bq_" + "0" * 12 + text[15:]
    other_ids_secret = text[:16] + read_text[16:]  # admin's id with the read key's secret
    for bad in (None, "", "garbage", wrong_secret, unknown_id, other_ids_secret, text + "x", " " + text,
                text.upper(), "bq_" + admin.id + "_", text.replace("bq_", "bk_")):
        with pytest.raises(Unauthorized) as exc:
            store.authenticate(bad)
        assert str(exc.value) == "unauthorized"


def test_revoked_and_expired_keys_are_unauthorized(tmp_path):
    store = Keystore(tmp_path / "k.json")
    store.init()
    soon = apikeys.now() + dt.timedelta(hours=1)
    short, short_text = store.create("ci", "tenant:acme", expires=soon)
    assert store.authenticate(short_text).scope == "tenant:acme"
    with pytest.raises(Unauthorized, match="^unauthorized$"):
        store.authenticate(short_text, at=soon + dt.timedelta(seconds=1))
    revoked, revoked_text = store.create("old", "read")
    assert store.revoke(revoked.id).revoked
    with pytest.raises(Unauthorized, match="^unauthorized$"):
        store.authenticate(revoked_text)
    statuses = {k.name: k.status() for k in store.keys()}
    assert statuses == {"admin": "active", "ci": "active", "old": "revoked"}
    with pytest.raises(ApiKeyError, match="no API key with id 000000000000"):
        store.revoke("000000000000")
    with pytest.raises(ApiKeyError, match="invalid key id"):
        store.revoke("../../etc")


def test_public_view_never_has_the_hash(tmp_path):
    store = Keystore(tmp_path / "k.json")
    key, _ = store.init()
    pub = key.public()
    assert set(pub) == {"id", "name", "scope", "created", "last_used", "expires", "revoked", "status"}


@pytest.mark.parametrize("text,scope", [("admin", Scope("admin")), ("read", Scope("read")),
                                        ("tenant:acme", Scope("tenant", "acme"))])
def test_scopes(text, scope):
    assert apikeys.parse_scope(text) == scope
    assert str(scope) == text


@pytest.mark.parametrize("bad", ["", "Admin", "root", "tenant", "tenant:", "tenant:Acme", "tenant:public",
                                 "tenant:acme;drop", "tenant:acme:x", "read ", "tenant:{{x}}", "tenant:pg_x",
                                 "admin\n", "tenant:ac\u200bme", "*"])
def test_bad_scopes_are_refused(bad):
    with pytest.raises(ApiKeyError, match="invalid scope"):
        apikeys.parse_scope(bad)


@pytest.mark.parametrize("bad", ["", "-x", "a b", "a" * 65, "x;y", "x/../y", "{{x}}", "na\u202eme", "é"])
def test_bad_names_are_refused(bad):
    with pytest.raises(ApiKeyError, match="invalid key name"):
        apikeys.key_name(bad)


def test_expires_must_be_a_future_iso_timestamp():
    at = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    assert apikeys.parse_expires("2027-01-01T00:00:00Z", at=at) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    for bad in ("2026-01-01T00:00:00Z", "2027-01-01", "tomorrow", "2027-13-01T00:00:00Z", "", "2027-01-01T00:00:00"):
        with pytest.raises(ApiKeyError):
            apikeys.parse_expires(bad, at=at)


def test_key_file_must_be_0600_regular_and_ours(tmp_path):
    p = apikeys.write_key_file(tmp_path / "admin.key", "bq_x")
    assert mode(p) == 0o600
    assert apikeys.read_key_file(str(p)) == "bq_x"
    with pytest.raises(FileExistsError):
        apikeys.write_key_file(p, "other")
    os.chmod(p, 0o640)
    with pytest.raises(ApiKeyError, match="too open"):
        apikeys.read_key_file(str(p))
    os.chmod(p, 0o600)
    link = tmp_path / "link.key"
    link.symlink_to(p)
    with pytest.raises(ApiKeyError):
        apikeys.read_key_file(str(link))
    with pytest.raises(ApiKeyError, match="not a regular file"):
        apikeys.read_key_file(str(tmp_path))
    with pytest.raises(ApiKeyError, match="No such file"):
        apikeys.read_key_file(str(tmp_path / "missing"))


def _create_many(path, n, q):
    store = Keystore(path)
    q.put([store.create(f"k{os.getpid()}-{i}", "read")[0].id for i in range(n)])


def test_concurrent_creates_lose_no_key(tmp_path):
    path = tmp_path / "k.json"
    Keystore(path).init()
    q = multiprocessing.get_context("fork").Queue()
    procs = [multiprocessing.get_context("fork").Process(target=_create_many, args=(path, 5, q)) for _ in range(4)]
    for p in procs:
        p.start()
    ids = [i for _ in procs for i in q.get(timeout=120)]
    for p in procs:
        p.join(timeout=120)
    assert len(ids) == 20
    assert {k.id for k in Keystore(path).keys()} >= set(ids)
    assert len(Keystore(path).keys()) == 21

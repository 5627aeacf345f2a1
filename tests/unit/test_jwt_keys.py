"""berqenas_orchestrator.jwt_keys: keys, the engine's configuration, tokens verified and refused like the engine."""

import base64
import json
import os
import stat
import time

import jwt
import pytest
from berqenas_orchestrator import jwt_keys as J
from cryptography.hazmat.primitives import serialization

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def rsa_key():
    return J.generate("RS256")  # RSA 3072 generation: once for the module


def test_hs256_token_claims_and_verification():
    k = J.generate("HS256")
    assert len(k["secret"]) >= 64
    res = J.issue([k], "acme", ttl=3600)
    claims = J.verify(res["token"], [k])
    ns = claims[J.DEFAULT_NAMESPACE]
    assert ns == {"x-hasura-allowed-roles": ["acme_user"], "x-hasura-default-role": "acme_user",
                  "x-hasura-tenant-id": "acme"}
    assert claims["exp"] - claims["iat"] == 3600 and claims["jti"] == res["jti"] and len(res["jti"]) == 32
    assert jwt.get_unverified_header(res["token"]) == {"alg": "HS256", "kid": k["kid"], "typ": "JWT"}
    # a custom namespace and a role of the tenant
    k2 = J.generate("HS256", "https://example.com/claims")
    c2 = J.verify(J.issue([k2], "acme", "acme_reader")["token"], [k2])
    assert c2["https://example.com/claims"]["x-hasura-default-role"] == "acme_reader"


@pytest.mark.parametrize("role", ["globex_user", "acme_", "admin", "acme_User", "acme user"])
def test_a_tenant_token_carries_only_that_tenants_roles(role):
    with pytest.raises(J.KeyError_, match="role"):
        J.issue([J.generate()], "acme", role)


def test_expired_tampered_and_unknown_key_rejected():
    k = J.generate()
    old = J.issue([k], "acme", ttl=60, now=time.time() - 3600)["token"]
    with pytest.raises(jwt.ExpiredSignatureError):
        J.verify(old, [k])
    tok = J.issue([k], "acme")["token"]
    h, p, s = tok.split(".")
    body = json.loads(base64.urlsafe_b64decode(p + "=="))
    body[J.DEFAULT_NAMESPACE]["x-hasura-tenant-id"] = "globex"
    forged = ".".join([h, base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode(), s])
    with pytest.raises(jwt.InvalidSignatureError):
        J.verify(forged, [k])
    with pytest.raises(jwt.InvalidSignatureError):
        J.verify(tok, [J.generate()])


def test_alg_none_and_hs_rs_confusion_rejected(rsa_key):
    payload = {"iat": int(time.time()), "exp": int(time.time()) + 600,
               J.DEFAULT_NAMESPACE: {"x-hasura-default-role": "globex_user"}}
    none_tok = jwt.encode(payload, None, algorithm="none", headers={"kid": rsa_key["kid"]})
    with pytest.raises(jwt.InvalidAlgorithmError):
        J.verify(none_tok, [rsa_key])
    # HS256 signed with the RSA PUBLIC key (which the engine's configuration publishes) as the HMAC secret
    seg = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    import hashlib
    import hmac

    signing = seg({"alg": "HS256", "typ": "JWT", "kid": rsa_key["kid"]}) + "." + seg(payload)
    sig = hmac.new(rsa_key["public_pem"].encode(), signing.encode(), hashlib.sha256).digest()
    confused = signing + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
    with pytest.raises(jwt.InvalidAlgorithmError):
        J.verify(confused, [rsa_key])
    good = J.issue([rsa_key], "acme")["token"]
    assert J.verify(good, [rsa_key])[J.DEFAULT_NAMESPACE]["x-hasura-tenant-id"] == "acme"


def test_config_holds_only_public_keys_and_rotation_overlap(rsa_key, tmp_path):
    ed = J.generate("EdDSA", now=time.time() + 1)
    env = J.engine_environment([rsa_key])
    entry = json.loads(env["HASURA_GRAPHQL_JWT_SECRET"])
    assert entry == {"type": "RS256", "key": rsa_key["public_pem"], "claims_namespace": J.DEFAULT_NAMESPACE}
    assert "PRIVATE" not in env["HASURA_GRAPHQL_JWT_SECRET"]
    serialization.load_pem_public_key(entry["key"].encode())
    # rotation: both listed, the newer signs, tokens of the older still verify until it is retired
    old_tok = J.issue([rsa_key], "acme")["token"]
    both = [rsa_key, ed]
    env2 = J.engine_environment(both)
    assert [e["type"] for e in json.loads(env2["HASURA_GRAPHQL_JWT_SECRETS"])] == ["RS256", "Ed25519"]
    new = J.issue(both, "acme")
    assert new["kid"] == ed["kid"] and new["alg"] == "EdDSA"
    assert J.verify(old_tok, both) and J.verify(new["token"], both)
    with pytest.raises(jwt.InvalidTokenError):
        J.verify(old_tok, [ed])  # retired
    path = J.write_environment_file(tmp_path / "jwt.env", both)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = open(path).read()
    assert text.count("HASURA_GRAPHQL_JWT_SECRETS='") == 1 and "PRIVATE" not in text


def test_ttl_and_namespace_rules():
    assert J.parse_ttl("1h") == 3600 and J.parse_ttl("90s") == 90 and J.parse_ttl("30d") == 30 * 86400
    for bad in ("", "0h", "1w", "31d", "1 h", "-1h"):
        with pytest.raises(J.KeyError_):
            J.parse_ttl(bad)
    with pytest.raises(J.KeyError_):
        J.generate("HS256", "it's")
    with pytest.raises(J.KeyError_):
        J.generate("HS512")

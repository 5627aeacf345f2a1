"""Tenant JWTs for Hasura: signing keys, the engine's HASURA_GRAPHQL_JWT_SECRET(S) configuration, tokens.

- A key is a JSON document ``{kid, alg, created, claims_namespace, secret | private_pem + public_pem}``, kept
  encrypted with Ansible Vault in the inventory (``group_vars/all/hasura_jwt_keys.yml``, variable
  ``berqenas_hasura_jwt_keys``, keyed by kid), like every other secret the CLI stores.
- HS256 keys are 64 random bytes (urlsafe); RS256 keys are RSA 3072; EdDSA keys are Ed25519. The engine's
  configuration holds the HS256 secret itself (shared) or only the PUBLIC key of RS256/EdDSA.
- Rotation: ``add`` a second key (configuration lists both: ``HASURA_GRAPHQL_JWT_SECRETS``, a JSON list),
  deploy, then ``retire`` the old one. New tokens are signed by the newest key; tokens of either verify
  during the overlap.
- Tokens carry, under the claims namespace: ``x-hasura-allowed-roles``, ``x-hasura-default-role``,
  ``x-hasura-tenant-id``; plus ``iat``, ``exp``, ``jti``, ``sub``, and the signing key's ``kid`` header.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
import uuid

DEFAULT_NAMESPACE = "https://hasura.io/jwt/claims"
ALGORITHMS = ("HS256", "RS256", "EdDSA")
HASURA_TYPE = {"HS256": "HS256", "RS256": "RS256", "EdDSA": "Ed25519"}
_TTL_RE = re.compile(r"^([1-9][0-9]{0,6})(s|m|h|d)\Z")
_TTL_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_TTL = 30 * 86400
_ROLE_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}\Z")


class KeyError_(ValueError):
    """A refused key, configuration or token request."""


def parse_ttl(value: str) -> int:
    m = _TTL_RE.match(value or "")
    if not m:
        raise KeyError_(f"ttl {value!r}: expected a number and s, m, h or d (for example 1h)")
    seconds = int(m.group(1)) * _TTL_UNIT[m.group(2)]
    if seconds > MAX_TTL:
        raise KeyError_(f"ttl {value!r}: at most 30d")
    return seconds


def check_namespace(ns: str) -> str:
    """The collection's claims-namespace rule (module_utils.validation.claims_namespace)."""
    from .validate import validation

    try:
        return validation.claims_namespace(ns)
    except validation.ValidationError as exc:
        raise KeyError_(str(exc)) from None


def generate(alg: str = "HS256", claims_namespace: str = DEFAULT_NAMESPACE, now: float | None = None) -> dict:
    if alg not in ALGORITHMS:
        raise KeyError_(f"algorithm {alg!r}: one of {', '.join(ALGORITHMS)}")
    doc = {"kid": uuid.uuid4().hex[:16], "alg": alg, "created": int(now if now is not None else time.time()),
           "claims_namespace": check_namespace(claims_namespace)}
    if alg == "HS256":
        doc["secret"] = secrets.token_urlsafe(64)
        return doc
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    priv = rsa.generate_private_key(public_exponent=65537, key_size=3072) if alg == "RS256" else \
        ed25519.Ed25519PrivateKey.generate()
    doc["private_pem"] = priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()).decode()
    doc["public_pem"] = priv.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return doc


def public(doc: dict) -> dict:
    """What may be shown about a key."""
    return {k: doc[k] for k in ("kid", "alg", "created", "claims_namespace")}


def ordered(keys: list[dict]) -> list[dict]:
    """Oldest first; the last one signs."""
    return sorted(keys, key=lambda d: (d["created"], d["kid"]))


def hasura_entry(doc: dict) -> dict:
    """One JWT secret object for the engine: the shared secret (HS256) or only the public key."""
    key = doc["secret"] if doc["alg"] == "HS256" else doc["public_pem"]
    return {"type": HASURA_TYPE[doc["alg"]], "key": key, "claims_namespace": doc["claims_namespace"]}


def engine_environment(keys: list[dict]) -> dict[str, str]:
    """``HASURA_GRAPHQL_JWT_SECRET`` for one key, ``HASURA_GRAPHQL_JWT_SECRETS`` (a list) during a rotation."""
    keys = ordered(keys)
    if not keys:
        raise KeyError_("no JWT key: add one first (berqenas token key add)")
    if len(keys) == 1:
        return {"HASURA_GRAPHQL_JWT_SECRET": json.dumps(hasura_entry(keys[0]), sort_keys=True)}
    return {"HASURA_GRAPHQL_JWT_SECRETS": json.dumps([hasura_entry(k) for k in keys], sort_keys=True)}


def write_environment_file(path, keys: list[dict]) -> str:
    """The engine's JWT configuration as an environment file (systemd EnvironmentFile / sh), mode 0600."""
    env = engine_environment(keys)
    text = "# Hasura JWT configuration written by `berqenas token config` (0600: HS256 keys are secrets).\n"
    text += "".join(f"{k}='{v}'\n" for k, v in env.items())
    path = os.fspath(path)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def default_role(tenant: str) -> str:
    return f"{tenant}_user"


def check_role(tenant: str, role: str) -> str:
    """A tenant's token may carry only that tenant's roles (``<tenant>_...``)."""
    if not _ROLE_RE.match(role or "") or not role.startswith(tenant + "_") or role == tenant + "_":
        raise KeyError_(f"role {role!r}: a role of tenant {tenant} is named {tenant}_<word> (lower case)")
    return role


def issue(keys: list[dict], tenant: str, role: str | None = None, ttl: int = 3600, now: float | None = None,
          subject: str | None = None) -> dict:
    """Sign a token with the newest key. Returns ``{token, kid, alg, exp, jti, claims}``."""
    import jwt

    keys = ordered(keys)
    if not keys:
        raise KeyError_("no JWT key: add one first (berqenas token key add)")
    doc = keys[-1]
    role = check_role(tenant, role or default_role(tenant))
    iat = int(now if now is not None else time.time())
    jti = uuid.uuid4().hex
    claims = {"x-hasura-allowed-roles": [role], "x-hasura-default-role": role, "x-hasura-tenant-id": tenant}
    payload = {"sub": subject or f"tenant:{tenant}", "iat": iat, "exp": iat + int(ttl), "jti": jti,
               doc["claims_namespace"]: claims}
    key = doc["secret"] if doc["alg"] == "HS256" else doc["private_pem"]
    token = jwt.encode(payload, key, algorithm=doc["alg"], headers={"kid": doc["kid"]})
    return {"token": token, "kid": doc["kid"], "alg": doc["alg"], "exp": iat + int(ttl), "jti": jti,
            "claims": claims}


def verify(token: str, keys: list[dict], leeway: int = 0) -> dict:
    """Verify as the engine would with this configuration: the key named by ``kid`` (else each key), its own
    algorithm only (no ``none``, no HS/RS confusion), ``exp`` required. Raises jwt.InvalidTokenError."""
    import jwt

    header = jwt.get_unverified_header(token)
    candidates = [k for k in keys if k["kid"] == header.get("kid")] or list(keys)
    last = None
    for doc in candidates:
        key = doc["secret"] if doc["alg"] == "HS256" else doc["public_pem"]
        try:
            return jwt.decode(token, key, algorithms=[doc["alg"]], leeway=leeway,
                              options={"require": ["exp", "iat"]})
        except jwt.InvalidTokenError as exc:
            last = exc
    raise last or jwt.InvalidTokenError("no key")

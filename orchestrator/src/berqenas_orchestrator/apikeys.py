"""API keys: who may run ``berqenas``, and with which scope.

- A key reads ``bq_<id>_<secret>``: ``id`` is 12 hex characters, public (lists and the audit log name a key by
  it), ``secret`` is 43 characters of URL-safe base64 (256 random bits). The text is shown once, at creation.
- The keystore (``$BERQENAS_KEYSTORE``, default ``$BERQENAS_HOME/apikeys.json``) is one JSON document,
  0600, edited under an exclusive lock (fcntl on a sibling ``.lock``) and replaced atomically. It
  holds, per key: id, name, scope, created, last_used, expires, revoked and an argon2id hash of the secret
  (argon2-cffi, the RFC 9106 / OWASP minimum profile m=19 MiB, t=2, p=1: the secret has 256 bits of entropy,
  so the hash only has to make a stolen keystore useless, not slow down guessing of a human password).
- Verification looks the key up by its public id, then verifies the hash (argon2's comparison is
  constant-time); an unknown id is verified against a dummy hash, so unknown, wrong, revoked and expired keys
  cost the same and all raise the same ``Unauthorized("unauthorized")``.
- Scopes: ``admin`` (everything, key management included), ``read`` (commands that change nothing),
  ``tenant:NAME`` (acts on tenant NAME only); what each command needs is ``authz.TABLE``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hmac
import json
import os
import re
import secrets
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

ENV_KEY = "BERQENAS_API_KEY"
ENV_KEY_FILE = "BERQENAS_API_KEY_FILE"
ENV_KEYSTORE = "BERQENAS_KEYSTORE"
KEY_RE = re.compile(r"^bq_([0-9a-f]{12})_([A-Za-z0-9_-]{43})\Z")
# anything shaped like a key (for redaction): the prefix, an id and a long secret
KEY_TEXT_RE = re.compile(r"bq_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
SCOPE_KINDS = ("admin", "read", "tenant")
MAX_KEY_FILE = 4096


class ApiKeyError(Exception):
    """A refused key-management request (bad name, scope, expiry, unknown id): a usage error."""


class Unauthorized(Exception):  # noqa: N818 - the word the user sees
    """No key, or a key that is unknown, wrong, revoked or expired: the message never says which."""

    def __init__(self, message: str = "unauthorized"):
        super().__init__(message)


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, hash_len=32, salt_len=16)


# verified in place of an unknown id's hash, so that an unknown id costs what a wrong secret costs
_DUMMY_HASH = "$argon2id$v=19$m=19456,t=2,p=1$ZRolumy4G8arUXDqH4b/vA$H+iRLWkcF4Dpd7aV/8jQAEZPaOjNXoDdIaBGOYlRwKs"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def iso(t: dt.datetime | None) -> str | None:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else None


def parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Scope:
    kind: str  # admin | read | tenant
    tenant: str | None = None

    def __str__(self) -> str:
        return f"tenant:{self.tenant}" if self.kind == "tenant" else self.kind


def parse_scope(text: str) -> Scope:
    """``admin``, ``read`` or ``tenant:NAME`` (the collection's rule, module_utils.validation.api_key_scope)."""
    from .validate import validation

    try:
        return Scope(*validation.api_key_scope(text))
    except validation.ValidationError as exc:
        raise ApiKeyError(str(exc)) from None


def key_name(value: str) -> str:
    """A key's name (the collection's rule, module_utils.validation.api_key_name)."""
    from .validate import validation

    try:
        return validation.api_key_name(value)
    except validation.ValidationError as exc:
        raise ApiKeyError(str(exc)) from None


def parse_expires(value: str | None, *, at: dt.datetime | None = None) -> dt.datetime | None:
    """ISO-8601 with a timezone, in the future (the collection's expiry rule, module_utils.validation)."""
    if value is None:
        return None
    from .validate import validation

    try:
        when = validation.expiry(value, "expires")
    except validation.ValidationError as exc:
        raise ApiKeyError(str(exc)) from None
    if when is None:
        raise ApiKeyError("invalid expires '': expected an ISO-8601 timestamp like 2026-12-31T00:00:00Z")
    when = when.replace(microsecond=0)
    if when <= (at or now()):
        raise ApiKeyError(f"invalid expires {value!r}: must be in the future")
    return when


@dataclass
class Key:
    id: str
    name: str
    scope: str
    hash: str
    created: str
    expires: str | None = None
    last_used: str | None = None
    revoked: str | None = None

    @property
    def scope_obj(self) -> Scope:
        return parse_scope(self.scope)

    def status(self, at: dt.datetime | None = None) -> str:
        if self.revoked:
            return "revoked"
        if self.expires and parse_time(self.expires) <= (at or now()):
            return "expired"
        return "active"

    def public(self, at: dt.datetime | None = None) -> dict:
        """What ``apikey list`` shows: everything but the hash."""
        d = {k: v for k, v in asdict(self).items() if k != "hash"}
        d["status"] = self.status(at)
        return d


def new_key_text() -> tuple[str, str, str]:
    """(text, id, secret) of a fresh key."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return f"bq_{key_id}_{secret}", key_id, secret


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, dir_mode: int | None = None):
    """Hold an exclusive fcntl lock on LOCK_PATH (a 0600 file, made with its directory when missing)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    if dir_mode is not None:
        with contextlib.suppress(OSError):
            os.chmod(lock_path.parent, dir_mode)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def default_path(home: Path) -> Path:
    env = os.environ.get(ENV_KEYSTORE)
    return Path(env).expanduser().resolve() if env else Path(home) / "apikeys.json"


class Keystore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")

    def exists(self) -> bool:
        return self.path.exists()

    def _read(self) -> list[Key]:
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return []
        return [Key(**k) for k in doc.get("keys", [])]

    def keys(self) -> list[Key]:
        with self._locked():
            return self._read()

    def _locked(self):
        return exclusive_lock(self.lock_path)

    @contextlib.contextmanager
    def edit(self):
        """Yield the list of keys; write it back (0600, atomically) when the block ends without an exception."""
        with self._locked():
            keys = self._read()
            yield keys
            self._write(keys)

    def _write(self, keys: list[Key]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": 1, "keys": [asdict(k) for k in keys]}, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    # -- management ------------------------------------------------------------------------
    def _new(self, keys: list[Key], name: str, scope: str, expires: dt.datetime | None) -> tuple[Key, str]:
        text, key_id, secret = new_key_text()
        while any(k.id == key_id for k in keys):  # 48-bit ids: a collision is unlikely, never silent
            text, key_id, secret = new_key_text()
        key = Key(id=key_id, name=key_name(name), scope=str(parse_scope(scope)), hash=_hasher().hash(secret),
                  created=iso(now()), expires=iso(expires))
        keys.append(key)
        return key, text

    def init(self, name: str = "admin") -> tuple[Key, str]:
        """The first admin key of a new install; refused once the keystore exists."""
        with self._locked():
            if self.path.exists():
                raise ApiKeyError(f"API keys are already set up ({self.path}): ask an admin key holder for a key")
            keys: list[Key] = []
            key, text = self._new(keys, name, "admin", None)
            self._write(keys)
        return key, text

    def create(self, name: str, scope: str, expires: dt.datetime | None = None) -> tuple[Key, str]:
        with self.edit() as keys:
            return self._new(keys, name, scope, expires)

    def revoke(self, key_id: str) -> Key:
        if not isinstance(key_id, str) or not re.match(r"^[0-9a-f]{12}\Z", key_id):
            raise ApiKeyError(f"invalid key id {key_id!r}: 12 hex digits, as `apikey list` shows")
        with self.edit() as keys:
            for k in keys:
                if hmac.compare_digest(k.id, str(key_id)):
                    if not k.revoked:
                        k.revoked = iso(now())
                    return k
        raise ApiKeyError(f"revoke: no API key with id {key_id}")

    # -- verification ----------------------------------------------------------------------
    def authenticate(self, text: str | None, *, at: dt.datetime | None = None) -> Key:
        """The active key ``text`` names, its last_used updated; else ``Unauthorized`` (never saying why)."""
        from argon2.exceptions import Argon2Error, InvalidHashError

        m = KEY_RE.match(text if isinstance(text, str) else "")
        key_id, secret = (m.group(1), m.group(2)) if m else ("", "x" * 43)
        with self._locked():
            keys = self._read()
            found = next((k for k in keys if hmac.compare_digest(k.id, key_id)), None)
            try:
                ok = _hasher().verify(found.hash if found else _DUMMY_HASH, secret)
            except (Argon2Error, InvalidHashError):
                ok = False
            if not (ok and m and found is not None) or found.status(at) != "active":
                raise Unauthorized()
            found.last_used = iso(at or now())
            self._write(keys)
        return found


def read_key_file(path: str) -> str:
    """The key held in FILE, which must be a regular file of mode 0600 (or stricter) owned by us."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ApiKeyError(f"--api-key-file {path}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ApiKeyError(f"--api-key-file {path}: not a regular file")
    with os.fdopen(fd, "rb") as f:
        if st.st_mode & 0o177:
            raise ApiKeyError(f"--api-key-file {path}: mode {oct(stat.S_IMODE(st.st_mode))} is too open "
                              "(chmod 600 it)")
        if st.st_uid != os.geteuid():
            raise ApiKeyError(f"--api-key-file {path}: not owned by this user")
        data = f.read(MAX_KEY_FILE + 1)
    if len(data) > MAX_KEY_FILE:
        raise ApiKeyError(f"--api-key-file {path}: too large to hold a key")
    return data.decode("utf-8", "replace").strip()


def write_key_file(path: Path, text: str) -> Path:
    """Write a key to a new 0600 file (refusing to overwrite one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    return path

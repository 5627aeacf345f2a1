"""The audit log: one JSON line per command, allowed or denied, chained by SHA-256.

- ``$BERQENAS_AUDIT_LOG``, default ``$BERQENAS_HOME/audit/audit.log`` (0600 in a 0700 directory). Each line:
  ``seq``, ``time``, ``key_id`` (never the key), ``scope``, ``command``, ``args`` (secrets redacted), ``outcome``
  (ok, failed, denied, usage, cancelled, timeout), ``exit_code``, ``duration_s``, ``prev`` = SHA-256 (hex) of the
  previous line's bytes without its newline (``"0" * 64`` for the first line).
- Appended under an exclusive lock (the hash chain needs the previous line), with ONE ``write()`` of the whole
  line on an ``O_APPEND`` descriptor, then ``fsync``: concurrent commands never interleave a line.
- ``audit.head`` beside it holds the last line's seq and hash (written after the line, atomically), so that
  ``verify`` also catches an edited last line and a truncated tail. Anyone who can rewrite both files can
  forge a consistent history: ship the lines off the host (journald, syslog) where that matters.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .apikeys import KEY_TEXT_RE, exclusive_lock, iso, now, parse_time

GENESIS = "0" * 64
REDACTED = "***"
# parameter names whose values are secrets (paths to secret files are not: ``*_file`` stays visible)
SECRET_PARAM_RE = re.compile(r"(password|passwd|secret|token|private|api_key|apikey|jwt|credential_value)",
                             re.IGNORECASE)
MAX_VALUE = 256


class AuditError(Exception):
    pass


ENV_LOG = "BERQENAS_AUDIT_LOG"


def log_path(home: Path) -> Path:
    """``$BERQENAS_AUDIT_LOG``, else ``HOME/audit/audit.log``."""
    env = os.environ.get(ENV_LOG)
    return Path(env).expanduser().resolve() if env else Path(home) / "audit" / "audit.log"


def _digest(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def redact_value(value):
    """Key-shaped text replaced, long values cut (an argument is evidence, not a payload store)."""
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, str):
        value = KEY_TEXT_RE.sub("bq_" + REDACTED, value)
        if len(value) > MAX_VALUE:
            value = value[:MAX_VALUE] + f"...({len(value)} chars)"
        return value
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_value(str(value))


def redact_params(params: dict, secret_names=()) -> dict:
    out = {}
    for name, value in sorted(params.items()):
        secret = (SECRET_PARAM_RE.search(name) and not name.endswith("_file")) or name in secret_names
        out[name] = REDACTED if secret and value not in (None, False, "", ()) else redact_value(value)
    return out


def redact_argv(argv: list[str]) -> list[str]:
    """Raw arguments (for a command that never parsed): values after secret-looking options hidden."""
    out, hide = [], False
    for a in argv:
        if hide:
            out.append(REDACTED)
            hide = False
            continue
        opt, eq, _ = a.partition("=")
        secret = opt.startswith("--") and SECRET_PARAM_RE.search(opt) and not opt.endswith("-file")
        if secret and eq:
            out.append(f"{opt}={REDACTED}")
        else:
            out.append(redact_value(a))
            hide = bool(secret)
    return out


class AuditLog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.stem + ".head")
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")

    def _locked(self):
        return exclusive_lock(self.lock_path, dir_mode=0o700)

    def _last_line(self) -> bytes | None:
        """The last complete line of the log (read backwards from the end), or None when empty."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            if end == 0:
                return None
            buf, pos = b"", end
            while pos > 0:
                step = min(8192, pos)
                pos -= step
                f.seek(pos)
                buf = f.read(step) + buf
                body = buf[:-1] if buf.endswith(b"\n") else buf
                nl = body.rfind(b"\n")
                if nl >= 0:
                    return body[nl + 1:]
            return buf[:-1] if buf.endswith(b"\n") else buf

    def append(self, record: dict) -> dict:
        """Write one line (seq, prev added); returns the record as written."""
        with self._locked():
            last = self._last_line()
            if last is None:
                seq, prev = 1, GENESIS
            else:
                try:
                    seq = int(json.loads(last)["seq"]) + 1
                except (ValueError, KeyError, TypeError):
                    seq = -1  # a damaged last line: still chained to, and `verify` reports it
                prev = _digest(last)
            rec = {"seq": seq, "time": record.get("time") or iso(now()), **record, "prev": prev}
            rec["seq"], rec["prev"] = seq, prev
            line = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.fchmod(fd, 0o600)
                written = os.write(fd, line)  # one write: O_APPEND places it whole at the end
                if written != len(line):
                    raise AuditError(f"audit log {self.path}: short write ({written} of {len(line)} bytes)")
                os.fsync(fd)
            finally:
                os.close(fd)
            self._write_head(seq, _digest(line[:-1]))
        return rec

    def _write_head(self, seq: int, digest: str) -> None:
        tmp = self.head_path.with_name(f".{self.head_path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps({"seq": seq, "sha256": digest}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.head_path)

    def lines(self) -> list[bytes]:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        return data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n")

    def records(self) -> list[dict]:
        out = []
        for raw in self.lines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(raw))
        return out

    def verify(self) -> VerifyResult:
        with self._locked():
            lines = self.lines()
            try:
                head = json.loads(self.head_path.read_text())
            except FileNotFoundError:
                head = None
            except ValueError:
                head = {"seq": None, "sha256": None}
        res = VerifyResult(lines=len(lines))
        prev = GENESIS
        for n, raw in enumerate(lines, start=1):
            try:
                rec = json.loads(raw)
            except ValueError:
                res.problems.append(f"line {n}: not JSON")
                prev = _digest(raw)
                continue
            if rec.get("prev") != prev:
                res.problems.append(f"line {n} (seq {rec.get('seq')}): previous-line hash does not match "
                                    "(a line before it was edited, removed or moved)")
            if rec.get("seq") != n:
                res.problems.append(f"line {n}: seq {rec.get('seq')}, expected {n} (lines removed or reordered)")
            prev = _digest(raw)
        if lines and head is None:
            res.problems.append(f"{self.head_path.name} is missing")
        elif head is not None and (head.get("seq") != len(lines) or head.get("sha256") != (prev if lines else None)):
            if not lines and head.get("seq") is not None:
                res.problems.append("the log is empty but its head records earlier lines (log removed or truncated)")
            else:
                res.problems.append(f"the last line does not match {self.head_path.name} (head seq "
                                    f"{head.get('seq')}, log has {len(lines)} lines): the tail was edited or "
                                    "removed")
        return res


@dataclass
class VerifyResult:
    lines: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def select(records: list[dict], since: str | None = None, key: str | None = None) -> list[dict]:
    since_t = parse_time(since) if since else None
    out = []
    for r in records:
        if key and r.get("key_id") != key:
            continue
        if since_t is not None:
            try:
                if parse_time(r.get("time")) < since_t:
                    continue
            except (TypeError, ValueError):
                continue
        out.append(r)
    return out

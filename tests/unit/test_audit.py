"""berqenas_orchestrator.audit: the hash chain, its head, redaction, one write per line under concurrency."""

import json
import multiprocessing
import os
import stat

import pytest
from berqenas_orchestrator import audit
from berqenas_orchestrator.audit import AuditLog

pytestmark = pytest.mark.unit

KEY = "bq_0123456789ab_" + "S" * 43


def _log(tmp_path, n=5):
    log = AuditLog(tmp_path / "audit" / "audit.log")
    for i in range(n):
        log.append({"key_id": "0123456789ab", "command": f"tenant create t{i}", "outcome": "ok", "exit_code": 0})
    return log


def test_lines_are_chained_0600_and_verify(tmp_path):
    log = _log(tmp_path)
    assert stat.S_IMODE(os.stat(log.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(log.path.parent).st_mode) == 0o700
    recs = log.records()
    assert [r["seq"] for r in recs] == [1, 2, 3, 4, 5]
    assert recs[0]["prev"] == audit.GENESIS
    lines = log.lines()
    assert recs[3]["prev"] == audit._digest(lines[2])
    assert log.verify().ok, log.verify().problems


def _rewrite(log, lines):
    log.path.write_bytes(b"".join(raw + b"\n" for raw in lines))


def test_verify_detects_an_edited_line(tmp_path):
    log = _log(tmp_path)
    lines = log.lines()
    lines[1] = lines[1].replace(b"tenant create t1", b"tenant create tX")
    _rewrite(log, lines)
    res = log.verify()
    assert not res.ok and any("line 3" in p for p in res.problems), res.problems


def test_verify_detects_an_edited_last_line(tmp_path):
    log = _log(tmp_path)
    lines = log.lines()
    lines[-1] = lines[-1].replace(b'"outcome":"ok"', b'"outcome":"denied"')
    _rewrite(log, lines)
    res = log.verify()
    assert not res.ok and any("last line" in p for p in res.problems), res.problems


def test_verify_detects_a_removed_line(tmp_path):
    log = _log(tmp_path)
    lines = log.lines()
    del lines[2]
    _rewrite(log, lines)
    res = log.verify()
    assert not res.ok and any("line 3" in p for p in res.problems), res.problems


def test_verify_detects_a_removed_tail_and_a_removed_log(tmp_path):
    log = _log(tmp_path)
    _rewrite(log, log.lines()[:-1])
    assert not log.verify().ok
    log.path.unlink()
    res = log.verify()
    assert not res.ok and "empty" in res.problems[0]


def test_verify_detects_reordered_lines(tmp_path):
    log = _log(tmp_path)
    lines = log.lines()
    lines[1], lines[2] = lines[2], lines[1]
    _rewrite(log, lines)
    res = log.verify()
    assert not res.ok and any("seq" in p for p in res.problems), res.problems


def test_verify_detects_a_recomputed_chain_without_the_head(tmp_path):
    """Recomputing every prev after an edit fools the chain, not the head file."""
    log = _log(tmp_path, 3)
    recs = log.records()
    recs[0]["command"] = "nothing happened"
    prev, out = audit.GENESIS, []
    for r in recs:
        r["prev"] = prev
        raw = json.dumps(r, sort_keys=True, separators=(",", ":")).encode()
        out.append(raw)
        prev = audit._digest(raw)
    _rewrite(log, out)
    assert not log.verify().ok


def test_redaction():
    params = {"password": "hunter2", "password_file": "/tmp/pw", "admin_secret": "s", "name": "acme",
              "jwt_key": "k", "token": None, "note": f"key {KEY} here", "tables": ["[dbo].[x]"], "big": "x" * 1000}
    out = audit.redact_params(params)
    assert out["password"] == out["admin_secret"] == out["jwt_key"] == "***"
    assert out["password_file"] == "/tmp/pw" and out["name"] == "acme" and out["token"] is None
    assert KEY not in json.dumps(out) and "bq_***" in out["note"]
    assert len(out["big"]) < 300
    argv = ["remotedb", "add", "--password", "p1", "--admin-secret=p2", "--password-file", "/f", KEY]
    red = audit.redact_argv(argv)
    assert "p1" not in red and "--admin-secret=***" in red and "/f" in red and KEY not in red


def test_select_by_key_and_time(tmp_path):
    log = AuditLog(tmp_path / "a.log")
    log.append({"time": "2026-12-01T00:00:00Z", "key_id": "aaaaaaaaaaaa", "command": "x"})
    log.append({"time": "2026-12-02T00:00:00Z", "key_id": "bbbbbbbbbbbb", "command": "y"})
    recs = log.records()
    assert [r["command"] for r in audit.select(recs, key="bbbbbbbbbbbb")] == ["y"]
    assert [r["command"] for r in audit.select(recs, since="2026-12-01T12:00:00Z")] == ["y"]
    assert len(audit.select(recs)) == 2


def _writer(path, n, tag):
    log = AuditLog(path)
    for i in range(n):
        log.append({"command": f"{tag}-{i}", "args": {"pad": tag * 3000}})  # lines far over PIPE_BUF


def test_concurrent_writers_never_interleave_and_keep_the_chain(tmp_path):
    path = tmp_path / "audit.log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, 25, tag)) for tag in "abcd"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    log = AuditLog(path)
    lines = log.lines()
    assert len(lines) == 100
    for raw in lines:
        rec = json.loads(raw)  # a torn or interleaved line would not parse
        assert rec["args"]["pad"] == rec["command"][0] * 3000
    assert log.verify().ok, log.verify().problems

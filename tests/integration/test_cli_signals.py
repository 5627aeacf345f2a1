"""A cancelled command still leaves its audit line: SIGTERM to a real `berqenas` process (blocked in its body)
ends it with exit code 130 and an audit line ``outcome: cancelled, exit_code: 130, signal: SIGTERM`` that keeps
the hash chain; SIGTERM during a playbook run asks ansible-runner to stop ansible-playbook (the run ends canceled,
130) instead of killing the CLI under it, and no ansible task worker outlives the run."""

import json
import os
import signal
import subprocess
import threading
import time

import pytest
from berqenas_orchestrator import apikeys, audit, runner
from berqenas_orchestrator import cli as cli_module
from berqenas_orchestrator.state import StateStore

from tests.support.env import VENV_BIN

pytestmark = pytest.mark.cli


def _wait(cond, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _running(marker: bytes) -> list[int]:
    """Processes whose command line holds MARKER (a path only this test uses); zombies excluded."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmd and state != b"Z":
            pids.append(int(pid))
    return pids


def _blocked_in_pipe_read(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read().endswith("pipe_read")  # pipe_read, anon_pipe_read (newer kernels)
    except OSError:
        return False


def test_sigterm_writes_the_audit_line(ansible_env, tmp_path):
    home = tmp_path / "home"
    inv = home / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text("all:\n  hosts:\n    localhost: {ansible_connection: local}\n")
    with StateStore(inv).edit("tenants.yml") as d:
        d["berqenas_tenants"] = [{"name": "acme"}]
    store = apikeys.Keystore(home / "apikeys.json")
    key, text = store.init("signals")
    env = {k: v for k, v in ansible_env.items()
           if k not in (apikeys.ENV_KEY_FILE, apikeys.ENV_KEYSTORE, audit.ENV_LOG)}
    env.update({apikeys.ENV_KEY: text, "BERQENAS_HOME": str(home)})
    # remotedb add --password-file - reads the password from stdin: the command blocks in its body
    proc = subprocess.Popen([os.path.join(VENV_BIN, "berqenas"), "remotedb", "add", "erp", "--tenant", "acme",
                             "--host", "sql.example.com", "--user", "sa", "--database", "erp", "--password-file", "-"],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
    try:
        # in the command's body: blocked reading the password from its stdin pipe (the kernel's wait channel)
        _wait(lambda: _blocked_in_pipe_read(proc.pid) or proc.poll() is not None, what="the command to read stdin")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert b"Cancelled." in err and b"Traceback" not in err
    lines = (home / "audit" / "audit.log").read_text().splitlines()
    last = json.loads(lines[-1])
    assert (last["command"], last["outcome"], last["exit_code"], last["signal"], last["key_id"]) == (
        "remotedb add", "cancelled", 130, "SIGTERM", key.id)
    assert text not in "\n".join(lines)
    assert audit.AuditLog(home / "audit" / "audit.log").verify().ok
    assert not (inv / "group_vars" / "all" / "remotedbs.yml").exists()  # nothing written


def test_sigterm_during_a_playbook_cancels_the_run(ansible_env, tmp_path, monkeypatch):
    book = tmp_path / "wait.yml"
    book.write_text("- name: Wait\n  hosts: localhost\n  gather_facts: false\n  tasks:\n"
                    "    - name: Pause\n      ansible.builtin.pause:\n        seconds: 600\n")
    hosts = tmp_path / "hosts.yml"
    hosts.write_text("all:\n  hosts:\n    localhost: {ansible_connection: local}\n")
    for k, v in ansible_env.items():
        monkeypatch.setenv(k, v)
    started = threading.Event()

    def progress(line):
        if line.startswith("PLAY"):
            started.set()

    def terminate():
        if started.wait(200):
            os.kill(os.getpid(), signal.SIGTERM)  # the CLI's handler, in this (the main) thread

    previous = signal.signal(signal.SIGTERM, cli_module._on_sigterm)
    t0 = time.monotonic()
    try:
        threading.Thread(target=terminate, daemon=True).start()
        # the runner's own timeout is the deadline: a cancel that does not work ends the run as "timeout" (not hang)
        result = runner.run_playbook(book, inventory=hosts, progress=progress, timeout=240)
        assert started.is_set()
        assert (result.status, result.exit_code) == ("canceled", 130)
        assert time.monotonic() - t0 < 240  # neither the 600 s pause nor the runner's timeout ran out
        assert runner.cancel_runs() is False  # no run left registered
        # ansible-core's task worker (its own session, out of ansible-runner's kill) is gone too
        _wait(lambda: not _running(str(book).encode()), timeout=60, what="the task worker to end")
    finally:
        signal.signal(signal.SIGTERM, previous)
        for pid in _running(str(book).encode()):  # never leave one behind, even when an assertion failed
            os.kill(pid, signal.SIGKILL)

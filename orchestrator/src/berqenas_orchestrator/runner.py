"""The one adapter between the orchestrator and Ansible: ansible-runner, run in-process.

- a private data dir made for each run (0700) and deleted afterwards; runner's env files suppressed; with
  ``keep_dir`` (``berqenas --keep-artifacts DIR``) the run's events are written too and the whole dir is copied
  to a new 0700 directory under DIR first (files 0600), for debugging;
- ``quiet=True``: Ansible's own output never reaches stdout (kept clean for ``--json``);
- the environment is an allow-list (runner copies os.environ into the child and into its artifacts'
  ``command`` file, so only what is listed here may exist while the run is prepared);
- the venv's bin first on PATH so the child ansible-playbook is the one installed with us;
- extra vars are written by us as YAML with every string tagged ``!unsafe`` (inputs are data, never
  templates) and passed as ``-e @file``; never secrets;
- events become progress lines on stderr; Ctrl-C cancels the run (exit 130), a timeout gives 124;
- what a playbook publishes with ``ansible.builtin.set_stats: data: {berqenas_result: ...}`` is returned.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import paths

ENV_ALLOW = ("LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ", "USER", "LOGNAME", "TMPDIR", "BERQENAS_HOME",
             "ANSIBLE_HOME", "ANSIBLE_LOCAL_TEMP", "ANSIBLE_CONFIG", "ANSIBLE_VAULT_PASSWORD_FILE",
             "ANSIBLE_ROLES_PATH", "ANSIBLE_INVENTORY_UNPARSED_FAILED", "SSH_AUTH_SOCK")

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_TIMEOUT, EXIT_CANCEL = 0, 1, 2, 124, 130


class _Unsafe(str):
    """A string the YAML dumper writes with the ``!unsafe`` tag."""


class _UnsafeDumper(yaml.SafeDumper):
    pass


def _unsafe_repr(dumper, data):
    return dumper.represent_scalar("!unsafe", str(data), style="'")


_UnsafeDumper.add_representer(_Unsafe, _unsafe_repr)


def mark_unsafe(value: Any) -> Any:
    """Tag every string (keys stay plain) so Ansible never templates it."""
    if isinstance(value, str):
        return _Unsafe(value)
    if isinstance(value, dict):
        return {str(k): mark_unsafe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mark_unsafe(v) for v in value]
    return value


def dump_unsafe_yaml(data: Any) -> str:
    return yaml.dump(mark_unsafe(data), Dumper=_UnsafeDumper, default_flow_style=False, sort_keys=True,
                     allow_unicode=True)


@dataclass
class RunResult:
    status: str
    rc: int
    data: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    changed: int = 0
    stats: dict = field(default_factory=dict)
    diffs: list[dict] = field(default_factory=list)
    kept: str | None = None  # the copy of the private data dir (run_playbook's keep_dir), when one was made

    @property
    def answer(self) -> dict:
        """What the playbook published with set_stats under ``berqenas_result`` ({} when nothing)."""
        return self.data.get("berqenas_result") or {}

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0

    @property
    def exit_code(self) -> int:
        if self.ok:
            return EXIT_OK
        if self.status == "timeout":
            return EXIT_TIMEOUT
        if self.status == "canceled":
            return EXIT_CANCEL
        return EXIT_FAIL


def _clean_env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: os.environ[k] for k in ENV_ALLOW if k in os.environ}
    env["PATH"] = os.pathsep.join([paths.venv_bin(), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin",
                                   "/sbin", "/bin"])
    env["HOME"] = os.environ.get("HOME", "/root")
    env["ANSIBLE_COLLECTIONS_PATH"] = paths.collections_path()
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_RETRY_FILES_ENABLED"] = "False"
    env["ANSIBLE_DEPRECATION_WARNINGS"] = "False"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


@contextlib.contextmanager
def _only_env(env: dict[str, str]):
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def progress_line(event: dict) -> str | None:
    kind = event.get("event", "")
    data = event.get("event_data", {})
    host = data.get("host") or data.get("remote_addr") or ""
    task = data.get("task") or ""
    if kind == "playbook_on_play_start":
        return f"PLAY {data.get('play', '')}"
    if kind == "runner_on_ok":
        res = data.get("res") or {}
        return f"  {'changed' if res.get('changed') else 'ok':8} {host}: {task}"
    if kind == "runner_on_failed" and not data.get("ignore_errors"):
        return f"  {'failed':8} {host}: {task}: {event_message(data.get('res') or {})}"
    if kind == "runner_on_unreachable":
        return f"  {'unreach':8} {host}: {task}: {event_message(data.get('res') or {})}"
    if kind == "runner_on_skipped":
        return None
    return None


def event_message(res: dict) -> str:
    if res.get("_ansible_no_log"):
        return "(output hidden: no_log)"
    msg = res.get("msg") or res.get("stderr") or res.get("reason") or ""
    return str(msg).strip().splitlines()[0] if str(msg).strip() else "failed"


def record_event(result: RunResult, event: dict, diff: bool) -> None:
    """Count, collect failures, diffs and the published answer from one Ansible event (ansible-runner's, or the
    same event as an AWX job event)."""
    kind = event.get("event")
    data = event.get("event_data") or {}
    res = data.get("res") or {}
    if kind == "runner_on_ok" and res.get("changed"):
        result.changed += 1
        if diff and res.get("diff") and not res.get("_ansible_no_log"):
            for d in res["diff"] if isinstance(res["diff"], list) else [res["diff"]]:
                if isinstance(d, dict) and (d.get("before") or d.get("after")):
                    result.diffs.append({"task": data.get("task", ""), "host": data.get("host", ""),
                                         "before": d.get("before", ""), "after": d.get("after", "")})
    if kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
        result.failures.append(f"{data.get('host', '')}: {data.get('task', '')}: {event_message(res)}")
    if kind == "playbook_on_stats":
        if "artifact_data" in data:
            result.data = dict(data.get("artifact_data") or {})
        result.stats = {k: data.get(k) for k in ("ok", "changed", "failures", "dark", "skipped")}


_ACTIVE: list[dict] = []  # the cancel flags of the playbook runs under way in this process


def cancel_runs() -> bool:
    """Ask every playbook run under way to stop (ansible-runner then ends ansible-playbook and the run ends
    ``canceled``, exit code 130); True when there was one. Safe from a signal handler."""
    for flag in list(_ACTIVE):
        flag["flag"] = True
    return bool(_ACTIVE)


def _children() -> dict[int, list[int]]:
    """ppid -> pids of every process (from /proc)."""
    out: dict[int, list[int]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        out.setdefault(ppid, []).append(int(pid))
    return out


def _kill_workers() -> None:
    """SIGKILL the processes below this process's ansible-playbook children: ansible-core's task workers call
    setsid(), so ansible-runner's SIGKILL of ansible-playbook's process group on a cancel or timeout misses them and
    a worker would go on running its task (a query, a pause) after the CLI ended."""
    tree = _children()
    for child in tree.get(os.getpid(), []):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"ansible-playbook" not in f.read():
                    continue
        except OSError:
            continue
        todo = list(tree.get(child, []))
        while todo:
            pid = todo.pop()
            todo.extend(tree.get(pid, []))
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def keep_private_data_dir(pdd: str, keep_dir: str | Path, playbook: Path) -> str:
    """Copy the private data dir PDD (extra vars file, artifacts/ID/{command,stdout,status,rc,job_events/}) into a
    new directory ``KEEP_DIR/<UTC time>-<playbook>-<random>``: KEEP_DIR is made 0700 when missing, the copy's
    directories are 0700 and its files 0600 from their creation (never wider, not even for a moment); symlinks and
    special files are not copied. Returns the copy's path."""
    os.makedirs(keep_dir, mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = tempfile.mkdtemp(prefix=f"{stamp}-{playbook.stem}-", dir=keep_dir)  # 0700
    for base, dirs, files in os.walk(pdd):
        rel = os.path.relpath(base, pdd)
        target = dest if rel == "." else os.path.join(dest, rel)
        for d in dirs:
            if not os.path.islink(os.path.join(base, d)):
                os.mkdir(os.path.join(target, d), 0o700)
        for name in files:
            src = os.path.join(base, name)
            try:
                fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:  # a symlink, or gone
                continue
            with os.fdopen(fd_in, "rb") as fin:
                if not stat.S_ISREG(os.fstat(fin.fileno()).st_mode):
                    continue
                fd_out = os.open(os.path.join(target, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                 0o600)
                with os.fdopen(fd_out, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
    return dest


def run_playbook(playbook: str | Path, *, inventory: str | Path | list | None, extravars: dict | None = None,
                 check: bool = False, diff: bool = False, limit: str | None = None,
                 verbosity: int = 0, timeout: int | None = None, progress: Callable[[str], None] | None = None,
                 env: dict[str, str] | None = None, keep_dir: str | Path | None = None) -> RunResult:
    """Run one playbook of the collection; never raises for a failed play (see RunResult). With KEEP_DIR the
    run's events are written too and its private data dir is copied there (keep_private_data_dir) before it is
    deleted; ``result.kept`` is the copy's path."""
    import ansible_runner  # imported lazily: keeps `berqenas --help` fast

    playbook = Path(playbook) if os.path.isabs(str(playbook)) else paths.playbook(str(playbook))
    pdd = tempfile.mkdtemp(prefix="berqenas-run-")
    os.chmod(pdd, 0o700)
    cancelled = {"flag": False}
    result = RunResult(status="unknown", rc=-1)

    def on_event(event: dict) -> bool:
        record_event(result, event, diff)
        if progress:
            line = progress_line(event)
            if line:
                progress(line)
        return keep_dir is not None  # events reach the disk only when the run is kept

    def on_sigint(signum, frame):
        cancelled["flag"] = True

    started = time.monotonic()

    def cancel_callback() -> bool:
        # ansible-runner checks this, then its own timeout, then SIGKILLs ansible-playbook's process group
        if cancelled["flag"] or (timeout and time.monotonic() - started > timeout):
            _kill_workers()
        return cancelled["flag"]

    cmdline = []
    if extravars:
        varfile = os.path.join(pdd, "berqenas-vars.yml")
        fd = os.open(varfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(dump_unsafe_yaml(extravars))
        cmdline += ["-e", "@" + varfile]
    if check:
        cmdline.append("--check")
    if diff:
        cmdline.append("--diff")
    if limit:
        cmdline += ["--limit", limit]
    previous = signal.signal(signal.SIGINT, on_sigint)
    _ACTIVE.append(cancelled)
    try:
        with _only_env(_clean_env(env)):
            r = ansible_runner.run(
                private_data_dir=pdd, playbook=str(playbook), inventory=[str(i) for i in inventory] if isinstance(
                    inventory, list) else (str(inventory) if inventory else None),
                cmdline=" ".join(_shell_quote(c) for c in cmdline) or None, quiet=True, verbosity=verbosity or None,
                event_handler=on_event, cancel_callback=cancel_callback, timeout=timeout,
                suppress_env_files=True, project_dir=str(playbook.parent), json_mode=False,
                settings={"suppress_ansible_output": True},
            )
        result.status = "canceled" if cancelled["flag"] else r.status
        result.rc = r.rc if r.rc is not None else -1
    finally:
        _ACTIVE.remove(cancelled)
        signal.signal(signal.SIGINT, previous)
        try:
            if keep_dir is not None:
                result.kept = keep_private_data_dir(pdd, keep_dir, playbook)
                print(f"runner files of {playbook.name} kept in {result.kept}", file=sys.stderr)
        except OSError as exc:  # the run's own outcome stands; the operator learns why nothing was kept
            print(f"could not keep the runner files of {playbook.name} in {keep_dir}: {exc}", file=sys.stderr)
        finally:
            shutil.rmtree(pdd, ignore_errors=True)
    return result


def _shell_quote(s: str) -> str:
    # runner splits cmdline with shlex; our values are paths and simple words, quoted for safety
    import shlex

    return shlex.quote(s)

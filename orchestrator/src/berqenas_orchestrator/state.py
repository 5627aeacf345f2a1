"""Desired state: inventory variable files under ``$BERQENAS_HOME/inventory`` (or an operator's inventory).

Files are YAML the operator may keep in git and AWX may read. The CLI edits them under an exclusive
lock (fcntl on a sibling ``.lock`` file), writes every string value tagged ``!unsafe`` and replaces files
atomically. Validation happens before an edit is written (callers validate with the collection's code).
``applying(*names)`` wraps "write desired state, then run the playbook": when the block fails, each file goes
back to what it held before (unless another edit changed it meanwhile, which is then left alone).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

import yaml

from .runner import dump_unsafe_yaml


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml: ~10x faster on 1,000 peers (status)
    pass


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
_Loader.add_constructor("!vault", lambda loader, node: {"__vault__": loader.construct_scalar(node)})


# what this process last wrote to each file (so a rollback never clobbers another writer's later edit)
_WRITTEN: dict[Path, bytes] = {}


class StateStore:
    def __init__(self, inventory_dir: Path):
        self.dir = Path(inventory_dir)
        self.vars_dir = self.dir / "group_vars" / "all"

    def path(self, name: str) -> Path:
        return self.vars_dir / name

    def load(self, name: str) -> dict:
        p = self.path(name)
        if not p.exists():
            return {}
        with open(p, encoding="utf-8") as f:
            return yaml.load(f, Loader=_Loader) or {}  # noqa: S506 - safe loader subclass

    def _read(self, name: str) -> bytes | None:
        try:
            return self.path(name).read_bytes()
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def _locked(self, name: str):
        self.vars_dir.mkdir(parents=True, exist_ok=True)
        with open(self.vars_dir / f".{name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _write(self, name: str, content: bytes | None) -> None:
        if content is None:
            self.path(name).unlink(missing_ok=True)
            _WRITTEN.pop(self.path(name), None)
            return
        tmp = self.path(name).with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, self.path(name))
        _WRITTEN[self.path(name)] = content

    @contextlib.contextmanager
    def edit(self, name: str):
        """Yield the file's data as a dict; write it back (atomically, 0600, !unsafe) if no exception."""
        with self._locked(name):
            data = self.load(name)
            yield data
            self._write(name, ("# Desired state written by `berqenas`; values are data (!unsafe), never templates.\n"
                               + dump_unsafe_yaml(data)).encode("utf-8"))

    @contextlib.contextmanager
    def applying(self, *names: str):
        """Run the block (edits of NAMES, then the apply); if it raises, restore NAMES as they were before it."""
        before = {}
        for name in names:
            with self._locked(name):
                before[name] = self._read(name)
        try:
            yield
        except BaseException:
            for name in names:
                with self._locked(name):
                    now = self._read(name)
                    if now != before[name] and now == _WRITTEN.get(self.path(name)):
                        self._write(name, before[name])
            raise

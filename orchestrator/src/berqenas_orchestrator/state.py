"""Desired state: inventory variable files under ``$BERQENAS_HOME/inventory`` (or an operator's inventory).

Files are YAML the operator may keep in git and AWX may read. The CLI edits them under an exclusive
lock (fcntl on a sibling ``.lock`` file), writes every string value tagged ``!unsafe`` and replaces files
atomically. Validation happens before an edit is written (callers validate with the collection's code).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

import yaml

from .runner import dump_unsafe_yaml


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
_Loader.add_constructor("!vault", lambda loader, node: {"__vault__": loader.construct_scalar(node)})


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

    @contextlib.contextmanager
    def edit(self, name: str):
        """Yield the file's data as a dict; write it back (atomically, 0600, !unsafe) if no exception."""
        self.vars_dir.mkdir(parents=True, exist_ok=True)
        lock_path = self.vars_dir / f".{name}.lock"
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self.load(name)
            yield data
            tmp = self.path(name).with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("# Desired state written by `berqenas`; values are data (!unsafe), never templates.\n")
                f.write(dump_unsafe_yaml(data))
            os.replace(tmp, self.path(name))

"""Where the collection, its playbooks and the Python environment are."""

import os
import sys
from pathlib import Path


def collection_root() -> Path:
    """The berqenas.platform collection (the repository root in a checkout)."""
    env = os.environ.get("BERQENAS_COLLECTION_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[3]


def playbook(name: str) -> Path:
    path = collection_root() / "playbooks" / name
    if not path.is_file():
        raise FileNotFoundError(f"playbook not found: {path}")
    return path


def collections_path() -> str:
    """ANSIBLE_COLLECTIONS_PATH for child runs: the caller's, else the checkout's .collections."""
    env = os.environ.get("ANSIBLE_COLLECTIONS_PATH") or os.environ.get("ANSIBLE_COLLECTIONS_PATHS")
    local = collection_root() / ".collections"
    parts = [p for p in (env or "").split(os.pathsep) if p]
    if local.is_dir() and str(local) not in parts:
        parts.insert(0, str(local))
    return os.pathsep.join(parts)


def venv_bin() -> str:
    return str(Path(sys.executable).parent)


def default_home() -> Path:
    return Path(os.environ.get("BERQENAS_HOME") or ".berqenas").expanduser().resolve()

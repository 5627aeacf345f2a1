"""Paths and environment shared by the test harness, the benchmarks and .ci/run."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(REPO, ".venv", "bin")
COLLECTIONS = os.path.join(REPO, ".collections")
PYTHON = os.path.join(VENV_BIN, "python")


def setup_import_path():
    """Make ``ansible_collections.berqenas.platform`` importable (install.sh links it)."""
    if not os.path.isdir(os.path.join(COLLECTIONS, "ansible_collections", "berqenas", "platform")):
        raise RuntimeError("collections not installed: run `make install` (scripts/install.sh) first")
    if COLLECTIONS not in sys.path:
        sys.path.insert(0, COLLECTIONS)


def ansible_env(home):
    """Environment for ansible-playbook / molecule children: venv first, nothing under /root."""
    env = dict(os.environ)
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env["ANSIBLE_COLLECTIONS_PATH"] = COLLECTIONS
    env["ANSIBLE_HOME"] = os.path.join(home, ".ansible")
    env["ANSIBLE_LOCAL_TEMP"] = os.path.join(home, ".ansible", "tmp")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_HOST_KEY_CHECKING"] = "False"
    env["ANSIBLE_PYTHON_INTERPRETER"] = PYTHON
    env["HOME"] = home
    return env

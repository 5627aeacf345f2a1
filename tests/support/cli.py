"""Run the real `berqenas` command (the venv's console script) as a user would."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass

from tests.support.env import VENV_BIN


@dataclass
class CliResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def json(self):
        return json.loads(self.stdout)


def session_key_env(test_home: str) -> dict:
    """An admin key for the whole test session: one keystore and one audit log under TEST_HOME, whatever
    $BERQENAS_HOME a test picks (what `berqenas apikey init --save` does, through the same module)."""
    from berqenas_orchestrator import apikeys

    keystore = os.path.join(test_home, "security", "apikeys.json")
    key_file = os.path.join(test_home, "security", "admin.key")
    if not os.path.exists(key_file):
        _, text = apikeys.Keystore(keystore).init("test-session")
        apikeys.write_key_file(key_file, text)
    return {apikeys.ENV_KEYSTORE: keystore, apikeys.ENV_KEY_FILE: key_file,
            "BERQENAS_AUDIT_LOG": os.path.join(test_home, "security", "audit.log")}


class Cli:
    def __init__(self, env: dict, home: str, prefix=None):
        self.env = dict(env, BERQENAS_HOME=home)
        self.home = home
        self.prefix = prefix or (lambda: [])  # a callable giving argv to run berqenas under (a namespace wrapper)

    def __call__(self, *args, check=True, timeout=600, input=None) -> CliResult:
        proc = subprocess.run([*self.prefix(), os.path.join(VENV_BIN, "berqenas"), *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, input=input, cwd="/")
        res = CliResult(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"berqenas {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                                 f"stderr:\n{proc.stderr}")
        return res


def local_inventory(inv, groups=("berqenas_db",), variables=None) -> str:
    """An operator inventory at INV (a directory) whose one host, localhost, runs locally (the venv's python) and
    belongs to GROUPS; VARIABLES go to group_vars/all/platform.yml. Returns INV as a string."""
    import sys

    inv = os.fspath(inv)
    os.makedirs(os.path.join(inv, "group_vars", "all"), exist_ok=True)
    children = "".join("    %s:\n      hosts:\n        localhost: {}\n" % g for g in groups)
    with open(os.path.join(inv, "hosts.yml"), "w") as f:
        f.write("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                "      ansible_python_interpreter: %s\n  children:\n%s" % (sys.executable, children))
    if variables is not None:
        with open(os.path.join(inv, "group_vars", "all", "platform.yml"), "w") as f:
            json.dump(variables, f)
    return inv

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


class Cli:
    def __init__(self, env: dict, home: str):
        self.env = dict(env, BERQENAS_HOME=home)
        self.home = home

    def __call__(self, *args, check=True, timeout=600, input=None) -> CliResult:
        proc = subprocess.run([os.path.join(VENV_BIN, "berqenas"), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, input=input, cwd="/")
        res = CliResult(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"berqenas {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                                 f"stderr:\n{proc.stderr}")
        return res

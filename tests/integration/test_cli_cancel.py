"""Ctrl-C cancels a run (exit 130) and --timeout ends one (exit 124); neither leaves runner files behind."""

import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from tests.support.env import VENV_BIN

pytestmark = pytest.mark.cli


def _leftovers(tmpdir):
    return set(glob.glob(os.path.join(tmpdir, "berqenas-*")))


def _purge(env):
    subprocess.run([os.path.join(VENV_BIN, "berqenas"), "local", "down", "--purge"], env=env, capture_output=True,
                   timeout=120)


def test_ctrl_c_cancels_with_130(ansible_env, test_home):
    tmpdir = tempfile.mkdtemp(prefix="bq-cancel-tmp-")  # the CLI's own TMPDIR: other processes' runs stay out
    env = dict(ansible_env, BERQENAS_HOME=os.path.join(test_home, "cancel"), TMPDIR=tmpdir)
    p = subprocess.Popen([os.path.join(VENV_BIN, "berqenas"), "local", "up", "--no-network", "--json"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        seen = ""
        while time.time() < deadline and "PostgreSQL cluster" not in seen:  # wait until the play is under way
            seen += p.stderr.readline()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 130, (out, err)
        assert json.loads(out)["status"] == "canceled"
        assert _leftovers(tmpdir) == set()
    finally:
        _purge(env)
        shutil.rmtree(tmpdir, ignore_errors=True)


def test_timeout_exits_124(ansible_env, test_home):
    env = dict(ansible_env, BERQENAS_HOME=os.path.join(test_home, "timeout"))
    try:
        res = subprocess.run([os.path.join(VENV_BIN, "berqenas"), "--timeout", "1", "local", "up", "--no-network",
                              "--json"], env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 124, (res.stdout, res.stderr)
        assert json.loads(res.stdout)["status"] == "timeout"
    finally:
        _purge(env)

"""The health_timer role's units: rendered by the role itself (tasks_from: units, into a directory of the test),
verified with `systemd-analyze verify`, the service's command line run by hand with its Environment= (the CLI reads
the key file it names); a key file others can read is refused before a unit is written."""

import os
import shlex
import subprocess
import sys

import pytest

from tests.support import env as support_env

pytestmark = pytest.mark.health

PLAY = """- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: berqenas.platform.health_timer
        tasks_from: units
"""


def _render(tmp_path, ansible_env, **extra):
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    vars_file = tmp_path / "vars.yml"
    import json

    vars_file.write_text(json.dumps(dict({
        "health_timer_unit_dir": str(tmp_path / "units"), "health_timer_textfile": str(tmp_path / "tf" / "b.prom"),
        "health_timer_command": os.path.join(support_env.VENV_BIN, "berqenas"),
        "health_timer_home": str(tmp_path / "home"), "health_timer_inventory": str(tmp_path / "inventory"),
        "health_timer_api_key_file": str(tmp_path / "health.key"), "health_timer_check_timeout": 5}, **extra)))
    return subprocess.run([os.path.join(support_env.VENV_BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", "ansible_python_interpreter=" + sys.executable, "-e", "@" + str(vars_file),
                           str(play)], env=ansible_env, capture_output=True, text=True, timeout=300,
                          cwd=support_env.REPO)


def test_units_render_verify_and_run(tmp_path, ansible_env):
    (tmp_path / "units").mkdir()
    (tmp_path / "home").mkdir(mode=0o700)
    key = tmp_path / "health.key"
    key.write_text("not-a-key\n")
    os.chmod(key, 0o644)
    r = _render(tmp_path, ansible_env)
    assert r.returncode != 0 and "must exist, be owned by root and have mode 0600" in r.stdout, r.stdout[-3000:]
    assert not (tmp_path / "units" / "berqenas-health.service").exists()

    os.chmod(key, 0o600)
    r = _render(tmp_path, ansible_env)
    assert r.returncode == 0 and "changed=2" in r.stdout, r.stdout[-3000:]
    service = (tmp_path / "units" / "berqenas-health.service").read_text()
    timer = (tmp_path / "units" / "berqenas-health.timer").read_text()
    assert "OnUnitActiveSec=1min" in timer and "Unit=berqenas-health.service" in timer
    assert "SuccessExitStatus=1" in service and "not-a-key" not in service
    v = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "units" / "berqenas-health.service"),
                        str(tmp_path / "units" / "berqenas-health.timer")], capture_output=True, text=True,
                       timeout=60)
    problems = [ln for ln in (v.stdout + v.stderr).splitlines() if "berqenas-health" in ln]
    assert v.returncode == 0 and not problems, v.stdout + v.stderr

    # the service's command line, run with its Environment= and ExecStart=: the CLI authenticates with the key
    # file the unit names (not a key of any keystore: refused, exit 1, before any playbook)
    exec_start = next(ln for ln in service.splitlines() if ln.startswith("ExecStart="))[len("ExecStart="):]
    argv = shlex.split(exec_start)
    assert argv[1:] == ["-i", str(tmp_path / "inventory"), "health", "--prometheus", str(tmp_path / "tf" / "b.prom"),
                        "--check-timeout", "5"]
    env = {"PATH": os.environ["PATH"]}
    for ln in service.splitlines():
        if ln.startswith("Environment="):
            k, _, val = shlex.split(ln[len("Environment="):])[0].partition("=")
            env[k] = val
    assert env["BERQENAS_API_KEY_FILE"] == str(key) and env["BERQENAS_HOME"] == str(tmp_path / "home")
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "hosts.yml").write_text("all:\n  hosts: {}\n")
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "unauthorized" in run.stderr, run.stdout + run.stderr

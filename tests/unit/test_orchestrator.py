"""The orchestrator's own logic: unsafe YAML, the state store, the runner's environment, help and README."""

import os
import re
import stat

import pytest
import yaml
from berqenas_orchestrator import runner
from berqenas_orchestrator.cli import root
from berqenas_orchestrator.state import StateStore
from click.testing import CliRunner

from tests.support.env import REPO

pytestmark = pytest.mark.unit


def test_every_string_is_written_unsafe():
    text = runner.dump_unsafe_yaml({"name": "ab{{ 6*7 }}cd", "list": ["{{ lookup('pipe','id') }}", 5], "n": 3})
    assert text.count("!unsafe") == 2
    assert "n: 3" in text

    class L(yaml.SafeLoader):
        pass

    L.add_constructor("!unsafe", lambda loader, node: ("UNSAFE", loader.construct_scalar(node)))
    data = yaml.load(text, Loader=L)  # noqa: S506
    assert data["name"] == ("UNSAFE", "ab{{ 6*7 }}cd")
    assert data["list"][0] == ("UNSAFE", "{{ lookup('pipe','id') }}")


def test_state_store_roundtrip_is_0600_and_unsafe(tmp_path):
    store = StateStore(tmp_path / "inv")
    with store.edit("tenants.yml") as d:
        d["berqenas_tenants"] = [{"name": "acme"}]
    p = store.path("tenants.yml")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert "!unsafe 'acme'" in p.read_text()
    assert store.load("tenants.yml") == {"berqenas_tenants": [{"name": "acme"}]}


def test_state_store_keeps_file_on_error(tmp_path):
    store = StateStore(tmp_path / "inv")
    with store.edit("t.yml") as d:
        d["x"] = 1
    with pytest.raises(RuntimeError), store.edit("t.yml") as d:
        d["x"] = 2
        raise RuntimeError("boom")
    assert store.load("t.yml") == {"x": 1}


def test_runner_environment_is_an_allow_list(monkeypatch):
    monkeypatch.setenv("BERQENAS_SECRET_LEAK", "s3cret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    env = runner._clean_env({"BERQENAS_HOME": "/h"})
    assert "BERQENAS_SECRET_LEAK" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert env["PATH"].split(os.pathsep)[0] == runner.paths.venv_bin()
    assert env["BERQENAS_HOME"] == "/h"


def test_exit_codes():
    assert runner.RunResult("successful", 0).exit_code == 0
    assert runner.RunResult("failed", 2).exit_code == 1
    assert runner.RunResult("timeout", 254).exit_code == 124
    assert runner.RunResult("canceled", 254).exit_code == 130


def _commands(group, prefix=()):
    for name, cmd in sorted(group.commands.items()):
        path = (*prefix, name)
        yield path, cmd
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, path)


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in _commands(root)])
def test_every_command_has_help(path):
    res = CliRunner().invoke(root, [*path.split(), "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output
    cmd = root
    for part in path.split():
        cmd = cmd.commands[part]
    assert (cmd.help or "").strip(), f"{path} has no help text"


def test_every_group_is_in_the_readme():
    readme = open(os.path.join(REPO, "README.md")).read()
    for name in root.commands:
        assert re.search(rf"berqenas {name}\b|`{name}`", readme), f"group {name} missing from README"


def test_every_group_module_is_registered():
    """cli/__init__.py lists the groups explicitly: a group module missing from GROUPS would be silently absent."""
    import importlib
    import pkgutil

    from berqenas_orchestrator import cli

    modules = [m.name for m in pkgutil.iter_modules(cli.__path__)]
    groups = [getattr(importlib.import_module(f"berqenas_orchestrator.cli.{m}"), "group", None) for m in modules]
    assert {g.name for g in groups if g is not None} == {g.name for g in cli.GROUPS} == set(root.commands)


def test_kept_runner_dir_is_a_private_copy(tmp_path):
    """--keep-artifacts: the private data dir is copied whole, directories 0700 and files 0600 however wide the
    originals were; symlinks are not followed (a link to /etc/shadow is not copied)."""
    pdd = tmp_path / "pdd"
    (pdd / "artifacts" / "id" / "job_events").mkdir(parents=True)
    (pdd / "artifacts").chmod(0o755)
    (pdd / "berqenas-vars.yml").write_text("berqenas_home: '/h'\n")
    (pdd / "artifacts" / "id" / "stdout").write_text("PLAY [x]\n")
    (pdd / "artifacts" / "id" / "stdout").chmod(0o644)
    (pdd / "artifacts" / "id" / "job_events" / "1-u.json").write_text("{}")
    (pdd / "artifacts" / "id" / "link").symlink_to("/etc/hostname")
    keep = tmp_path / "keep" / "runs"
    copy = runner.keep_private_data_dir(str(pdd), keep, runner.Path("/x/tenant_apply.yml"))
    assert os.path.dirname(copy) == str(keep) and os.path.basename(copy).split("-")[1] == "tenant_apply"
    assert stat.S_IMODE(os.stat(keep).st_mode) == 0o700
    found = {}
    for base, dirs, files in os.walk(copy):
        for n in dirs + files:
            p = os.path.join(base, n)
            found[os.path.relpath(p, copy)] = stat.S_IMODE(os.lstat(p).st_mode)
    assert found == {"berqenas-vars.yml": 0o600, "artifacts": 0o700, "artifacts/id": 0o700,
                     "artifacts/id/stdout": 0o600, "artifacts/id/job_events": 0o700,
                     "artifacts/id/job_events/1-u.json": 0o600}
    assert open(os.path.join(copy, "artifacts/id/stdout")).read() == "PLAY [x]\n"
    assert stat.S_IMODE(os.stat(copy).st_mode) == 0o700
    second = runner.keep_private_data_dir(str(pdd), keep, runner.Path("/x/tenant_apply.yml"))
    assert second != copy  # one new directory per run

"""The AWX execution environment: ansible-builder writes its build context offline, and the collection's own
dependency files (meta/execution-environment.yml) cover every third-party module the collection imports."""

import ast
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.support.env import REPO, VENV_BIN

pytestmark = pytest.mark.unit

EE_DIR = os.path.join(REPO, "extensions", "ee")
BUILDER = os.path.join(VENV_BIN, "ansible-builder")
# import name -> the distribution that provides it
DISTRIBUTION = {"psycopg": "psycopg", "pymssql": "pymssql", "segno": "segno", "cryptography": "cryptography",
                "jwt": "pyjwt", "yaml": "pyyaml", "prometheus_client": "prometheus-client"}


def _name(requirement):
    """'psycopg[binary]==3.3.9  # x' -> 'psycopg'."""
    return re.split(r"[\[=<>~!; #]", requirement.strip(), maxsplit=1)[0].lower()


def _requirements(path):
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]


def _third_party_imports(root):
    """Top-level modules the collection's Python files import that are neither stdlib nor Ansible."""
    found = set()
    for dirpath, _, files in os.walk(root):
        for fn in files:
            if not fn.endswith(".py"):
                continue
            tree = ast.parse(open(os.path.join(dirpath, fn), encoding="utf-8").read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for n in names:
                    top = n.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("ansible", "ansible_collections",
                                                                          "__future__"):
                        found.add(top)
    return found


def test_collection_declares_its_ee_dependencies():
    meta = yaml.safe_load(open(os.path.join(REPO, "meta", "execution-environment.yml")))
    deps = meta["dependencies"]
    python = {_name(r) for r in _requirements(os.path.join(REPO, deps["python"]))}
    imported = _third_party_imports(os.path.join(REPO, "plugins"))
    assert imported, "the scan found no third-party import at all"
    missing = {m for m in imported if DISTRIBUTION.get(m, m) not in python}
    assert not missing, f"plugins/ imports {sorted(missing)}, which {deps['python']} does not declare"
    unused = {p for p in python if p not in {DISTRIBUTION.get(m, m) for m in imported}}
    assert not unused, f"{deps['python']} declares {sorted(unused)}, which nothing in plugins/ imports"
    assert os.path.isfile(os.path.join(REPO, deps["system"]))


def test_ee_pins_match_the_tested_pins():
    dev = {_name(r): r.split("#")[0].strip() for r in _requirements(os.path.join(REPO, "requirements-dev.txt"))}
    for req in _requirements(os.path.join(REPO, "meta", "ee-requirements.txt")):
        if "==" in req:
            assert dev.get(_name(req)) == req.split("#")[0].strip(), f"{req} is not what the tests run with"
    ee = yaml.safe_load(open(os.path.join(EE_DIR, "execution-environment.yml")))
    for key in ("ansible_core", "ansible_runner"):
        pin = ee["dependencies"][key]["package_pip"]
        assert dev.get(_name(pin)) == pin, f"{pin} is not what the tests run with"


def test_ee_collection_tarball_is_the_collection_version():
    version = yaml.safe_load(open(os.path.join(REPO, "galaxy.yml")))["version"]
    reqs = yaml.safe_load(open(os.path.join(EE_DIR, "requirements.yml")))["collections"]
    ours = [c for c in reqs if c.get("type") == "file"]
    assert [c["name"] for c in ours] == [f"collections/berqenas-platform-{version}.tar.gz"]
    galaxy_deps = yaml.safe_load(open(os.path.join(REPO, "galaxy.yml")))["dependencies"]
    assert {c["name"] for c in reqs if c.get("type") != "file"} == set(galaxy_deps)


def test_ansible_builder_create_writes_the_build_context(tmp_path):
    """`ansible-builder create` (no container engine, no network) against a copy of extensions/ee/ holding the
    freshly built collection tarball."""
    ee = tmp_path / "ee"
    shutil.copytree(EE_DIR, ee)
    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""), HOME=str(tmp_path))
    subprocess.run([os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "build", "--force", "--output-path",
                    str(ee / "collections"), REPO], check=True, capture_output=True, env=env, cwd=str(tmp_path))
    ctx = tmp_path / "context"
    res = subprocess.run([BUILDER, "create", "-f", str(ee / "execution-environment.yml"), "--context", str(ctx),
                          "--output-filename", "Containerfile"], capture_output=True, text=True, env=env,
                         cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr + res.stdout
    containerfile = (ctx / "Containerfile").read_text()
    ee_def = yaml.safe_load(open(ee / "execution-environment.yml"))
    assert f'ARG EE_BASE_IMAGE="{ee_def["images"]["base_image"]["name"]}"' in containerfile
    assert 'ARG ANSIBLE_INSTALL_REFS="ansible-core==2.19.14 ansible-runner==2.4.3"' in containerfile
    assert 'ARG PYCMD="/usr/bin/python3.11"' in containerfile
    assert "ansible-galaxy collection install" in containerfile and "introspect" in containerfile
    build = ctx / "_build"
    assert yaml.safe_load((build / "requirements.yml").read_text()) == yaml.safe_load(open(ee / "requirements.yml"))
    tarballs = sorted(p.name for p in (build / "collections").glob("*.tar.gz"))
    assert tarballs == [f"berqenas-platform-{yaml.safe_load(open(os.path.join(REPO, 'galaxy.yml')))['version']}"
                        ".tar.gz"]


def test_introspection_finds_the_collection_dependencies():
    """What ansible-builder's build stage will install: berqenas.platform's Python and system packages."""
    res = subprocess.run([BUILDER, "introspect", "--sanitize", os.path.join(REPO, ".collections")],
                         capture_output=True, text=True, check=True)
    data = yaml.safe_load(res.stdout.split("\n", 1)[1])
    ours_py = {_name(r) for r in data["python"] if "from collection berqenas.platform" in r}
    ours_sys = {r.split("#")[0].strip() for r in data["system"] if "from collection berqenas.platform" in r}
    assert ours_py == {_name(r) for r in _requirements(os.path.join(REPO, "meta", "ee-requirements.txt"))}
    assert ours_sys == set(_requirements(os.path.join(REPO, "meta", "ee-bindep.txt")))

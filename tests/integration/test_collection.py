"""The collection as users get it: the built tarball, installed offline into a fresh path, works on its own.

Everything here runs against that installed copy (ANSIBLE_COLLECTIONS_PATH holds only the fresh path with the
dependency collections beside it, cwd outside the checkout), never against the checkout.
"""

import ast
import json
import os
import subprocess
import tarfile

import pytest
import yaml

from tests.support import env as support_env

pytestmark = pytest.mark.collection

REPO = support_env.REPO
BIN = support_env.VENV_BIN
# What a collection tarball may hold at its top level (ansible-galaxy adds MANIFEST.json and FILES.json): never
# tests/, orchestrator/, bench/, scripts/, extensions/, .venv and the rest of the checkout.
ALLOWED_TOP = {
    "MANIFEST.json",
    "FILES.json",
    "README.md",
    "LICENSE",
    "COPYING",
    "CHANGELOG.rst",
    "CHANGELOG.md",
    "meta",
    "plugins",
    "roles",
    "playbooks",
    "docs",
    "changelogs",
}


def _names(subdir, suffix):
    path = os.path.join(REPO, subdir)
    if not os.path.isdir(path):
        return []
    return sorted(
        f[: -len(suffix)] if suffix else f
        for f in os.listdir(path)
        if (f.endswith(suffix) if suffix else os.path.isdir(os.path.join(path, f))) and not f.startswith(("_", "."))
    )


def checkout_modules():
    return _names("plugins/modules", ".py")


def checkout_roles():
    return _names("roles", "")


def checkout_playbooks():
    return _names("playbooks", ".yml")


def run(argv, env, cwd, timeout=300):
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory, test_home):
    """Build the tarball from the checkout and install it with --offline --no-deps into a fresh path."""
    base = tmp_path_factory.mktemp("collection")
    env = support_env.ansible_env(test_home)
    build = run(
        [f"{BIN}/ansible-galaxy", "collection", "build", "--force", "--output-path", str(base / "dist"), REPO],
        env,
        str(base),
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (tarball,) = (base / "dist").glob("berqenas-platform-*.tar.gz")

    root = base / "root"
    install = run(
        [
            f"{BIN}/ansible-galaxy",
            "collection",
            "install",
            "--offline",
            "--no-deps",
            "--force",
            "-p",
            str(root),
            str(tarball),
        ],
        env,
        str(base),
    )
    assert install.returncode == 0, install.stdout + install.stderr
    coll = root / "ansible_collections" / "berqenas" / "platform"
    assert coll.is_dir() and not coll.is_symlink()
    # The dependency collections beside it (never the checkout's berqenas/platform link).
    deps = os.path.join(support_env.COLLECTIONS, "ansible_collections")
    for ns in os.listdir(deps):
        if ns != "berqenas":
            os.symlink(os.path.join(deps, ns), root / "ansible_collections" / ns)

    env = dict(env)
    env["ANSIBLE_COLLECTIONS_PATH"] = str(root)
    env["ANSIBLE_COLLECTIONS_SCAN_SYS_PATH"] = "False"
    env.pop("ANSIBLE_CONFIG", None)
    work = base / "work"
    work.mkdir()
    return {"tarball": tarball, "root": root, "coll": coll, "env": env, "cwd": str(work), "base": base}


def test_tarball_holds_only_collection_content(installed):
    with tarfile.open(installed["tarball"]) as tar:
        names = tar.getnames()
    top = {n.split("/", 1)[0] for n in names}
    assert top <= ALLOWED_TOP, f"not collection content in the tarball (galaxy.yml build_ignore): {top - ALLOWED_TOP}"
    for name in names:
        parts = name.split("/")
        assert "__pycache__" not in parts and not name.endswith((".pyc", ".tar.gz")), name
    # What ships is what the checkout has: every module, role and playbook.
    for mod in checkout_modules():
        assert f"plugins/modules/{mod}.py" in names
    for role in checkout_roles():
        assert any(n.startswith(f"roles/{role}/") for n in names), role
    for pb in checkout_playbooks():
        assert f"playbooks/{pb}.yml" in names
    assert "meta/runtime.yml" in names


def test_manifest_matches_galaxy_yml(installed):
    with open(os.path.join(REPO, "galaxy.yml")) as f:
        galaxy = yaml.safe_load(f)
    with open(installed["coll"] / "MANIFEST.json") as f:
        info = json.load(f)["collection_info"]
    assert (info["namespace"], info["name"], info["version"]) == ("berqenas", "platform", galaxy["version"])
    assert info["dependencies"] == galaxy["dependencies"]
    assert {"community.postgresql", "community.general", "ansible.posix"} <= set(info["dependencies"])


def test_installed_copy_is_the_one_ansible_sees(installed):
    res = run(
        [f"{BIN}/ansible-galaxy", "collection", "list", "berqenas.platform", "--format", "json"],
        installed["env"],
        installed["cwd"],
    )
    assert res.returncode == 0, res.stderr
    listing = json.loads(res.stdout)
    assert list(listing) == [str(installed["root"] / "ansible_collections")], listing


def doc_yaml(path):
    """The DOCUMENTATION YAML of a module or doc fragment file, read without importing it."""
    with open(path) as f:
        tree = ast.parse(f.read(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DOCUMENTATION" for t in node.targets):
            try:
                return yaml.safe_load(node.value.value)
            except yaml.YAMLError as e:
                raise AssertionError(f"{path}: DOCUMENTATION is not valid YAML: {e}") from e
    raise AssertionError(f"{path}: no DOCUMENTATION")


def test_action_groups_are_the_modules_sharing_a_fragment(installed):
    """group/berqenas.platform.X holds exactly the modules extending doc fragment X: module_defaults given to the
    group must be options every member accepts (a member without them fails with "Unsupported parameters")."""
    with open(installed["coll"] / "meta" / "runtime.yml") as f:
        runtime = yaml.safe_load(f)
    shipped = checkout_modules()
    extends = {
        m: set(
            doc_yaml(installed["coll"] / "plugins" / "modules" / f"{m}.py").get("extends_documentation_fragment") or []
        )
        for m in shipped
    }
    for group, members in (runtime.get("action_groups") or {}).items():
        names = {m.split(".")[-1] for m in members if isinstance(m, str)}  # dicts: {metadata: {extend_group: ..}}
        assert names <= set(shipped), f"action group {group!r} names modules that do not exist: {names - set(shipped)}"
        fragment = installed["coll"] / "plugins" / "doc_fragments" / f"{group}.py"
        assert fragment.is_file(), f"action group {group!r}: no doc fragment {fragment.name} defines its options"
        assert doc_yaml(fragment).get("options"), fragment
        sharing = {m for m, frags in extends.items() if f"berqenas.platform.{group}" in frags}
        assert names == sharing, (
            f"action group {group!r} is {sorted(names)}; modules with its options: {sorted(sharing)}"
        )


def ansible_doc(installed, plugin_type, *args):
    """`ansible-doc -t TYPE --json ARGS` against the installed copy, parsed."""
    res = run([f"{BIN}/ansible-doc", "-t", plugin_type, "--json", *args], installed["env"], installed["cwd"])
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout or "{}"), res.stderr.strip()


def test_every_module_documented_from_installed_copy(installed):
    mods = checkout_modules()
    listed, _ = ansible_doc(installed, "module", "--list", "berqenas.platform")
    assert sorted(k.split(".")[-1] for k in listed) == mods, "ansible-doc --list differs from plugins/modules"
    fq = [f"berqenas.platform.{m}" for m in mods]
    docs, err = ansible_doc(installed, "module", *fq) if fq else ({}, "")
    for name in fq:
        assert name in docs, f"{name}: no documentation ({err})"
        doc = docs[name]["doc"]
        assert doc["filename"].startswith(str(installed["coll"])), (name, doc["filename"])
        assert doc.get("short_description"), name
        attrs = doc.get("attributes") or {}
        assert "check_mode" in attrs and "diff_mode" in attrs, f"{name}: attributes check_mode/diff_mode missing"
        assert name in (docs[name].get("examples") or ""), f"{name}: EXAMPLES do not use the FQCN {name}"


def test_every_role_has_argument_specs_in_installed_copy(installed):
    roles = checkout_roles()
    fq = [f"berqenas.platform.{r}" for r in roles]
    docs, err = ansible_doc(installed, "role", *fq) if fq else ({}, "")
    for name in fq:
        assert name in docs, f"{name}: no meta/argument_specs.yml ({err})"
        assert docs[name]["path"] == str(installed["coll"]), docs[name]["path"]
        assert "main" in docs[name]["entry_points"], name
    listed, _ = ansible_doc(installed, "role", "--list", "berqenas.platform")
    assert sorted(listed) == fq


def test_playbooks_resolve_by_fqcn_from_installed_copy(installed):
    pbs = checkout_playbooks()
    # The installed copy's playbooks, by FQCN: their roles and modules must resolve from the tarball alone.
    if not pbs:
        assert not list((installed["coll"] / "playbooks").glob("*.yml"))
        return
    argv = [f"{BIN}/ansible-playbook", "--syntax-check", "-i", "localhost,"] + [f"berqenas.platform.{p}" for p in pbs]
    res = run(argv, installed["env"], installed["cwd"])
    assert res.returncode == 0, res.stdout + res.stderr


def test_modules_run_by_fqcn_from_installed_copy(installed):
    """Each module, called by FQCN from a playbook outside the checkout, is found in the installed copy, imports
    its module_utils there and runs its argument validation: the probe option is rejected before anything is
    touched."""
    mods = checkout_modules()
    tasks = [
        {
            "name": f"Probe {m}",
            f"berqenas.platform.{m}": {"berqenas_collection_probe": "x"},
            "register": f"probe_{m}",
            "ignore_errors": True,
        }
        for m in mods
    ]
    registered = ", ".join(f"'{m}': probe_{m}" for m in mods)
    out_file = installed["base"] / "work" / "probe.json"
    tasks.append(
        {
            "name": "Save the results",
            "ansible.builtin.copy": {
                "content": "{{ {" + registered + "} | to_json }}",
                "dest": str(out_file),
                "mode": "0600",
            },
        }
    )
    play = [
        {
            "name": "Probe the installed collection",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "tasks": tasks,
        }
    ]
    pb = installed["base"] / "work" / "probe.yml"
    pb.write_text(yaml.safe_dump(play, sort_keys=False))
    res = run([f"{BIN}/ansible-playbook", "-i", "localhost,", "-vvv", str(pb)], installed["env"], installed["cwd"])
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    results = json.loads(out_file.read_text())
    assert sorted(results) == mods
    for m in mods:
        r = results[m]
        assert r.get("failed") is True, (m, r)
        # An argument-validation message from AnsibleModule itself: the module file and its module_utils were
        # found in the installed copy, shipped to the host and imported (an import failure gives module_stderr).
        assert "Traceback" not in r.get("msg", "") and "module_stderr" not in r, (m, r)
        assert (
            "berqenas_collection_probe" in r["msg"]
            or "missing required arguments" in r["msg"]
            or "one of the following" in r["msg"]
            or "are mutually exclusive" in r["msg"]
        ), (m, r["msg"])
        # the module file came from the installed copy, not the checkout
        assert f"Using module file {installed['coll']}/plugins/modules/{m}.py" in res.stdout, m

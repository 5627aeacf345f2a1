"""scripts/commands.txt is the one list of the external commands the project runs: every command the tree runs is
in it (tests/support/command_scan.py finds them), every entry names a package the install scripts really install,
and the scanner finds the kinds of use it claims to find (synthetic snippets with an unlisted command)."""

import os
import re

import pytest

from tests.support import command_scan

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIST = os.path.join(REPO, "scripts", "commands.txt")
WHERE = {"host", "machine", "venv", "pg", "ours", "implied"}
# Debian's essential/required packages: on every Debian system and in debootstrap's minbase
ESSENTIAL = {"coreutils", "bash", "dash", "grep", "sed", "findutils", "util-linux", "mount", "hostname", "dpkg",
             "mawk", "apt", "debianutils", "diffutils", "tar", "gzip"}


def _bash_array(path, name):
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^%s=\(([^)]*)\)" % name, text, re.M)
    assert m, "%s: no %s=(...)" % (path, name)
    return set(m.group(1).split())


@pytest.fixture(scope="module")
def listed():
    return command_scan.load_list(LIST)


@pytest.fixture(scope="module")
def found():
    return command_scan.scan(REPO)


def test_every_command_the_tree_runs_is_listed(listed, found):
    missing = {cmd: sorted(where)[:3] for cmd, where in found.items() if cmd not in listed}
    assert not missing, "commands run but not in scripts/commands.txt (add COMMAND PACKAGE WHERE): %s" % missing


def test_every_listed_command_is_used(listed, found):
    stale = sorted(cmd for cmd, (_, where) in listed.items() if cmd not in found and "implied" not in where)
    assert not stale, "scripts/commands.txt lists commands nothing runs (drop them or mark them implied): %s" % stale


def test_each_entry_names_a_package_that_gets_installed(listed):
    apt = _bash_array("scripts/install.sh", "APT_PACKAGES")
    rootfs = _bash_array("scripts/build-rootfs.sh", "PACKAGES") | _bash_array("scripts/build-rootfs.sh",
                                                                                "BASE_PACKAGES")
    with open(os.path.join(REPO, "requirements-dev.txt"), encoding="utf-8") as f:
        pip = {re.split(r"[=<>\[ ;]", line.strip(), maxsplit=1)[0].lower() for line in f
               if line.strip() and not line.startswith("#")}
    pip |= {"berqenas-orchestrator", "pip"}  # this checkout (pip install -e .) and the venv's own pip
    bad = []
    for cmd, (pkg, where) in sorted(listed.items()):
        if not where <= WHERE:
            bad.append("%s: unknown WHERE %s" % (cmd, sorted(where - WHERE)))
        if "host" in where and pkg not in apt | ESSENTIAL:
            bad.append("%s: host package %s is not in install.sh APT_PACKAGES" % (cmd, pkg))
        if "pg" in where and pkg not in apt:
            bad.append("%s: package %s is not in install.sh APT_PACKAGES" % (cmd, pkg))
        if "machine" in where and pkg not in rootfs | ESSENTIAL:
            bad.append("%s: machine package %s is not in build-rootfs.sh PACKAGES" % (cmd, pkg))
        if "venv" in where and pkg.lower() not in pip | {"python3-venv"}:
            bad.append("%s: pip package %s is not in requirements-dev.txt" % (cmd, pkg))
        if "ours" in where and not os.path.isfile(os.path.join(REPO, pkg)):
            bad.append("%s: %s is not a file of this repository" % (cmd, pkg))
        if not where & {"host", "machine", "venv", "pg", "ours"}:
            bad.append("%s: says where it runs (host, machine, venv, pg or ours)" % cmd)
    assert not bad, bad


def test_install_preflight_reads_the_list():
    with open(os.path.join(REPO, "scripts", "install.sh"), encoding="utf-8") as f:
        text = f.read()
    assert "done <scripts/commands.txt" in text
    assert "preflight FAILED" in text
    assert "nftables" in _bash_array("scripts/install.sh", "APT_PACKAGES")  # `nft` reads the host ruleset


# -- the scanner finds what it claims (an unlisted command "frobnicate" in each kind of use) --------------
SNIPPETS = {
    "python subprocess": ("x.py", "import subprocess\nsubprocess.run(['frobnicate', '-x'], check=True)\n"),
    "python Popen path": ("x.py", "import subprocess\np = subprocess.Popen(['/opt/bin/frobnicate'])\n"),
    "python run_command": ("plugins/modules/x.py", "def main(module):\n    module.run_command(['frobnicate'])\n"),
    "python get_bin_path": ("x.py", "def f(module):\n    return module.get_bin_path('frobnicate', True)\n"),
    "python shutil.which": ("x.py", "import shutil\nshutil.which('frobnicate')\n"),
    "python argv variable": ("x.py", "import subprocess\ndef f():\n    argv = ['frobnicate', 'a']\n"
                                     "    argv += ['b']\n    subprocess.run(argv)\n"),
    "python helper": ("x.py", "import subprocess\ndef sh(argv):\n    return subprocess.run(['true'] + argv)\n"
                              "def g(node):\n    node.sh(['frobnicate'])\n"),
    "python helper in another file": ("y.py", "def t(ns):\n    ns.sh(['frobnicate', '-n'])\n"),
    "python wrapper": ("x.py", "import subprocess\nsubprocess.run(['ip', 'netns', 'exec', 'ns1', 'frobnicate'])\n"),
    "python nsenter": ("x.py", "import subprocess\nsubprocess.run(['nsenter', '-t', '1', '-a', '--', 'frobnicate'])\n"),
    "python sh -c": ("x.py", "import subprocess\nsubprocess.run(['sh', '-c', 'cd /x && frobnicate | sort'])\n"),
    "python os.path.join": ("x.py", "import os, subprocess\nsubprocess.run([os.path.join(BIN, 'frobnicate')])\n"),
    "python unit string": ("x.py", "UNIT = '[Service]\\nExec" + "Start=/usr/bin/frobnicate --x\\n'\n"),
    "yaml command argv": ("roles/r/tasks/main.yml",
                          "- name: t\n  ansible.builtin.command:\n    argv: [frobnicate, -x]\n"),
    "yaml command loop": ("roles/r/tasks/main.yml",
                          "- name: t\n  ansible.builtin.command:\n    argv: '{{ item }}'\n  loop:\n"
                          "    - [ls]\n    - [frobnicate, x]\n"),
    "yaml command free form": ("playbooks/p.yml",
                               "- hosts: all\n  tasks:\n    - ansible.builtin.command: frobnicate -x {{ y }}\n"),
    "yaml shell": ("roles/r/tasks/main.yml",
                   "- name: t\n  ansible.builtin.shell:\n    cmd: set -e; cat /x | frobnicate\n"),
    "yaml module": ("roles/r/tasks/main.yml", "- name: t\n  community.general.ufw:\n    state: enabled\n"),
    "shell script": ("scripts/x.sh", "#!/usr/bin/env bash\nset -eu\nx=$(frobnicate --y)\necho \"$x\"\n"),
    "shell pipeline": ("scripts/x.sh", "#!/bin/sh\nif grep -q a b; then echo ok | frobnicate; fi\n"),
    "shell case branch": ("roles/r/files/tool", "#!/bin/sh\ncase \"$1\" in\nstart)\n    frobnicate\n    ;;\nesac\n"),
    "shell venv path": ("scripts/x.sh", "#!/bin/bash\n\"$venv_bin/frobnicate\" --x\n"),
    "shell command -v": ("scripts/x.sh", "#!/bin/bash\ncommand -v frobnicate >/dev/null || exit 1\n"),
    "shell variable": ("scripts/x.sh", "#!/bin/sh\nf=\"frobnicate -w\"\n$f -L\n"),
    "makefile recipe": ("Makefile", "all:\n\t$(VENV)/bin/frobnicate build\n"),
    # (split so that this file's own strings are no unit files to the scan of the tree)
    "unit template": ("roles/r/templates/x.service.j2", "[Service]\nExec" + "Start=-/usr/sbin/frobnicate {{ a }}\n"),
}


@pytest.mark.parametrize("kind", sorted(SNIPPETS))
def test_scanner_finds_an_unlisted_command(kind, listed):
    path, text = SNIPPETS[kind]
    found = command_scan.scan_texts({path: text, "y.py": SNIPPETS["python helper"][1]}
                                    if kind == "python helper in another file" else {path: text})
    want = "ufw" if kind == "yaml module" else "frobnicate"
    assert want in found, "%s: scanner missed %s in %r (found %s)" % (kind, want, text, sorted(found))
    if want == "frobnicate":
        assert want not in listed  # so the listing test would fail on it


def test_scanner_ignores_what_is_not_a_command():
    text = ("#!/bin/bash\n# frobnicate in a comment\necho 'frobnicate in a string'\nx=frobnicate\n"
            "f() { :; }\nf\nfor y in frobnicate; do :; done\ncat <<'EOF'\nfrobnicate in a heredoc\nEOF\n"
            "case \"$1\" in\nfrobnicate) echo;;\nesac\n")
    py = "import subprocess\nsorted(['frobnicate'])\nsubprocess.run([sys.executable, '-c', 'frobnicate'])\n"
    found = command_scan.scan_texts({"scripts/x.sh": text, "x.py": py})
    assert "frobnicate" not in found, found
    assert "cat" in found


def test_the_scan_finds_real_uses(found):
    # a few known uses, one per kind of source, so a scanner that finds nothing cannot pass the listing test
    where = {cmd: {w.split(":")[0] for w in ws} for cmd, ws in found.items()}
    assert "tests/integration/gateway/conftest.py" in where["nft"]
    assert "plugins/module_utils/wireguard_host.py" in where["wg"]
    assert "roles/gateway/tasks/status.yml" in where["iptables"]
    assert "scripts/build-rootfs.sh" in where["debootstrap"]
    assert "plugins/module_utils/pgcluster.py" in where["initdb"]
    assert "tests/integration/gateway/conftest.py" in where["mount"]  # inside an `sh -c` script
    assert "roles/gateway/tasks/firewall.yml" in where["ufw"]  # community.general.ufw

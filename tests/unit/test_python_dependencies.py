"""Python dependencies are honest: nothing imported that pyproject.toml / requirements-dev.txt do not declare,
and every declared distribution is used (imported, or run as a command).

The standard library, our own packages (berqenas_orchestrator, tests, the collection itself) and relative
imports are excluded; ``ansible`` maps to ansible-core, ``ansible_collections.<ns>.<name>`` to the collections
requirements.yml declares.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import re
import sys
import tomllib

import pytest
import yaml

from tests.support.env import REPO

pytestmark = pytest.mark.unit

SCANNED = ("orchestrator", "plugins", "tests", "bench", "scripts")
OURS = {"berqenas_orchestrator", "__future__", *SCANNED}  # our packages (tests, bench, ...)
# the files a command is run from: a declared tool counts as used when one of its console scripts appears there
COMMAND_FILES = ("Makefile", ".ci/run", "scripts", "tests", "bench", "extensions")
SKIP_DIRS = {".venv", ".collections", ".cache", ".berqenas", "__pycache__", ".git"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> dict[str, str]:
    """normalised distribution name -> where it is declared."""
    out = {}
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        for dep in tomllib.load(f)["project"]["dependencies"]:
            out[_norm(re.split(r"[\s\[<>=!~;]", dep, maxsplit=1)[0])] = "pyproject.toml"
    with open(os.path.join(REPO, "requirements-dev.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                out.setdefault(_norm(re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0]), "requirements-dev.txt")
    return out


def _files(tops, suffix=None):
    for top in tops:
        path = os.path.join(REPO, top)
        if os.path.isfile(path):
            yield path
            continue
        for root, dirs, names in os.walk(path):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
            for n in names:
                if suffix is None or n.endswith(suffix):
                    yield os.path.join(root, n)


def _local_modules() -> set[str]:
    """Modules beside the scripts that import them (bench/bench_sync.py imports bench_sync_e2e)."""
    return {os.path.basename(p)[:-3] for p in _files(SCANNED, ".py")}


def _imports() -> dict[str, set[str]]:
    """top-level module (or ansible_collections.ns.name) -> files importing it."""
    found: dict[str, set[str]] = {}
    for path in _files(SCANNED, ".py"):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                parts = name.split(".")
                key = ".".join(parts[:3]) if parts[0] == "ansible_collections" else parts[0]
                found.setdefault(key, set()).add(os.path.relpath(path, REPO))
    return found


def _collections() -> set[str]:
    with open(os.path.join(REPO, "requirements.yml")) as f:
        req = yaml.safe_load(f) or {}
    names = {c["name"] if isinstance(c, dict) else c for c in req.get("collections", [])}
    with open(os.path.join(REPO, "galaxy.yml")) as f:
        galaxy = yaml.safe_load(f)
    return names | {f"{galaxy['namespace']}.{galaxy['name']}"}


def _module_to_dists() -> dict[str, set[str]]:
    mapping = {k: {_norm(d) for d in v} for k, v in md.packages_distributions().items()}
    mapping.setdefault("ansible", set()).add("ansible-core")
    return mapping


def test_every_import_is_declared():
    declared = _declared()
    collections = _collections()
    mapping = _module_to_dists()
    local = _local_modules()
    missing = {}
    for module, files in sorted(_imports().items()):
        if module in OURS or module in sys.stdlib_module_names or module in local:
            continue
        if module.startswith("ansible_collections"):
            coll = module.split(".", 1)[1] if "." in module else ""
            if coll.count(".") != 1 or coll not in collections:
                missing[module] = sorted(files)[:3]
            continue
        dists = mapping.get(module, set())
        if not dists & set(declared):
            missing[module] = sorted(files)[:3]
    assert not missing, f"imported but not declared in pyproject.toml / requirements-dev.txt: {missing}"


def _commands_text() -> str:
    chunks = []
    for path in _files(COMMAND_FILES):
        try:
            with open(path, encoding="utf-8") as f:
                chunks.append(f.read())
        except (UnicodeDecodeError, OSError):
            continue
    return "\n".join(chunks)


def test_every_declared_dependency_is_used():
    imported = set(_imports())
    mapping = _module_to_dists()
    used_dists = {d for m in imported for d in mapping.get(m, ())}
    text = _commands_text()
    unused = []
    for dist in sorted(_declared()):
        if dist in used_dists:
            continue
        d = md.distribution(dist)
        if any(e.group == "pytest11" for e in d.entry_points):
            continue  # a pytest plugin: pytest loads it in every run (pytest-timeout: pyproject's timeout option)
        scripts = {e.name for e in d.entry_points if e.group == "console_scripts"}
        scripts |= {os.path.basename(str(f)) for f in d.files or () if "/bin/" in str(f)}  # e.g. ruff's binary
        if any(re.search(rf"(?<![\w/-]){re.escape(s)}(?![\w-])", text) for s in scripts):
            continue  # a tool the project runs (ruff, ansible-lint, molecule, ansible-builder, ...)
        unused.append(dist)
    assert not unused, f"declared but nothing imports or runs them: {unused}"

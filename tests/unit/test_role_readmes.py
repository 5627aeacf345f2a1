"""Every role has a README whose "## Variables" section documents exactly the variables of its
meta/argument_specs.yml: each option named (in backticks), and no role variable that is not an option."""

import os
import re

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLES = sorted(d for d in os.listdir(os.path.join(REPO, "roles")) if os.path.isdir(os.path.join(REPO, "roles", d)))


def spec_options(role):
    with open(os.path.join(REPO, "roles", role, "meta", "argument_specs.yml"), encoding="utf-8") as f:
        specs = yaml.safe_load(f)["argument_specs"]
    return {name for entry in specs.values() for name in (entry.get("options") or {})}


def documented(role, text):
    """Role variables (`<role>_x`, not internal `<role>__x`) named in backticks in the Variables section."""
    m = re.search(r"^## Variables[^\n]*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, "roles/%s/README.md has no '## Variables' section" % role
    return set(re.findall(r"`(%s_(?!_)[a-z0-9_]*[a-z0-9])`" % re.escape(role), m.group(1)))


def test_there_are_roles():
    assert {"gateway", "local_platform", "postgres_tenant", "wireguard"} <= set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_readme_documents_the_argument_spec(role):
    path = os.path.join(REPO, "roles", role, "README.md")
    assert os.path.isfile(path), "roles/%s has no README.md" % role
    with open(path, encoding="utf-8") as f:
        doc = documented(role, f.read())
    options = spec_options(role)
    assert not options - doc, "roles/%s/README.md does not document %s" % (role, sorted(options - doc))
    assert not doc - options, "roles/%s/README.md documents variables its argument spec lacks: %s" % (
        role, sorted(doc - options))


def test_the_check_catches_a_missing_and_an_extra_variable():
    text = "# r\n\n## Variables\n\n| `gateway_state` | x |\n| `gateway_nonsense` | y |\n\n## Published\n`gateway_x`\n"
    assert documented("gateway", text) == {"gateway_state", "gateway_nonsense"}
    assert "gateway_exposures" in spec_options("gateway") - documented("gateway", text)

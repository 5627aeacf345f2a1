"""AWX job templates: every survey variable is an input its playbook validates; playbooks exist."""

import os
import re

import pytest
import yaml

from tests.support.env import REPO

pytestmark = pytest.mark.unit

DATA = yaml.safe_load(open(os.path.join(REPO, "extensions/awx/job_templates.yml")))


def _validated_inputs(playbook):
    plays = yaml.safe_load(open(os.path.join(REPO, playbook)))
    names = set()
    for play in plays:
        for task in play.get("tasks", []):
            spec = (task.get("ansible.builtin.validate_argument_spec") or {}).get("argument_spec") or {}
            names |= set(spec)
    return names


@pytest.mark.parametrize("jt", DATA["berqenas_awx_job_templates"], ids=lambda jt: jt["name"])
def test_survey_variables_are_validated_inputs(jt):
    assert os.path.isfile(os.path.join(REPO, jt["playbook"]))
    if jt.get("survey_enabled"):
        inputs = _validated_inputs(jt["playbook"])
        for q in jt["survey_spec"]["spec"]:
            assert q["variable"] in inputs, f"{jt['name']}: survey variable {q['variable']} is not validated"
            assert q["type"] != "password", "secrets come from credentials, never surveys"


CTYPES = {ct["name"]: ct for ct in DATA["berqenas_awx_credential_types"]}
FRONT_DOOR = sorted(f for f in os.listdir(os.path.join(REPO, "playbooks")) if f.endswith(".yml"))
# playbooks that are not job templates, and why (extensions/awx/job_templates.yml says the same)
NOT_IN_AWX = {"tenant_show.yml": "fetches credentials to the operator", "vpn_peer_config.yml": "fetches a client "
              "config to the operator", "local_up.yml": "embedded default", "local_down.yml": "embedded default",
              "local_status.yml": "embedded default", "local_apply.yml": "embedded default (local_up/local_down)",
              "gateway_peers.yml": "imported by gateway_apply/status"}


def _text_read(playbook):
    """A playbook's text and that of the vars files it loads (playbooks/vars/platform.yml: the connection)."""
    path = os.path.join(REPO, playbook)
    text = open(path).read()
    for play in yaml.safe_load(text):
        for vf in play.get("vars_files", []):
            text += open(os.path.join(os.path.dirname(path), vf)).read()
    return text


def test_every_front_door_playbook_has_a_job_template():
    templated = {os.path.basename(jt["playbook"]) for jt in DATA["berqenas_awx_job_templates"]}
    missing = [p for p in FRONT_DOOR if p not in templated and p not in NOT_IN_AWX]
    assert not missing, f"playbooks without an AWX job template: {missing}"


@pytest.mark.parametrize("ct", DATA["berqenas_awx_credential_types"], ids=lambda ct: ct["name"])
def test_credential_types_keep_secrets_secret(ct):
    fields = {f["id"]: f for f in ct["inputs"]["fields"]}
    assert set(ct["inputs"].get("required", [])) <= set(fields)
    injectors = ct["injectors"]
    assert set(injectors) <= {"extra_vars", "env", "file"}
    used = set()
    for section in injectors.values():
        for value in section.values():
            used |= set(re.findall(r"\{\{\s*([a-z_]+)", value))
    assert used - {"tower"} <= set(fields), f"injectors use undefined fields: {used - set(fields)}"
    for fid, f in fields.items():
        if f.get("secret"):  # a secret reaches a job only through a file AWX writes, or an extra var it hides
            for k, v in (injectors.get("env") or {}).items():
                assert "{{ %s }}" % fid not in v, f"{ct['name']}: secret {fid} in env var {k}"


@pytest.mark.parametrize("jt", DATA["berqenas_awx_job_templates"], ids=lambda jt: jt["name"])
def test_injected_extra_vars_are_inputs_the_playbook_reads(jt):
    text = _text_read(jt["playbook"])
    for name in jt.get("credentials", []):
        assert name in CTYPES, f"{jt['name']}: no credential type {name!r}"
        for var in (CTYPES[name]["injectors"].get("extra_vars") or {}):
            assert var in text, f"{jt['name']}: credential {name!r} injects {var}, which {jt['playbook']} never reads"

"""AWX job templates: every survey variable is an input its playbook validates; playbooks exist."""

import os

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


def test_credential_type_injects_only_extra_vars_the_playbooks_read():
    (ct,) = DATA["berqenas_awx_credential_types"]
    assert set(ct["injectors"]["extra_vars"]) == {"berqenas_db_user", "berqenas_db_password"}
    assert any(f.get("secret") for f in ct["inputs"]["fields"] if f["id"] == "password")
    for pb in ("tenant_create.yml", "tenant_delete.yml"):
        text = open(os.path.join(REPO, "playbooks", pb)).read()
        assert "berqenas_db_password" in text and "berqenas_db_user" in text

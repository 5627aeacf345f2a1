"""The modules against a real Hasura engine: run only when BERQENAS_TEST_HASURA_URL (+ _ADMIN_SECRET) is set."""

import json

import pytest

from .modrun import run_module

pytestmark = pytest.mark.hasura


def conn(real, **kw):
    return dict({"hasura_url": real["url"], "hasura_admin_secret": real["admin_secret"]}, **kw)


def test_real_wrong_admin_secret_is_a_clear_error(hasura_real):
    res = run_module("hasura_table_info", conn(hasura_real, hasura_admin_secret="berqenas-not-the-secret"))
    assert res.get("failed") and "refused the admin secret" in res["msg"], res
    assert "berqenas-not-the-secret" not in json.dumps(res)


def test_real_info_and_missing_table_changes_nothing(hasura_real):
    info = run_module("hasura_table_info", conn(hasura_real))
    assert not info.get("failed") and info["version"].startswith("v2"), info
    source = info["sources"][0]["name"] if info["sources"] else "default"
    check = run_module("hasura_table", conn(hasura_real, source=source, schema="public",
                                            tables=["berqenas_no_such_table_x"]), check=True)
    res = run_module("hasura_table", conn(hasura_real, source=source, schema="public",
                                          tables=["berqenas_no_such_table_x"]))
    assert res.get("failed"), res
    if info["sources"]:
        assert check["changed"] and "no such table/view exists" in res["msg"], res["msg"]
    else:
        assert "does not exist" in res["msg"]
    after = run_module("hasura_table_info", conn(hasura_real))
    assert after["resource_version"] == info["resource_version"]
    assert hasura_real["admin_secret"] not in json.dumps([info, res, after]) or not hasura_real["admin_secret"]

"""direction / conflict_policy / conflict_timestamp_column: refused with a clear message before anything is touched."""

import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S
from ansible_collections.berqenas.platform.plugins.module_utils import sync_capture as C
from ansible_collections.berqenas.platform.plugins.module_utils import validation as v

pytestmark = pytest.mark.unit


def spec(**kw):
    return S.table_specs([dict({"source": "[dbo].[T]"}, **kw)], "acme")[0]


def test_defaults_and_accepted_combinations():
    s = spec()
    assert (s.direction, s.conflict_policy, s.conflict_timestamp_column) == ("forward", None, None)
    s = spec(direction="both")
    assert (s.direction, s.conflict_policy) == ("both", "source_wins")
    s = spec(direction="both", conflict_policy="latest_wins", conflict_timestamp_column="changed_at")
    assert (s.conflict_policy, s.conflict_timestamp_column) == ("latest_wins", "changed_at")
    assert spec(direction="both", conflict_policy="target_wins", delete_detection="pk_diff").conflict_policy == \
        "target_wins"


@pytest.mark.parametrize("kw,msg", [
    (dict(direction="sideways"), "direction must be one of forward, both"),
    (dict(direction="both", conflict_policy="newest"), "conflict_policy must be one of source_wins"),
    (dict(direction="both", conflict_policy="latest_wins"), "needs conflict_timestamp_column"),
    (dict(direction="both", conflict_policy="latest_wins", conflict_timestamp_column=" "),
     "needs conflict_timestamp_column"),
    (dict(direction="both", conflict_timestamp_column="c"), "used only by conflict_policy latest_wins"),
    (dict(conflict_policy="target_wins"), "apply only to direction both"),
    (dict(direction="both", mode="full"), "direction both needs mode delta"),
    (dict(direction="both", delete_detection="soft_delete", soft_delete_column="gone"), "soft_delete"),
    (dict(direction=["both"]), "direction must be one of"),
])
def test_bad_combinations_are_refused(kw, msg):
    with pytest.raises(S.SyncError, match=msg):
        spec(**kw)


def test_the_rule_lives_in_validation():
    with pytest.raises(v.ValidationError, match="table x: direction"):
        v.sync_direction_options("x", None, None, "none", "table x")
    assert v.sync_direction_options("both", None, None, "none") == ("both", "source_wins", None)


def test_coalesce_keeps_the_last_action_per_key():
    e = [(5, 1, "I", {"id": 1}, None, None, None), (5, 2, "U", {"id": 1}, None, None, {"id": 1, "v": "a"}),
         (6, 3, "D", {"id": 1}, b"\x01", None, {"id": 1, "v": "b"}),
         (6, 4, "U", {"id": 2}, b"\x02", None, {"id": 2, "v": "c"}), (7, 5, "U", {"id": 2}, b"\x02", None, {})]
    # the last op and old_rv; the FIRST entry's old row (what PostgreSQL started from in the window)
    assert C.coalesce(e, ["id"]) == {(1,): ("D", {"id": 1}, b"\x01", None, None, None),
                                     (2,): ("U", {"id": 2}, b"\x02", None, {"id": 2, "v": "c"}, None)}
    # entries read with the current rows (pending(columns=...)): the row comes along, None for a gone one
    rows = [e[0] + (None,), e[3] + ({"id": 2, "v": "d"},), e[4] + ({"id": 2, "v": "d"},)]
    assert C.coalesce(rows, ["id"]) == {(1,): ("I", {"id": 1}, None, None, None, None),
                                        (2,): ("U", {"id": 2}, b"\x02", None, {"id": 2, "v": "c"},
                                               {"id": 2, "v": "d"})}

"""The T-SQL contract: quoting, parsing and parameter shapes (pure)."""

import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import mssql as M
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_tsql as T

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name,quoted", [
    ("a", "[a]"),
    ("a]b", "[a]]b]"),
    ("x'; DROP TABLE t;--", "[x'; DROP TABLE t;--]"),
    ("ünï 𝄞", "[ünï 𝄞]"),
    ("[[", "[[[]"),
])
def test_quote_ident(name, quoted):
    assert T.quote_ident(name) == quoted


@pytest.mark.parametrize("bad", ["", "a\x00b", "x" * 129, None])
def test_quote_ident_rejects(bad):
    with pytest.raises(T.TsqlError):
        T.quote_ident(bad)


def test_quote_ident_128_ok():
    assert T.quote_ident("x" * 128) == "[" + "x" * 128 + "]"


@pytest.mark.parametrize("text,parts", [
    ("[dbo].[Orders]", ("dbo", "Orders")),
    ("dbo.Orders", ("dbo", "Orders")),
    ("Orders", ("dbo", "Orders")),
    ("[s.x].[a]]b]", ("s.x", "a]b")),
    ("[dbo].[we;ird 'name\"]", ("dbo", "we;ird 'name\"")),
])
def test_parse_two_part_name(text, parts):
    assert T.parse_two_part_name(text) == parts
    assert T.parse_two_part_name(T.quote_table(*parts)) == parts


@pytest.mark.parametrize("bad", ["", "[dbo", "a.b.c", "[a]x", "a[b", "[]"])
def test_parse_two_part_name_rejects(bad):
    with pytest.raises(T.TsqlError):
        T.parse_two_part_name(bad)


def test_rv_param_is_bytearray_and_interpolated_as_hex():
    p = T.rv_param(0x4142434445464748)  # ASCII bytes: plain bytes would become a string literal
    assert isinstance(p, bytearray) and len(p) == 8
    sql = M.render(T.window_select("dbo", "t", ["id"], "rv"), (p, T.rv_param(2 ** 64 - 1)))
    assert sql == ("SELECT [id] FROM [dbo].[t] WHERE [rv] >= 0x4142434445464748 "
                            "AND [rv] < 0xffffffffffffffff ORDER BY [rv]")
    assert T.rv_int(bytes(p)) == 0x4142434445464748
    assert T.rv_hex(1) == "0x0000000000000001"
    with pytest.raises(T.TsqlError):
        T.rv_param(-1)
    with pytest.raises(T.TsqlError):
        T.rv_param(b"123")


def test_statement_shapes_quote_identifiers():
    shapes = T.all_statement_shapes()
    assert shapes["window_select"] == (
        "SELECT [id], [name], [rv] FROM [dbo].[Orders] WHERE [rv] >= \x00 AND [rv] < \x00 ORDER BY [rv]")
    assert shapes["pk_select"] == "SELECT [id] FROM [dbo].[Orders]"
    assert "MIN_ACTIVE_ROWVERSION()" in shapes["WATERMARKS"]


def test_change_tracking_statements_quote_identifiers():
    assert T.ct_deleted_keys("dbo", "we]ird", ["i]d", "k"]) == (
        "SELECT CT.[i]]d], CT.[k] FROM CHANGETABLE(CHANGES [dbo].[we]]ird], \x00) AS CT"
        " WHERE CT.SYS_CHANGE_OPERATION = N'D'")
    assert T.ct_deleted_keys("dbo", "we]ird", ["i]d"], skip_context=True) == (
        "SELECT CT.[i]]d] FROM CHANGETABLE(CHANGES [dbo].[we]]ird], \x00) AS CT WHERE CT.SYS_CHANGE_OPERATION = N'D'"
        " AND (CT.SYS_CHANGE_CONTEXT IS NULL OR CT.SYS_CHANGE_CONTEXT <> \x00)")
    assert M.render(T.CT_CONTEXT, (bytearray(b"\x01"),)) == "WITH CHANGE_TRACKING_CONTEXT (0x01)"
    assert "OBJECT_ID(\x00)" in T.ct_versions() and "CHANGE_TRACKING_CURRENT_VERSION()" in T.ct_versions()
    with pytest.raises(T.TsqlError):
        T.ct_deleted_keys("dbo", "T", [])


PERCENT = "T%s %d%%%(x)s]'\""


def test_render_leaves_placeholder_syntax_in_names_and_values_alone():
    """pymssql's own substitution takes the %s / %d inside the bracket-quoted names for placeholders; render
    fills only the SLOTs, and a literal it wrote is never scanned again."""
    from pymssql import _mssql

    text = T.window_select("dbo", PERCENT, ["k%s", "f%(x)s"], "rv%d")
    with pytest.raises(ValueError, match="more placeholders"):
        _mssql.substitute_params(text.replace(T.SLOT, "%s"), (T.rv_param(1), T.rv_param(2)))
    assert M.render(text, (T.rv_param(1), T.rv_param(2))) == (
        "SELECT [k%s], [f%(x)s] FROM [dbo].[T%s %d%%%(x)s]]'\"] WHERE [rv%d] >= 0x0000000000000001"
        " AND [rv%d] < 0x0000000000000002 ORDER BY [rv%d]")
    assert M.render(T.TABLE_EXISTS, ("dbo", "it's %s")) == (
        "SELECT TABLE_TYPE FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = N'dbo' AND TABLE_NAME = N'it''s %s'")
    assert M.render(T.ct_deleted_keys("dbo", PERCENT, ["%d"]), (7,)).startswith(
        "SELECT CT.[%d] FROM CHANGETABLE(CHANGES [dbo].[T%s %d%%%(x)s]]'\"], 7) AS CT")
    assert M.render("SELECT [%s]", None) == "SELECT [%s]"
    assert M.render(T.SLOT + T.SLOT, ("a", 1), quote=lambda v: "<%s>" % v) == "<a><1>"
    with pytest.raises(T.TsqlError, match="2 value places for 1 values"):
        M.render(T.window_count("dbo", "t", "rv"), (T.rv_param(1),))

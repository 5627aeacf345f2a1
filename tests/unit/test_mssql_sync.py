"""Pure parts of the sync engine: type mapping, table specs, row transforms, error classes."""

import datetime as dt

import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import mssql as M
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S

pytestmark = pytest.mark.unit


def col(name, t, **kw):
    d = {"COLUMN_NAME": name, "DATA_TYPE": t, "IS_NULLABLE": "YES"}
    d.update(kw)
    return d


@pytest.mark.parametrize("c,pg,copy", [
    (col("a", "bit"), "boolean", "bool"),
    (col("a", "tinyint"), "smallint", "int2"),
    (col("a", "int"), "integer", "int4"),
    (col("a", "bigint"), "bigint", "int8"),
    (col("a", "decimal", NUMERIC_PRECISION=38, NUMERIC_SCALE=38), "numeric(38,38)", "numeric"),
    (col("a", "numeric", NUMERIC_PRECISION=18, NUMERIC_SCALE=4), "numeric(18,4)", "numeric"),
    (col("a", "money"), "numeric(19,4)", "numeric"),
    (col("a", "smallmoney"), "numeric(10,4)", "numeric"),
    (col("a", "float", NUMERIC_PRECISION=53), "double precision", "float8"),
    (col("a", "float", NUMERIC_PRECISION=24), "real", "float4"),
    (col("a", "real", NUMERIC_PRECISION=24), "real", "float4"),
    (col("a", "datetime"), "timestamp(3) without time zone", "timestamp"),
    (col("a", "smalldatetime"), "timestamp(0) without time zone", "timestamp"),
    (col("a", "datetime2", DATETIME_PRECISION=3), "timestamp(3) without time zone", "timestamp"),
    (col("a", "datetime2", DATETIME_PRECISION=7), "timestamp(6) without time zone", "timestamp"),
    (col("a", "time", DATETIME_PRECISION=7), "time(6) without time zone", "time"),
    (col("a", "datetimeoffset", DATETIME_PRECISION=2), "timestamp(2) with time zone", "timestamptz"),
    (col("a", "nvarchar", CHARACTER_MAXIMUM_LENGTH=4000), "character varying(4000)", "text"),
    (col("a", "varchar", CHARACTER_MAXIMUM_LENGTH=-1), "text", "text"),
    (col("a", "nchar", CHARACTER_MAXIMUM_LENGTH=10), "character varying(10)", "text"),
    (col("a", "ntext"), "text", "text"),
    (col("a", "xml"), "text", "text"),
    (col("a", "varbinary", CHARACTER_MAXIMUM_LENGTH=-1), "bytea", "bytea"),
    (col("a", "uniqueidentifier"), "uuid", "uuid"),
    (col("a", "timestamp"), "bytea", "bytea"),
])
def test_map_column(c, pg, copy):
    m = S.map_column(c)
    assert (m.pg_type, m.copy_type) == (pg, copy)


def test_precision_notes_and_offset_column():
    assert "100-ns digit is dropped" in S.map_column(col("a", "datetime2", DATETIME_PRECISION=7)).note
    assert S.map_column(col("a", "datetime2", DATETIME_PRECISION=6)).note is None
    m = S.map_column(col("When", "datetimeoffset", DATETIME_PRECISION=7))
    assert m.target_columns() == [("When", "timestamp(6) with time zone", "timestamptz"),
                                  ("When_offset_min", "smallint", "int2")]


@pytest.mark.parametrize("c", [col("a", "sql_variant"), col("a", "geography"),
                               col("a", "decimal", NUMERIC_PRECISION=39, NUMERIC_SCALE=0)])
def test_map_column_refuses(c):
    with pytest.raises(S.SyncError):
        S.map_column(c)


def test_table_specs_validation():
    specs = S.table_specs(["[dbo].[Orders]", {"source": "sales.Items", "target_table": "items",
                                             "delete_detection": "pk_diff"}], "acme")
    assert [(s.source_schema, s.source_table, s.target_schema, s.target_table) for s in specs] == [
        ("dbo", "Orders", "acme", "Orders"), ("sales", "Items", "acme", "items")]
    bad = [
        ([], "nothing to sync"),
        (["[dbo].[A]", "dbo.A"], "listed twice"),
        (["[dbo].[A]", {"source": "[x].[B]", "target_table": "A"}], "both map to target"),
        ([{"source": "[dbo].[A]", "mode": "sometimes"}], "mode must be"),
        ([{"source": "[dbo].[A]", "delete_detection": "soft_delete"}], "needs soft_delete_column"),
        ([{"source": "[dbo].[A]", "colour": "red"}], "unknown option"),
        ([{"source": "[dbo].[%s]" % ("é" * 40)}], "PostgreSQL allows 63"),
        ([{"source": "[dbo"}], "unterminated"),
        ([{"source": "[dbo].[A]", "exclude": ["x\x00"]}], "NUL"),
    ]
    for tables, msg in bad:
        with pytest.raises(S.SyncError, match=msg):
            S.table_specs(tables, "acme")


def test_transform_nul_rules_and_offsets():
    cms = [S.map_column(col("s", "nvarchar", CHARACTER_MAXIMUM_LENGTH=-1)),
           S.map_column(col("d", "datetimeoffset", DATETIME_PRECISION=7))]
    counts = {}
    tr = S.make_transform(cms, "strip", counts)
    tz = dt.timezone(dt.timedelta(hours=5, minutes=45))
    v = dt.datetime(2020, 1, 1, tzinfo=tz)
    assert tr(("a\x00b", v)) == ["ab", v, 345]
    assert tr((None, None)) == [None, None, None]
    assert counts == {"s": 1}
    tr = S.make_transform(cms[:1], "replace", counts)
    assert tr(("a\x00",)) == ("a\ufffd",)
    row = ("plain",)
    assert tr(row) is row
    with pytest.raises(S.SyncError, match="U\\+0000"):
        S.make_transform(cms[:1], "fail", {})(("\x00",))
    assert S.make_transform([S.map_column(col("i", "int"))], "strip", {}) is None


def test_check_pg_ident():
    assert S.check_pg_ident("x" * 63, "t") == "x" * 63
    with pytest.raises(S.SyncError, match="64 bytes"):
        S.check_pg_ident("x" * 62 + "é", "t")


def test_classify_by_the_servers_error_number():
    pymssql = pytest.importorskip("pymssql")
    OE = pymssql.exceptions.OperationalError
    login = OE((18456, b"Login failed for user 'sa'.DB-Lib error message 20018, severity 14:\nGeneral SQL Server "
                       b"error: Check messages from the SQL Server\nDB-Lib error message 20002, severity 9:\n"))
    e = M.classify(login, "connect")
    assert not e.transient and "login failed" in str(e) and "18456" in str(e)
    # the same stale number on a refused connection (pymssql keeps it process-wide): a network error
    stale = OE((18456, b"DB-Lib error message 20009, severity 9:\nUnable to connect: TDS server is unavailable or "
                       b"does not exist (127.0.0.1)\nNet-Lib error during Connection refused (111)\n"))
    e = M.classify(stale, "connect")
    assert e.transient and "login failed" not in str(e).lower() and "20009" in str(e)
    # message text alone never makes a login failure
    assert M.classify(OE("Login failed for user 'x'"), "connect").transient
    e = M.classify(OE((4060, b"Cannot open database \"X\".DB-Lib error message 20018, severity 11:\n")), "connect")
    assert not e.transient and "cannot open the database" in str(e)
    e = M.classify(pymssql.exceptions.ProgrammingError((208, b"Invalid object name 'x'.DB-Lib error message 20018,"
                                                                b" severity 16:\n")), "read")
    assert not e.transient and "Invalid object name" in str(e)
    assert M.classify(OE((1205, b"Transaction was deadlocked.DB-Lib error message 20018, severity 13:\n")),
                       "read").transient
    assert M.server_error_number(OE((18456, b"no DB-Lib part"))) == 18456


# ---- ReadAhead: the source read on a thread while the engine writes -------------------------------
def test_read_ahead_keeps_order_and_raises_the_source_error_where_it_occurred():
    def batches():
        yield [1, 2]
        yield [3]
        raise S.SourceError("read window: connection reset", transient=True)

    got = []
    ra = S.ReadAhead(batches(), depth=1)
    with pytest.raises(S.SourceError, match="connection reset"):
        for b in ra:
            got.append(b)
    ra.close()
    assert got == [[1, 2], [3]]


def test_read_ahead_close_stops_the_reader_and_closes_the_source_stream():
    import threading

    state = {"read": 0, "closed_in": None}

    def batches():
        try:
            while True:
                state["read"] += 1
                yield [state["read"]]
        finally:
            state["closed_in"] = threading.current_thread().name

    ra = S.ReadAhead(batches(), depth=2)
    it = iter(ra)
    assert next(it) == [1] and next(it) == [2]
    ra.close()
    assert not ra._thread.is_alive()
    # read at most depth batches beyond what was taken (plus the one being put), and closed by the reader
    assert state["read"] <= 5 and state["closed_in"] == "bq-sync-read-ahead"

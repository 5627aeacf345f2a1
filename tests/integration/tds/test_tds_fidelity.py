"""The TDS emulator through real drivers: the wire-level tests run with pymssql (FreeTDS) and python-tds (pytds),
the server-semantics tests with pymssql (ONE_DRIVER below); each also against a real SQL Server when
BERQENAS_TEST_MSSQL_DSN is set (fixture ``client_db``: server emulator/real x driver pymssql/pytds)."""

import contextlib
import datetime
import decimal
import threading
import time
import uuid

import pytest

from tests.support.env import setup_import_path

setup_import_path()
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_tsql  # noqa: E402

pytestmark = pytest.mark.tds

# Tests of what the server does (rowversion, transactions, catalog, collation, casts, DDL) run with the product's
# driver, pymssql (plugins/module_utils/mssql.py) only: the statements and their results do not depend on the
# client library, and each second-driver run cost as much as the first. What does depend on it (type encoding,
# parameters, login, errors, kill, timeout, attention, rowcounts/TDS 7.3, names, the sync's statements) keeps
# both drivers.
ONE_DRIVER = pytest.mark.parametrize("tds_client", ["pymssql"], indirect=True)


def _ph(statement):
    """A mssql_tsql statement with the drivers' ``%s`` placeholders at its value places (SLOTs: the product
    renders them itself, mssql.render); these names hold no ``%``."""
    return statement.replace(mssql_tsql.SLOT, "%s")

D = decimal.Decimal
TZ530 = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
TZM8 = datetime.timezone(datetime.timedelta(hours=-8))

# (column type, T-SQL literal, value both drivers return for SQL Server)
TYPES = [
    ("tinyint", "255", 255),
    ("smallint", "-32768", -32768),
    ("int", "-2147483648", -2147483648),
    ("bigint", "9223372036854775807", 9223372036854775807),
    ("bit", "1", True),
    ("decimal(38,10)", "1234567890123456789012345678.0123456789", D("1234567890123456789012345678.0123456789")),
    ("numeric(5,2)", "-123.45", D("-123.45")),
    ("decimal(9,0)", "0", D("0")),
    ("money", "922337203685477.5807", D("922337203685477.5807")),
    ("smallmoney", "-214748.3648", D("-214748.3648")),
    ("float", "3.141592653589793", 3.141592653589793),
    ("real", "1.5", 1.5),
    ("date", "'9999-12-31'", datetime.date(9999, 12, 31)),
    ("time(7)", "'23:59:59.1234567'", datetime.time(23, 59, 59, 123456)),
    ("time(0)", "'01:02:03'", datetime.time(1, 2, 3)),
    ("datetime", "'2020-02-29 13:14:15.997'", datetime.datetime(2020, 2, 29, 13, 14, 15, 997000)),
    ("smalldatetime", "'2079-06-06 23:58:29'", datetime.datetime(2079, 6, 6, 23, 58)),
    ("datetime2(7)", "'0001-01-01 00:00:00.1234567'", datetime.datetime(1, 1, 1, 0, 0, 0, 123456)),
    ("datetime2(3)", "'2024-06-30 23:59:59.123'", datetime.datetime(2024, 6, 30, 23, 59, 59, 123000)),
    ("datetimeoffset(7)", "'2020-01-01 10:00:00.1234567 +05:30'",
     datetime.datetime(2020, 1, 1, 10, 0, 0, 123456, tzinfo=TZ530)),
    ("datetimeoffset(0)", "'1999-12-31 23:00:00 -08:00'", datetime.datetime(1999, 12, 31, 23, 0, 0, tzinfo=TZM8)),
    ("char(5)", "'ab'", "ab   "),
    ("varchar(10)", "'h\u00e9llo'", "h\u00e9llo"),
    ("varchar(max)", "REPLICATE_X", "x" * 9000),
    ("nchar(3)", "N'\u65e5'", "\u65e5  "),
    ("nvarchar(20)", "N'\U0001F600 ok'", "\U0001F600 ok"),
    ("nvarchar(max)", "N'ab' + NCHAR(0) + N'cd'", "ab\x00cd"),
    ("binary(4)", "0x0102", b"\x01\x02\x00\x00"),
    ("varbinary(10)", "0x00FF", b"\x00\xff"),
    ("varbinary(max)", "0x" + "AB" * 9000, b"\xab" * 9000),
    ("uniqueidentifier", "'6F9619FF-8B86-D011-B42D-00C04FC964FF'", uuid.UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff")),
]


def _first_result(cur):
    """Move to the batch's first result set (pytds stops at the DONE of each statement, pymssql skips them)."""
    while cur.description is None and cur.nextset():
        pass
    return cur


def _literal(lit):
    if lit == "REPLICATE_X":
        return "'" + "x" * 9000 + "'"
    return lit


def test_every_type_round_trips_with_nulls(client_db):
    cols = ", ".join("c%d %s NULL" % (i, t) for i, (t, _, _) in enumerate(TYPES))
    names = ", ".join("c%d" % i for i in range(len(TYPES)))
    with contextlib.closing(client_db.connect()) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE dbo.alltypes (id int NOT NULL PRIMARY KEY, %s, rv rowversion)" % cols)
        cur.execute("INSERT INTO dbo.alltypes (id, %s) VALUES (1, %s)" % (names, ", ".join(_literal(v)
                                                                                             for _, v, _ in TYPES)))
        cur.execute("INSERT INTO dbo.alltypes (id) VALUES (2)")
        cur.execute("SELECT %s, rv FROM dbo.alltypes ORDER BY id" % names)
        full, empty = cur.fetchall()
        desc = cur.description
    for i, (t, _, expected) in enumerate(TYPES):
        got = full[i]
        assert type(got) is type(expected), (t, got)
        assert got == expected, (t, got, expected)
        if isinstance(expected, datetime.datetime) and expected.tzinfo is not None:
            assert got.utcoffset() == expected.utcoffset(), t
    assert isinstance(full[-1], bytes) and len(full[-1]) == 8  # rowversion
    assert list(empty[:-1]) == [None] * len(TYPES)
    assert [d[0] for d in desc] == ["c%d" % i for i in range(len(TYPES))] + ["rv"]
    sdt = [i for i, (t, _, _) in enumerate(TYPES) if t == "smalldatetime"][0]
    with contextlib.closing(client_db.connect()) as conn:  # stored rounded, so it compares as rounded
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*) FROM dbo.alltypes WHERE c%d = '2079-06-06 23:58:00'" % sdt)
        assert cur.fetchone()[0] == 1


def test_parameters_round_trip(client_db):
    """pymssql interpolates them into the batch; pytds sends them typed through sp_executesql."""
    client_db.execute("CREATE TABLE dbo.p (id int PRIMARY KEY, d decimal(20,6), s nvarchar(50), b varbinary(20),"
                     " g uniqueidentifier, t datetime2(6))")
    vals = (7, D("-12345678901234.123456"), "it's \u00fcnicode \U0001F680", client_db.client.binary(b"\x00\x01ABC"),
            uuid.UUID("12345678-1234-5678-1234-567812345678"), datetime.datetime(2021, 5, 6, 7, 8, 9, 123456))
    with contextlib.closing(client_db.connect(use_datetime2=True)) as conn:
        cur = conn.cursor()
        cur.execute("INSERT INTO dbo.p (id, d, s, b, g, t) VALUES (%s, %s, %s, %s, %s, %s)", vals)
        cur.execute("SELECT id, d, s, b, g, t FROM dbo.p WHERE s = %s", (vals[2],))
        row = cur.fetchone()
    assert row == (7, vals[1], vals[2], bytes(vals[3]), vals[4], vals[5])


@ONE_DRIVER
def test_rowversion_order_and_dbts(client_db):
    with contextlib.closing(client_db.connect()) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE dbo.t (id int PRIMARY KEY, v int, rv rowversion)")
        cur.execute("SELECT @@DBTS")
        start = cur.fetchone()[0]
        cur.execute("INSERT INTO dbo.t (id, v) VALUES (1, 1)")
        cur.execute("INSERT INTO dbo.t (id, v) VALUES (2, 2)")
        cur.execute("UPDATE dbo.t SET v = v WHERE id = 1")  # a no-op update still bumps
        cur.execute("SELECT id, rv FROM dbo.t ORDER BY rv")
        rows = cur.fetchall()
        cur.execute("SELECT @@DBTS, MIN_ACTIVE_ROWVERSION()")
        dbts, mar = cur.fetchone()
        cur.execute("SELECT MAX(rv), MIN(rv) FROM dbo.t")
        assert cur.fetchone() == (dbts, rows[0][1])
    assert [r[0] for r in rows] == [2, 1]
    rvs = [int.from_bytes(r[1], "big") for r in rows]
    assert int.from_bytes(start, "big") < rvs[0] < rvs[1] == int.from_bytes(dbts, "big")
    assert int.from_bytes(mar, "big") == int.from_bytes(dbts, "big") + 1
    # window predicate with a binary watermark (the sync engine's rv_param, in the driver's binary form)
    lo, hi = (client_db.client.binary(mssql_tsql.rv_param(v)) for v in (rvs[0], mar))
    with contextlib.closing(client_db.connect()) as conn:
        cur = conn.cursor()
        cur.execute(_ph(mssql_tsql.window_select("dbo", "t", ["id", "v", "rv"], "rv")), (lo, hi))
        assert [r[0] for r in cur.fetchall()] == [2, 1]


@ONE_DRIVER
def test_min_active_rowversion_held_by_open_transaction(client_db):
    client_db.execute("CREATE TABLE dbo.t (id int PRIMARY KEY, rv rowversion)")
    writer = client_db.connect(autocommit=False)
    reader = client_db.connect()
    try:
        wc = writer.cursor()
        # inside the driver's transaction (pymssql: a BEGIN TRAN batch; pytds: TM_BEGIN_XACT)
        wc.execute("INSERT INTO dbo.t (id) VALUES (1)")
        rc = reader.cursor()
        rc.execute("INSERT INTO dbo.t (id) VALUES (2)")  # committed, later value
        rc.execute("SELECT MIN_ACTIVE_ROWVERSION(), @@DBTS")
        mar, dbts = (int.from_bytes(x, "big") for x in rc.fetchone())
        wc.execute("SELECT rv FROM dbo.t WHERE id = 1")
        held = int.from_bytes(wc.fetchone()[0], "big")
        assert mar == held < dbts
        writer.commit()
        rc.execute("SELECT MIN_ACTIVE_ROWVERSION(), @@DBTS")
        mar2, dbts2 = (int.from_bytes(x, "big") for x in rc.fetchone())
        assert mar2 == dbts2 + 1 and dbts2 >= dbts
    finally:
        writer.close()
        reader.close()


@ONE_DRIVER
def test_rollback_keeps_nothing_and_transaction_statements(client_db):
    client_db.execute("CREATE TABLE dbo.t (id int PRIMARY KEY, rv rowversion)")
    with contextlib.closing(client_db.connect()) as conn:
        cur = conn.cursor()
        cur.execute("BEGIN TRAN; INSERT INTO dbo.t (id) VALUES (1); SELECT @@TRANCOUNT")
        assert _first_result(cur).fetchone()[0] == 1
        cur.execute("ROLLBACK TRAN")
        cur.execute("BEGIN TRANSACTION")
        cur.execute("INSERT INTO dbo.t (id) VALUES (2)")
        with pytest.raises(client_db.client.module.IntegrityError) as e:
            cur.execute("INSERT INTO dbo.t (id) VALUES (2)")  # fails alone, transaction goes on
        assert client_db.client.errnum(e.value) == 2627
        cur.execute("COMMIT TRANSACTION")
        cur.execute("SELECT id FROM dbo.t")
        assert cur.fetchall() == [(2,)]


def test_login_failure_is_18456(client_db):
    with pytest.raises(client_db.client.module.OperationalError) as e:
        client_db.connect(password="definitely-wrong")
    # (the text is not asserted: pymssql keeps login messages in process-wide state and may report an
    # earlier failed login's text; the number is per attempt)
    assert client_db.client.errnum(e.value) == 18456


def test_errors_have_sql_server_numbers_and_classes(client_db):
    drv = client_db.client.module
    client_db.execute("CREATE TABLE dbo.t (id int PRIMARY KEY, s nvarchar(3))")
    with contextlib.closing(client_db.connect()) as conn:
        cur = conn.cursor()
        cases = [
            ("SELECT 1 +", drv.ProgrammingError, 102),
            ("SELECT FROM WHERE", drv.OperationalError, 156),  # both drivers map 102 but not 156
            ("SELECT * FROM dbo.no_such_table", drv.ProgrammingError, 208),
            ("SELECT no_such_column FROM dbo.t", drv.ProgrammingError, 207),
            ("INSERT INTO dbo.t (id) VALUES (NULL)", drv.IntegrityError, 515),
            ("SELECT NO_SUCH_FUNCTION(1)", drv.OperationalError, 195),
        ]
        for statement, exc, number in cases:
            with pytest.raises(exc) as e:
                cur.execute(statement)
            assert client_db.client.errnum(e.value) == number, statement
        cur.execute("INSERT INTO dbo.t (id) VALUES (1)")
        with pytest.raises(client_db.client.module.IntegrityError) as e:
            cur.execute("INSERT INTO dbo.t (id) VALUES (1)")
        assert client_db.client.errnum(e.value) == 2627 and "PRIMARY KEY" in client_db.client.errtext(e.value)
        cur.execute("SELECT COUNT(*) FROM dbo.t")  # the connection is still usable
        assert cur.fetchone()[0] == 1


def test_killed_connection_raises_a_connection_error(client_db):
    victim = client_db.connect()
    try:
        cur = victim.cursor()
        cur.execute("SELECT @@SPID")
        spid = cur.fetchone()[0]
        client_db.execute("KILL %d" % spid)
        with pytest.raises(Exception) as e:  # noqa: PT011 - the driver's kind is checked below
            for _ in range(3):  # the first round trip may still be in flight
                cur.execute("SELECT 1")
                cur.fetchall()
        assert client_db.client.is_connection_lost(e.value), repr(e.value)
    finally:
        with contextlib.suppress(Exception):
            victim.close()


def test_query_timeout_raises_and_releases_the_server_side(client_db):
    client_db.execute("CREATE TABLE dbo.t (id int PRIMARY KEY, v int)")
    client_db.execute("INSERT INTO dbo.t (id, v) VALUES (1, 0)")
    holder = client_db.connect(autocommit=False)
    waiter = client_db.connect(timeout=1)
    try:
        holder.cursor().execute("UPDATE dbo.t SET v = 1 WHERE id = 1")  # row lock held, not committed
        cur = waiter.cursor()
        t0 = time.monotonic()
        with pytest.raises(Exception) as e:  # noqa: PT011 - the driver's kind is checked below
            cur.execute("UPDATE dbo.t SET v = 2 WHERE id = 1")
        assert time.monotonic() - t0 < 20  # the 1 s timeout fired: the lock is held until the finally below
        assert client_db.client.is_timeout(e.value), repr(e.value)
    finally:
        if client_db.client.name == "pymssql":
            with contextlib.suppress(Exception):
                waiter._conn.query_timeout = 0  # DB-Lib's dbsettime is process-wide
        with contextlib.suppress(Exception):
            waiter.close()
    holder.commit()
    holder.close()
    # the abandoned statement did not survive on the server: a new writer is not blocked and wins
    client_db.execute("UPDATE dbo.t SET v = 3 WHERE id = 1")
    assert client_db.execute("SELECT v FROM dbo.t WHERE id = 1") == [(3,)]


def test_cancel_of_pending_rows_sends_attention(client_db):
    client_db.execute("CREATE TABLE dbo.big (id int PRIMARY KEY, pad nvarchar(200))")
    for base in range(0, 20000, 1000):
        values = ", ".join("(%d, REPLICATE_PAD)" % i for i in range(base, base + 1000))
        client_db.execute("INSERT INTO dbo.big (id, pad) VALUES " + values.replace("REPLICATE_PAD", "N'" + "p" * 150
                                                                                   + "'"))
    with contextlib.closing(client_db.connect()) as conn:
        cur = conn.cursor()
        cur.execute("SELECT id, pad FROM dbo.big ORDER BY id")
        assert cur.fetchone()[0] == 0
        client_db.client.cancel(conn, cur)  # attention, then wait for the server's acknowledgement
        cur.execute("SELECT COUNT(*) FROM dbo.big")  # the next result is not polluted by the old one
        assert cur.fetchall() == [(20000,)]
        cur.execute("SELECT id FROM dbo.big WHERE id < 3 ORDER BY id")
        assert cur.fetchone() == (0,)
        cur.execute("SELECT MAX(id) FROM dbo.big")  # pymssql cancels the pending rows itself
        assert cur.fetchall() == [(19999,)]


def test_sync_engine_statements(client_db):
    client_db.execute("CREATE TABLE dbo.Orders (id int NOT NULL, name nvarchar(40) NULL, rv rowversion,"
                     " CONSTRAINT PK_Orders PRIMARY KEY (id))")
    client_db.execute("INSERT INTO dbo.Orders (id, name) VALUES (1, N'a'), (2, N'b'), (3, NULL)")
    with contextlib.closing(client_db.connect()) as conn:
        cur = conn.cursor()
        cur.execute(mssql_tsql.SERVER_VERSION)
        version, banner = cur.fetchone()
        assert version.split(".")[0].isdigit() and "Microsoft SQL Server" in banner
        cur.execute(mssql_tsql.DATABASE_IDENTITY)
        guid, fork = cur.fetchone()
        assert isinstance(guid, uuid.UUID) and isinstance(fork, uuid.UUID)
        cur.execute(mssql_tsql.WATERMARKS)
        mar, dbts = cur.fetchone()
        assert int.from_bytes(mar, "big") == int.from_bytes(dbts, "big") + 1
        cur.execute(_ph(mssql_tsql.TABLE_EXISTS), ("dbo", "Orders"))
        assert cur.fetchall() == [("BASE TABLE",)]
        cur.execute(_ph(mssql_tsql.TABLE_EXISTS), ("DBO", "orders"))  # catalog names: case-insensitive collation
        assert cur.fetchall() == [("BASE TABLE",)]
        cur.execute(_ph(mssql_tsql.TABLE_EXISTS), ("dbo", "Orders2"))
        assert cur.fetchall() == []
        cur.execute(_ph(mssql_tsql.COLUMNS), ("dbo", "Orders"))
        cols = cur.fetchall()
        assert [(c[0], c[1], c[6], c[7]) for c in cols] == [
            ("id", "int", "NO", 1), ("name", "nvarchar", "YES", 2), ("rv", "timestamp", "NO", 3)]
        assert (cols[0][2], cols[1][2]) == (None, 40)
        assert cols[0][3] == 10 and cols[0][4] == 0
        cur.execute(_ph(mssql_tsql.PRIMARY_KEY), ("dbo", "Orders"))
        assert cur.fetchall() == [("id",)]
        lo, hi = (client_db.client.binary(mssql_tsql.rv_param(v)) for v in (0, mar))
        cur.execute(_ph(mssql_tsql.window_count("dbo", "Orders", "rv")), (lo, hi))
        assert cur.fetchone()[0] == 3
        cur.execute(_ph(mssql_tsql.window_select("dbo", "Orders", ["id", "name", "rv"], "rv")), (lo, hi))
        assert [r[:2] for r in cur.fetchall()] == [(1, "a"), (2, "b"), (3, None)]
        cur.execute(mssql_tsql.full_count("dbo", "Orders"))
        assert cur.fetchone()[0] == 3
        cur.execute(mssql_tsql.full_select("dbo", "Orders", ["id", "name"]))
        assert sorted(cur.fetchall(), key=lambda r: r[0]) == [(1, "a"), (2, "b"), (3, None)]
        cur.execute(mssql_tsql.pk_select("dbo", "Orders", ["id"]))
        assert sorted(cur.fetchall()) == [(1,), (2,), (3,)]


def test_long_and_hostile_names_keep_their_spelling(client_db):
    long_name = "T" + "x" * 126 + "Z"
    col = "we]ird; col 'name' \u00e9"
    client_db.execute("CREATE TABLE %s (%s int PRIMARY KEY, [Value] nvarchar(10))"
                     % (mssql_tsql.quote_table("dbo", long_name), mssql_tsql.quote_ident(col)))
    client_db.execute("INSERT INTO %s (%s, [Value]) VALUES (1, N'v')"
                     % (mssql_tsql.quote_table("dbo", long_name), mssql_tsql.quote_ident(col)))
    with contextlib.closing(client_db.connect()) as conn:
        cur = conn.cursor()
        cur.execute(_ph(mssql_tsql.COLUMNS), ("dbo", long_name))
        assert [r[0] for r in cur.fetchall()] == [col, "Value"]
        cur.execute(mssql_tsql.full_select("dbo", long_name, [col, "Value"]))
        assert cur.fetchall() == [(1, "v")]
        assert [d[0] for d in cur.description] == [col, "Value"]


@ONE_DRIVER
def test_alter_table_add_column_and_rowversion(client_db):
    client_db.execute("CREATE TABLE dbo.t (id int PRIMARY KEY)")
    client_db.execute("INSERT INTO dbo.t (id) VALUES (1), (2)")
    client_db.execute("ALTER TABLE dbo.t ADD note nvarchar(20) NULL, rv rowversion")
    rows = client_db.execute("SELECT id, note, rv FROM dbo.t ORDER BY id")
    assert [r[:2] for r in rows] == [(1, None), (2, None)]
    assert all(isinstance(r[2], bytes) and len(r[2]) == 8 for r in rows) and rows[0][2] != rows[1][2]


@ONE_DRIVER
def test_several_clients_at_once(client_db):
    client_db.execute("CREATE TABLE dbo.t (id int PRIMARY KEY, rv rowversion)")
    errors = []

    def work(base):
        try:
            with contextlib.closing(client_db.connect()) as conn:
                cur = conn.cursor()
                for i in range(20):
                    cur.execute("INSERT INTO dbo.t (id) VALUES (%d)" % (base + i))
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k * 100,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    rows = client_db.execute("SELECT COUNT(*), COUNT(DISTINCT rv) FROM dbo.t")
    assert rows == [(80, 80)]


def test_rowcounts_nocount_use_and_tds_73(client_db):
    client_db.execute("CREATE TABLE dbo.t (id int PRIMARY KEY, v int, d datetime2(7), t time(7))")
    with contextlib.closing(client_db.connect()) as conn:
        cur = conn.cursor()
        cur.execute("INSERT INTO dbo.t (id, v) VALUES (1, 0), (2, 0), (3, 1)")
        assert cur.rowcount == 3
        cur.execute("UPDATE dbo.t SET v = v + 1 WHERE v = 0")
        assert cur.rowcount == 2
        cur.execute("DELETE FROM dbo.t WHERE id = 3")
        assert cur.rowcount == 1
        cur.execute("USE [%s]" % client_db.name)
        cur.execute("SET NOCOUNT ON; UPDATE dbo.t SET d = '2001-02-03 04:05:06.7654321', t = '04:05:06.7654321'")
        assert cur.rowcount == -1  # no DONE count under NOCOUNT
    with contextlib.closing(client_db.connect(tds_version="7.3")) as conn:
        cur = conn.cursor()
        cur.execute("SELECT d, t FROM dbo.t WHERE id = 1")
        assert cur.fetchone() == (datetime.datetime(2001, 2, 3, 4, 5, 6, 765432), datetime.time(4, 5, 6, 765432))


@ONE_DRIVER
def test_snapshot_transaction_sees_a_stable_view(client_db):
    client_db.execute("CREATE TABLE dbo.t (id int PRIMARY KEY)")
    client_db.execute("INSERT INTO dbo.t (id) VALUES (1)")
    if client_db.server.kind == "real":
        client_db.execute("ALTER DATABASE [%s] SET ALLOW_SNAPSHOT_ISOLATION ON" % client_db.name)
    with contextlib.closing(client_db.connect()) as reader:
        cur = reader.cursor()
        cur.execute("SET TRANSACTION ISOLATION LEVEL SNAPSHOT")
        cur.execute("BEGIN TRAN")
        cur.execute("SELECT COUNT(*) FROM dbo.t")
        assert cur.fetchone()[0] == 1
        client_db.execute("INSERT INTO dbo.t (id) VALUES (2)")
        cur.execute("SELECT COUNT(*) FROM dbo.t")
        assert cur.fetchone()[0] == 1  # the snapshot fixed at the first read
        cur.execute("COMMIT")
        cur.execute("SELECT COUNT(*) FROM dbo.t")
        assert cur.fetchone()[0] == 2


@ONE_DRIVER
def test_sys_catalog_discovery(client_db):
    client_db.execute("CREATE TABLE dbo.[Mixed Case] (id bigint NOT NULL PRIMARY KEY, amount decimal(12,3) NULL,"
                     " rv rowversion)")
    rows = client_db.execute(
        "SELECT c.name, ty.name, c.max_length, c.precision, c.scale, c.is_nullable FROM sys.columns c"
        " JOIN sys.types ty ON ty.user_type_id = c.user_type_id"
        " WHERE c.object_id = OBJECT_ID(N'[dbo].[Mixed Case]') ORDER BY c.column_id")
    assert rows == [("id", "bigint", 8, 19, 0, False), ("amount", "decimal", 9, 12, 3, True),
                    ("rv", "timestamp", 8, 0, 0, False)]
    rows = client_db.execute("SELECT s.name, t.name FROM sys.tables t JOIN sys.schemas s ON s.schema_id = t.schema_id")
    assert rows == [("dbo", "Mixed Case")]


@ONE_DRIVER
def test_strings_compare_case_insensitively(client_db):
    client_db.execute("CREATE TABLE dbo.t (k nvarchar(10) NOT NULL PRIMARY KEY, c char(4) NULL)")
    client_db.execute("INSERT INTO dbo.t (k, c) VALUES (N'Abc', 'xY')")
    assert client_db.execute("SELECT k, c FROM dbo.t WHERE k = N'aBC' AND c = 'XY'") == [("Abc", "xY  ")]
    with pytest.raises(client_db.client.module.IntegrityError) as e:
        client_db.execute("INSERT INTO dbo.t (k) VALUES (N'ABC')")  # a duplicate under a _CI_ collation
    assert client_db.client.errnum(e.value) == 2627


@ONE_DRIVER
def test_nothing_commits_below_a_min_active_rowversion_already_read(client_db):
    """The sync's premise: once MIN_ACTIVE_ROWVERSION() returned hi, the set of rows with rv < hi is final."""
    client_db.execute("CREATE TABLE dbo.t (id int PRIMARY KEY, w int, rv rowversion)")
    stop = threading.Event()
    errors = []

    def writer(k):
        try:
            with contextlib.closing(client_db.connect()) as conn:
                cur = conn.cursor()
                i = 0
                while not stop.is_set():
                    cur.execute("BEGIN TRAN")
                    cur.execute("INSERT INTO dbo.t (id, w) VALUES (%d, %d)" % (k * 100000 + i, k))
                    time.sleep(0.002 * (k + 1))
                    cur.execute("INSERT INTO dbo.t (id, w) VALUES (%d, %d)" % (k * 100000 + i + 1, k))
                    cur.execute("COMMIT TRAN" if i % 6 else "ROLLBACK TRAN")
                    i += 2
        except Exception as e:  # noqa: BLE001 - asserted below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    snapshots = []
    try:
        with contextlib.closing(client_db.connect()) as conn:
            cur = conn.cursor()
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                cur.execute("SELECT MIN_ACTIVE_ROWVERSION()")
                hi = cur.fetchone()[0]
                cur.execute("SELECT id FROM dbo.t WHERE rv < %s", (client_db.client.binary(hi),))
                snapshots.append((hi, {r[0] for r in cur.fetchall()}))
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert errors == []
    final = client_db.execute("SELECT id, rv FROM dbo.t")
    assert len(snapshots) > 10 and len(final) > 10
    for hi, seen in snapshots:
        assert {i for i, rv in final if rv < hi} == seen


@ONE_DRIVER
def test_nulls_sort_first_and_xor(client_db):
    client_db.execute("CREATE TABLE dbo.t (id int PRIMARY KEY, v int NULL)")
    client_db.execute("INSERT INTO dbo.t (id, v) VALUES (1, 5), (2, NULL), (3, 1)")
    assert client_db.execute("SELECT id FROM dbo.t ORDER BY v") == [(2,), (3,), (1,)]
    assert client_db.execute("SELECT id FROM dbo.t ORDER BY v DESC") == [(1,), (3,), (2,)]
    assert client_db.execute("SELECT TOP (1) id FROM dbo.t ORDER BY v ASC, id") == [(2,)]
    assert client_db.execute("SELECT 6 ^ 3, 6 & 3, 6 | 3") == [(5, 2, 7)]


@ONE_DRIVER
def test_casts_truncate_like_sql_server(client_db):
    assert client_db.execute(
        "SELECT CAST(2.7 AS int), CAST(-2.7 AS bigint), CAST(N'12' AS int), CAST(1.9e0 AS smallint),"
        " CAST(12345678901234567890123 AS varchar), CONVERT(int, 7.99), CAST(255.9 AS tinyint)"
    ) == [(2, -2, 12, 1, "12345678901234567890123", 7, 255)]
    with pytest.raises(client_db.client.module.OperationalError) as e:
        client_db.execute("SELECT CAST(300 AS tinyint)")
    assert client_db.client.errnum(e.value) == 220


@ONE_DRIVER
def test_identity_columns_and_identity_insert(client_db):
    client_db.execute("CREATE TABLE dbo.t (id int IDENTITY(5,5) NOT NULL PRIMARY KEY, v nvarchar(5) NULL)")
    client_db.execute("INSERT INTO dbo.t (v) VALUES (N'a'), (N'b')")
    with pytest.raises(client_db.client.module.OperationalError) as e:
        client_db.execute("INSERT INTO dbo.t (id, v) VALUES (100, N'x')")
    assert client_db.client.errnum(e.value) == 544
    client_db.execute("SET IDENTITY_INSERT dbo.t ON; INSERT INTO dbo.t (id, v) VALUES (100, N'x')")
    assert client_db.execute("SELECT id, v FROM dbo.t ORDER BY id") == [(5, "a"), (10, "b"), (100, "x")]


@ONE_DRIVER
def test_ddl_used_by_tests(client_db):
    db = client_db
    db.execute("CREATE SCHEMA [Sales]")
    db.execute("CREATE TABLE [Sales].[T] (id int NOT NULL PRIMARY KEY, a nvarchar(10) NULL, b int NULL,"
               " rv rowversion)")
    db.execute("CREATE UNIQUE NONCLUSTERED INDEX ix_t_rv ON [Sales].[T] (rv)")
    db.execute("INSERT INTO Sales.T (id, a, b) VALUES (1, N'12', 2)")
    db.execute("ALTER TABLE Sales.T ALTER COLUMN a int NULL")
    db.execute("ALTER TABLE Sales.T DROP COLUMN b")
    cols = db.execute("SELECT COLUMN_NAME, DATA_TYPE FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = N'Sales'"
                      " AND TABLE_NAME = N'T' ORDER BY ORDINAL_POSITION")
    assert cols == [("id", "int"), ("a", "int"), ("rv", "timestamp")]
    assert db.execute("SELECT id, a FROM Sales.T") == [(1, 12)]
    t0 = time.monotonic()
    db.execute("WAITFOR DELAY '00:00:00.300'")
    assert time.monotonic() - t0 >= 0.29
    db.execute("TRUNCATE TABLE Sales.T")
    assert db.execute("SELECT COUNT(*) FROM Sales.T") == [(0,)]
    db.execute("DROP TABLE Sales.T")
    with pytest.raises(client_db.client.module.ProgrammingError) as e:
        db.execute("SELECT 1 FROM Sales.T")
    assert client_db.client.errnum(e.value) == 208
    db.execute("DROP TABLE IF EXISTS Sales.T")


@ONE_DRIVER
def test_update_from_a_values_list(client_db):
    """UPDATE alias SET ... FROM table AS alias JOIN (VALUES ...) AS v (cols) ON ... (the reverse sync's batch): the
    first row's CASTs type the derived columns, matched rows only are written (and stamped), a value too long for
    the column fails on assignment (the CAST to (max) does not cut it)."""
    db = client_db
    db.execute("CREATE TABLE dbo.t (id int NOT NULL PRIMARY KEY, s nvarchar(5) NULL, d datetime2(3) NULL,"
               " rv rowversion)")
    db.execute("INSERT INTO dbo.t (id, s) VALUES (1, N'a'), (2, N'b'), (3, N'c')")
    (rv3,), = db.execute("SELECT rv FROM dbo.t WHERE id = 3")
    with contextlib.closing(db.connect()) as conn:
        cur = conn.cursor()
        cur.execute("UPDATE t SET s = v.s, t.d = v.d FROM dbo.t AS t INNER JOIN (VALUES (CAST(2 AS int),"
                    " CAST(NULL AS nvarchar(max)), CAST(NULL AS datetime2(7))), (1, N'x', '2024-01-02 03:04:05.678'),"
                    " (9, N'nine', NULL)) AS v (id, s, d) ON t.id = v.id")
        assert cur.rowcount == 2
        with pytest.raises(client_db.client.module.DatabaseError) as e:
            cur.execute("UPDATE x SET s = v.s FROM dbo.t x JOIN (VALUES (CAST(3 AS int), CAST(N'far too long' AS"
                        " nvarchar(max)))) v (id, s) ON x.id = v.id")
        assert client_db.client.errnum(e.value) in (2628, 8152)
    assert db.execute("SELECT id, s, d FROM dbo.t ORDER BY id") == [
        (1, "x", datetime.datetime(2024, 1, 2, 3, 4, 5, 678000)), (2, None, None), (3, "c", None)]
    assert db.execute("SELECT rv FROM dbo.t WHERE id = 3") == [(rv3,)]  # not matched: not written
    assert db.execute("SELECT COUNT(*) FROM dbo.t WHERE rv > %s" % ("0x" + bytes(rv3).hex())) == [(2,)]


@ONE_DRIVER
def test_output_inserted_gives_the_rows_written_and_their_new_rowversions(client_db):
    """INSERT / UPDATE ... OUTPUT inserted.col (the reverse sync's writes): one result row per row written, with
    the values the statement left (the rowversion already bumped: the one then stored), the column names or the
    aliases; a guarded UPDATE (ON key AND rv = the expected one) and a guarded INSERT (WHERE NOT EXISTS ... WITH
    (UPDLOCK, HOLDLOCK)) output only the rows they wrote; sys.triggers lists no trigger of a table without one."""
    db = client_db
    db.execute("CREATE TABLE dbo.t (id int NOT NULL PRIMARY KEY, s nvarchar(5) NULL, rv rowversion)")
    (dbts,), = db.execute("SELECT @@DBTS")
    with contextlib.closing(db.connect()) as conn:
        cur = conn.cursor()
        cur.execute("INSERT INTO dbo.t (id, s) OUTPUT inserted.id, inserted.rv VALUES (1, N'a'), (2, N'b'), (3, N'c')")
        assert [d[0] for d in cur.description] == ["id", "rv"]
        ins = dict(cur.fetchall())
        assert sorted(ins) == [1, 2, 3] and all(bytes(v) > bytes(dbts) for v in ins.values())
        assert len(set(ins.values())) == 3
        stored = dict(db.execute("SELECT id, rv FROM dbo.t"))
        assert stored == ins
        # row 1 with its current rowversion, row 2 with a stale one, key 9 absent: only row 1 is written
        cur.execute("UPDATE t SET s = v.c2 OUTPUT inserted.id, inserted.rv AS new_rv, inserted.s FROM dbo.t AS t"
                    " INNER JOIN (VALUES (CAST(1 AS int), CAST(%s AS binary(8)), CAST(N'x' AS nvarchar(max))),"
                    " (2, %s, N'y'), (9, %s, N'z')) AS v (c0, c1, c2) ON t.id = v.c0 AND t.rv = v.c1"
                    % ("0x" + bytes(ins[1]).hex(), "0x" + bytes(ins[1]).hex(), "0x" + bytes(ins[1]).hex()))
        assert [d[0] for d in cur.description] == ["id", "new_rv", "s"]
        (upd,) = cur.fetchall()
        assert upd[0] == 1 and upd[2] == "x" and bytes(upd[1]) > max(bytes(v) for v in ins.values())
        # keys 3 (present) and 4 (absent): only 4 is inserted
        cur.execute("INSERT INTO dbo.t (id, s) OUTPUT inserted.id, inserted.s SELECT v.c0, v.c1 FROM (VALUES"
                    " (CAST(3 AS int), CAST(N'dup' AS nvarchar(max))), (4, N'd')) AS v (c0, c1) WHERE NOT EXISTS"
                    " (SELECT 1 FROM dbo.t AS x WITH (UPDLOCK, HOLDLOCK) WHERE x.id = v.c0)")
        assert cur.fetchall() == [(4, "d")]
        cur.execute("UPDATE dbo.t SET s = N'q' OUTPUT inserted.s WHERE id = 99")
        assert cur.fetchall() == []
        cur.execute("SELECT is_disabled FROM sys.triggers WHERE parent_id = OBJECT_ID(N'dbo.t')")
        assert cur.fetchall() == []
    rows = db.execute("SELECT id, s, rv FROM dbo.t ORDER BY id")
    assert [(i, s) for i, s, _rv in rows] == [(1, "x"), (2, "b"), (3, "c"), (4, "d")]
    assert bytes(rows[0][2]) == bytes(upd[1]) and bytes(rows[1][2]) == bytes(ins[2])

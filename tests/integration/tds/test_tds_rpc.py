"""Transactions and RPC as the other TDS clients use them: transaction-manager requests (pytds' commit and
rollback), ``sp_executesql`` with typed parameters, ``sp_prepexec``/``sp_execute``/``sp_unprepare`` by name and by
procedure id. Every test but the last group also runs against a real SQL Server when BERQENAS_TEST_MSSQL_DSN is set.
"""

import contextlib
import datetime
import decimal
import uuid

import pytest

pytestmark = pytest.mark.tds

D = decimal.Decimal
TZ530 = datetime.timezone(datetime.timedelta(hours=5, minutes=30))

# (declared type of column and parameter, value sent, value read back)
TYPED = [
    ("tinyint", 255, 255),
    ("smallint", -32768, -32768),
    ("int", -2147483648, -2147483648),
    ("bigint", 9223372036854775807, 9223372036854775807),
    ("bit", True, True),
    # (python-tds scales decimals in Python's default 28-digit context: 28 significant digits at most)
    ("decimal(38,10)", D("123456789012345678.0123456789"), D("123456789012345678.0123456789")),
    ("numeric(5,2)", D("-123.45"), D("-123.45")),
    ("money", D("922337203685477.5807"), D("922337203685477.5807")),
    ("smallmoney", D("-214748.3648"), D("-214748.3648")),
    ("float", 3.141592653589793, 3.141592653589793),
    ("real", 1.5, 1.5),
    ("date", datetime.date(9999, 12, 31), datetime.date(9999, 12, 31)),
    ("time(7)", datetime.time(23, 59, 59, 123456), datetime.time(23, 59, 59, 123456)),
    ("datetime", datetime.datetime(2020, 2, 29, 13, 14, 15, 997000),
     datetime.datetime(2020, 2, 29, 13, 14, 15, 997000)),
    ("smalldatetime", datetime.datetime(2079, 6, 6, 23, 58), datetime.datetime(2079, 6, 6, 23, 58)),
    ("datetime2(7)", datetime.datetime(1, 1, 1, 0, 0, 0, 123456), datetime.datetime(1, 1, 1, 0, 0, 0, 123456)),
    ("datetimeoffset(7)", datetime.datetime(2020, 1, 1, 10, 0, 0, 123456, tzinfo=TZ530),
     datetime.datetime(2020, 1, 1, 10, 0, 0, 123456, tzinfo=TZ530)),
    ("char(5)", "ab", "ab   "),
    ("varchar(10)", "h\u00e9llo", "h\u00e9llo"),
    ("varchar(max)", "x" * 9000, "x" * 9000),
    ("nchar(3)", "\u65e5", "\u65e5  "),
    ("nvarchar(20)", "\U0001F600 ok", "\U0001F600 ok"),
    ("nvarchar(max)", "ab\x00cd" + "y" * 5000, "ab\x00cd" + "y" * 5000),
    ("binary(4)", b"\x01\x02", b"\x01\x02\x00\x00"),
    ("varbinary(10)", b"\x00\xff", b"\x00\xff"),
    ("varbinary(max)", b"\xab" * 9000, b"\xab" * 9000),
    ("uniqueidentifier", uuid.UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff"),
     uuid.UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff")),
]


@pytest.fixture
def pytds_db(mssql_db):
    from tests.support.tds_clients import CLIENTS

    return mssql_db.with_client(CLIENTS["pytds"])


# python-tds 1.17 cannot serialize a binary(n) parameter (its BinaryType serializer lacks the size):
# binary columns get varbinary parameters, and the column pads them as SQL Server does
PARAM_DECL = {"binary(4)": "varbinary(4)", "binary(8)": "varbinary(8)"}


def _typed(decl, value):
    from pytds import tds_base, tds_types

    return tds_base.Param(type=tds_types.sql_type_by_declaration(PARAM_DECL.get(decl, decl)), value=value)


def test_transactions_commit_is_visible_rollback_is_not(client_db):
    client_db.execute("CREATE TABLE dbo.t (id int PRIMARY KEY, v nvarchar(10))")

    def committed():  # READPAST: a real server skips the locked uncommitted rows instead of waiting
        return sorted(r[0] for r in client_db.execute("SELECT id FROM dbo.t WITH (READPAST)"))

    conn = client_db.connect(autocommit=False)
    try:
        cur = conn.cursor()
        cur.execute("INSERT INTO dbo.t (id, v) VALUES (%s, %s)", (1, "one"))
        cur.execute("SELECT @@TRANCOUNT")
        assert cur.fetchone()[0] == 1
        assert committed() == []
        conn.commit()
        assert committed() == [1]
        cur.execute("INSERT INTO dbo.t (id, v) VALUES (%s, %s)", (2, "two"))
        cur.execute("SELECT id FROM dbo.t ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == [1, 2]  # the transaction sees its own row
        conn.rollback()
        assert committed() == [1]
        cur.execute("INSERT INTO dbo.t (id, v) VALUES (%s, %s)", (3, "three"))  # a new transaction after rollback
        cur.execute("SELECT @@TRANCOUNT")
        assert cur.fetchone()[0] == 1
        conn.commit()
    finally:
        conn.close()
    assert committed() == [1, 3]


def test_pytds_transaction_descriptors_change_per_transaction(pytds_db):
    pytds_db.execute("CREATE TABLE dbo.t (id int PRIMARY KEY)")
    conn = pytds_db.connect(autocommit=False)
    try:
        cur = conn.cursor()
        cur.execute("INSERT INTO dbo.t (id) VALUES (1)")  # pytds sends TM_BEGIN_XACT first
        first = conn._tds_socket.tds72_transaction  # from ENVCHANGE 8, sent back in ALL_HEADERS
        conn.commit()  # TM_COMMIT_XACT with fBeginXact: ENVCHANGE 9 then 8
        second = conn._tds_socket.tds72_transaction
        cur.execute("INSERT INTO dbo.t (id) VALUES (2)")
        conn.rollback()
        third = conn._tds_socket.tds72_transaction
        conn.commit()
    finally:
        conn.close()
    assert 0 not in (first, second, third) and len({first, second, third}) == 3
    assert pytds_db.execute("SELECT id FROM dbo.t") == [(1,)]


def test_typed_parameters_round_trip_every_mapped_type(pytds_db):
    cols = ", ".join("c%d %s NULL" % (i, t) for i, (t, _, _) in enumerate(TYPED))
    names = ", ".join("c%d" % i for i in range(len(TYPED)))
    marks = ", ".join(["%s"] * len(TYPED))
    with contextlib.closing(pytds_db.connect(autocommit=True)) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE dbo.tp (id int NOT NULL PRIMARY KEY, %s, rv rowversion)" % cols)
        cur.execute("INSERT INTO dbo.tp (id, %s) VALUES (%%s, %s)" % (names, marks),
                    [_typed("int", 1)] + [_typed(t, v) for t, v, _ in TYPED])
        assert cur.rowcount == 1
        cur.execute("INSERT INTO dbo.tp (id, %s) VALUES (%%s, %s)" % (names, marks),
                    [_typed("int", 2)] + [_typed(t, None) for t, _, _ in TYPED])  # typed NULLs
        cur.execute("SELECT %s, rv FROM dbo.tp ORDER BY id" % names)
        full, empty = cur.fetchall()
        for i, (t, _, expected) in enumerate(TYPED):
            assert full[i] == expected, (t, full[i], expected)
            assert type(full[i]) is type(expected), (t, full[i])
            if isinstance(expected, datetime.datetime) and expected.tzinfo is not None:
                assert full[i].utcoffset() == expected.utcoffset(), t
        assert list(empty[:-1]) == [None] * len(TYPED)
        rv = full[-1]
        for i, (t, sent, expected) in enumerate(TYPED):
            if t.startswith("datetimeoffset"):
                continue  # the emulator stores datetimeoffset as text: select it, don't compare it (README)
            cur.execute("SELECT id FROM dbo.tp WHERE c%d = %%s" % i, (_typed(t, sent),))
            assert cur.fetchall() == [(1,)], t
            cur.execute("SELECT %s AS echo", (_typed(t, sent),))
            assert cur.fetchone()[0] == (sent if t in PARAM_DECL else expected), t
        cur.execute("SELECT id FROM dbo.tp WHERE rv = %s", (_typed("binary(8)", rv),))
        assert cur.fetchall() == [(1,)]
        cur.execute("SELECT COUNT(*) FROM dbo.tp WHERE rv < %s AND id = %s", (_typed("binary(8)", rv), 1))
        assert cur.fetchone()[0] == 0


def test_parameters_by_name_and_output_parameters(pytds_db):
    import pytds

    with contextlib.closing(pytds_db.connect(autocommit=True)) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE dbo.t (id int PRIMARY KEY, s nvarchar(20))")
        cur.execute("INSERT INTO dbo.t (id, s) VALUES (%(id)s, %(s)s)", {"id": 5, "s": "five"})
        cur.execute("SELECT s FROM dbo.t WHERE id = %(id)s AND s = %(s)s", {"s": "FIVE", "id": 5})
        assert cur.fetchall() == [("five",)]  # _CI_ collation, parameters bound by name
        # no result set: callproc reads to the end and returns the OUTPUT values in place (python-tds 1.17's
        # get_proc_outputs() only works when the output parameters come first)
        out = cur.callproc("sp_executesql", ("UPDATE dbo.t SET s = s WHERE id = @k", "@k int, @o int OUTPUT",
                                             5, pytds.output(value=42, param_type="int")))
        assert out[3] == 42 and cur.return_value == 0
        with pytest.raises(pytds.OperationalError) as e:
            cur.callproc("sp_executesql", ("SELECT @k", "@k int"))
        assert e.value.msg_no == 8178  # declared but not supplied
        with pytest.raises(pytds.ProgrammingError) as e:
            cur.execute("SELECT * FROM dbo.nope WHERE id = %s", (1,))
        assert e.value.msg_no == 208
        cur.execute("SELECT COUNT(*) FROM dbo.t WHERE id = %s", (5,))  # still usable after errors
        assert cur.fetchone()[0] == 1


def test_prepexec_execute_unprepare_by_name_and_id(pytds_db):
    import pytds
    from pytds import tds_base

    with contextlib.closing(pytds_db.connect(autocommit=True)) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE dbo.t (id int PRIMARY KEY, s nvarchar(20))")
        out = cur.callproc("sp_prepexec", (pytds.output(param_type="int"), "@a int, @b nvarchar(20)",
                                           "INSERT INTO dbo.t (id, s) VALUES (@a, @b)", 1, "one"))
        handle = out[0]
        assert isinstance(handle, int) and cur.return_value == 0
        cur.callproc(tds_base.InternalProc(12, "sp_execute"), (handle, 2, "two"))
        cur.callproc("sp_execute", (handle, 3, None))
        cur.callproc(tds_base.InternalProc(13, "sp_prepexec"), (
            pytds.output(param_type="int"), "@lo int", "SELECT id, s FROM dbo.t WHERE id >= @lo ORDER BY id", 2))
        assert cur.fetchall() == [(2, "two"), (3, None)]
        select_handle = cur.get_proc_outputs()[0]
        assert isinstance(select_handle, int) and select_handle != handle
        cur.callproc("sp_execute", (select_handle, 3))
        assert cur.fetchall() == [(3, None)]
        cur.callproc(tds_base.InternalProc(15, "sp_unprepare"), (handle,))
        cur.callproc("sp_unprepare", (select_handle,))
        with pytest.raises(pytds.OperationalError) as e:
            cur.callproc("sp_execute", (handle, 4, "four"))
        assert e.value.msg_no == 8179
        cur.execute("SELECT COUNT(*) FROM dbo.t")
        assert cur.fetchone()[0] == 3


def test_pytds_isolation_level_goes_with_tm_begin(pytds_db):
    from pytds import extensions

    pytds_db.execute("CREATE TABLE dbo.t (id int PRIMARY KEY)")
    pytds_db.execute("INSERT INTO dbo.t (id) VALUES (1)")
    if pytds_db.server.kind == "real":
        pytds_db.execute("ALTER DATABASE [%s] SET ALLOW_SNAPSHOT_ISOLATION ON" % pytds_db.name)
    conn = pytds_db.connect(autocommit=False)
    try:
        conn.isolation_level = extensions.ISOLATION_LEVEL_SNAPSHOT  # sent in TM_BEGIN_XACT's isolation byte
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*) FROM dbo.t")
        assert cur.fetchone()[0] == 1
        pytds_db.execute("INSERT INTO dbo.t (id) VALUES (2)")
        cur.execute("SELECT COUNT(*) FROM dbo.t")
        assert cur.fetchone()[0] == 1  # the snapshot fixed at the first read
        conn.commit()
        cur.execute("SELECT COUNT(*) FROM dbo.t")
        assert cur.fetchone()[0] == 2
        conn.rollback()
        conn.isolation_level = extensions.ISOLATION_LEVEL_READ_COMMITTED
        cur.execute("SELECT COUNT(*) FROM dbo.t")
        assert cur.fetchone()[0] == 2
        pytds_db.execute("INSERT INTO dbo.t (id) VALUES (3)")
        cur.execute("SELECT COUNT(*) FROM dbo.t")
        assert cur.fetchone()[0] == 3  # read committed sees the new row
    finally:
        conn.close()


def test_xact_abort_rollback_is_announced_to_pytds(pytds_db):
    import pytds

    pytds_db.execute("CREATE TABLE dbo.t (id int PRIMARY KEY)")
    conn = pytds_db.connect(autocommit=False)
    try:
        cur = conn.cursor()
        cur.execute("SET XACT_ABORT ON")
        cur.execute("INSERT INTO dbo.t (id) VALUES (%s)", (1,))
        with pytest.raises(pytds.IntegrityError) as e:
            cur.execute("INSERT INTO dbo.t (id) VALUES (%s)", (1,))
        assert e.value.msg_no == 2627
        assert conn._tds_socket.tds72_transaction == 0  # ENVCHANGE 10: the whole transaction is gone
        cur.execute("INSERT INTO dbo.t (id) VALUES (%s)", (2,))  # pytds opens a new one (TM_BEGIN_XACT)
        conn.commit()
    finally:
        conn.close()
    assert pytds_db.execute("SELECT id FROM dbo.t") == [(2,)]


def test_cancel_of_pending_rows_of_an_rpc(pytds_db):
    pytds_db.execute("CREATE TABLE dbo.big (id int PRIMARY KEY, pad nvarchar(200))")
    for base in range(0, 20000, 1000):
        pytds_db.execute("INSERT INTO dbo.big (id, pad) VALUES " + ", ".join(
            "(%d, N'%s')" % (i, "p" * 150) for i in range(base, base + 1000)))
    with contextlib.closing(pytds_db.connect(autocommit=True)) as conn:
        cur = conn.cursor()
        cur.execute("SELECT id, pad FROM dbo.big WHERE id >= %s ORDER BY id", (0,))  # sp_executesql
        assert cur.fetchone()[0] == 0
        cur.cancel()  # ATTENTION in the middle of the RPC's rows; pytds reads up to DONE_ATTN
        cur.execute("SELECT COUNT(*) FROM dbo.big WHERE id >= %s", (0,))
        assert cur.fetchall() == [(20000,)]


# -- the emulator only: refusals are SQL Server errors, the session survives them -----------------------


def test_emulator_refuses_unknown_procedures_and_tm_requests(emulated_mssql_db):
    import pytds

    from tests.support.tds_clients import CLIENTS

    db = emulated_mssql_db.with_client(CLIENTS["pytds"])
    with contextlib.closing(db.connect(autocommit=True)) as conn:
        cur = conn.cursor()
        with pytest.raises(pytds.ProgrammingError) as e:
            cur.callproc("sp_who", ())
        assert e.value.msg_no == 2812
        with pytest.raises(pytds.OperationalError) as e:
            cur.callproc("sp_executesql", ("SELECT @x", "@x int", 1, 2))
        assert e.value.msg_no == 8144  # too many arguments
        with pytest.raises(pytds.OperationalError) as e:
            cur.callproc("sp_executesql", ("SELECT 1", "@x int", pytds.output(value=1, param_type="int")))
        assert e.value.msg_no == 8162  # OUTPUT requested for a parameter not declared OUTPUT
        session = conn._tds_socket.main_session
        session.submit_begin_tran()  # TM_BEGIN_XACT
        session.process_simple_request()
        cur.execute("SELECT @@TRANCOUNT")
        assert cur.fetchone()[0] == 1
        session.submit_rollback(cont=False)
        session.process_simple_request()
        cur.execute("SELECT @@TRANCOUNT")
        assert cur.fetchone()[0] == 0
        with pytest.raises(pytds.OperationalError) as e:
            session.submit_commit(cont=False)  # no transaction open
            session.process_simple_request()
        assert e.value.msg_no == 3902
        cur.execute("SELECT 1")
        assert cur.fetchone()[0] == 1


def test_emulator_faults_apply_to_rpc_statements(emulated_mssql_db):
    import pytds

    from tests.support.tds_clients import CLIENTS

    db = emulated_mssql_db.with_client(CLIENTS["pytds"])
    db.execute("CREATE TABLE dbo.t (id int PRIMARY KEY)")
    conn = db.connect(autocommit=False)
    try:
        cur = conn.cursor()
        cur.execute("INSERT INTO dbo.t (id) VALUES (%s)", (1,))
        db.faults.fail_statement(r"INSERT INTO dbo\.t", 2627)  # an injected error replaces the statement
        with pytest.raises(pytds.IntegrityError) as e:
            cur.execute("INSERT INTO dbo.t (id) VALUES (%s)", (2,))
        assert e.value.msg_no == 2627
        cur.execute("INSERT INTO dbo.t (id) VALUES (%s)", (3,))
        cur.execute("SELECT @@TRANCOUNT")
        assert cur.fetchone()[0] == 1
        conn.commit()
    finally:
        conn.close()
    assert db.execute("SELECT id FROM dbo.t ORDER BY id") == [(1,), (3,)]

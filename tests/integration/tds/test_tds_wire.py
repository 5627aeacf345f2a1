"""The emulator's RPC / transaction-manager decoding without a server: request bytes built here by hand after
[MS-TDS] 2.2.6.6 / 2.2.6.9 / 2.2.5.5, for the encodings python-tds does not send (fixed-length types, chunked
PLP, LONGLEN text, several calls in one request)."""

import datetime
import decimal
import struct
import uuid

import pytest

from tests.support.tds_emulator import rpc
from tests.support.tds_emulator.translate import TsqlError

pytestmark = pytest.mark.tds

V74 = 0x74000004


def b_varchar(s):
    return bytes([len(s)]) + s.encode("utf-16-le")


def param(name, typeinfo, value, status=0):
    return b_varchar(name) + bytes([status]) + typeinfo + value


def by_name(proc):
    return struct.pack("<H", len(proc)) + proc.encode("utf-16-le") + b"\x00\x00"


def by_id(pid):
    return struct.pack("<HHH", 0xFFFF, pid, 0)


def nvarchar(s, maxbytes=8000):
    data = s.encode("utf-16-le")
    return param("", b"\xE7" + struct.pack("<H", maxbytes) + b"\x09\x04\xD0\x00\x34", struct.pack("<H", len(data))
                 + data)


def test_all_headers_give_the_transaction_descriptor():
    body = b"\x05\x00"
    headers = struct.pack("<IIHQI", 22, 18, 2, 0x0000003500000007, 1)
    assert rpc.split_all_headers(headers + body, V74) == (0x0000003500000007, body)
    with pytest.raises(TsqlError) as e:
        rpc.split_all_headers(struct.pack("<I", 99) + body, V74)
    assert e.value.number == 8009


def test_tm_requests():
    begin = rpc.parse_tm(struct.pack("<HB", rpc.TM_BEGIN_XACT, 5) + b_varchar(""))
    assert (begin.kind, begin.isolation, begin.name) == (rpc.TM_BEGIN_XACT, "REPEATABLE READ", "")  # SNAPSHOT
    commit = rpc.parse_tm(struct.pack("<H", rpc.TM_COMMIT_XACT) + b_varchar("") + b"\x01\x04" + b_varchar(""))
    assert (commit.begin_after, commit.isolation) == (True, "SERIALIZABLE")
    rollback = rpc.parse_tm(struct.pack("<H", rpc.TM_ROLLBACK_XACT) + b_varchar("t1") + b"\x00")
    assert (rollback.name, rollback.begin_after, rollback.isolation) == ("t1", False, None)
    with pytest.raises(TsqlError):
        rpc.parse_tm(struct.pack("<HB", rpc.TM_BEGIN_XACT, 9) + b_varchar(""))


def test_two_calls_in_one_request_by_name_and_by_id():
    call1 = by_name("[sys].[sp_executesql]") + nvarchar("SELECT @a") + nvarchar("@a int") + param(
        "@a", b"\x26\x04", b"\x04" + struct.pack("<i", -7))
    call2 = by_id(13) + param("@handle", b"\x26\x04", b"\x00", status=rpc.F_BYREF) + nvarchar("") + nvarchar("SELECT 1")
    calls = rpc.parse_rpc(call1 + b"\xFF" + call2, V74)
    assert [c.proc for c in calls] == ["[sys].[sp_executesql]", "sp_prepexec"]
    assert rpc._proc_key(calls[0].proc) == "sp_executesql"
    assert [p.value for p in calls[0].params] == ["SELECT @a", "@a int", -7]
    handle = calls[1].params[0]
    assert (handle.name, handle.output, handle.value, handle.type.name) == ("@handle", True, None, "int")


def test_fixed_length_and_legacy_encodings():
    values = [
        param("", b"\x38", struct.pack("<i", 2147483647)),                     # INT4
        param("", b"\x7F", struct.pack("<q", -(2 ** 63))),                       # INT8
        param("", b"\x32", b"\x01"),                                             # BIT
        param("", b"\x3E", struct.pack("<d", 0.1)),                              # FLT8
        param("", b"\x3C", struct.pack("<iI", -1, 0xFFFFFFFF - 9999)),          # MONEY -1.0000
        param("", b"\x3D", struct.pack("<iI", 43888, 299)),                      # DATETIME 2020-02-29 00:00:00.997
        param("", b"\x3A", struct.pack("<HH", 1, 61)),                           # DATETIM4 1900-01-02 01:01
        param("", b"\x6A\x11\x26\x04", b"\x11\x00" + (123456789).to_bytes(16, "little")),  # DECIMALN -12345.6789
        param("", b"\x2B\x03", b"\x09" + (1000).to_bytes(4, "little") + (1).to_bytes(3, "little")
              + struct.pack("<h", -480)),                                        # DATETIMEOFFSETN(3)
        param("", b"\x24\x10", b"\x10" + uuid.UUID(int=1).bytes_le),              # GUID
        param("", b"\x1F", b""),                                                 # NULLTYPE
    ]
    (call,) = rpc.parse_rpc(by_name("sp_executesql") + b"".join(values), V74)
    got = [p.value for p in call.params]
    tz = datetime.timezone(datetime.timedelta(hours=-8))
    assert got == [2147483647, -(2 ** 63), True, 0.1, decimal.Decimal("-1.0000"),
                   datetime.datetime(2020, 2, 29, 0, 0, 0, 997000), datetime.datetime(1900, 1, 2, 1, 1),
                   decimal.Decimal("-12345.6789"), datetime.datetime(1, 1, 1, 16, 0, 1, tzinfo=tz), uuid.UUID(int=1),
                   None]
    assert got[8].utcoffset() == datetime.timedelta(hours=-8)  # the offset is kept, not only the instant
    assert [p.type.name for p in call.params][:8] == ["int", "bigint", "bit", "float", "money", "datetime",
                                                      "smalldatetime", "decimal"]


def test_plp_chunks_longlen_text_and_nulls():
    text = "a\x00b" + "\u65e5" * 3000
    data = text.encode("utf-16-le")
    chunks = struct.pack("<Q", len(data)) + struct.pack("<I", 100) + data[:100] + struct.pack("<I", len(data) - 100)
    chunks += data[100:] + struct.pack("<I", 0)
    coll = b"\x09\x04\xD0\x00\x34"
    values = [
        param("", b"\xE7\xFF\xFF" + coll, chunks),                                 # nvarchar(max), two chunks
        param("", b"\xA5\xFF\xFF", b"\xff" * 8),                                    # varbinary(max) NULL
        param("", b"\x63" + struct.pack("<i", 2 ** 30) + coll, struct.pack("<i", 4) + "hi".encode("utf-16-le")),
        param("", b"\x22" + struct.pack("<i", 2 ** 31 - 1), struct.pack("<i", -1)),  # IMAGE NULL
        param("", b"\xA7\x0A\x00" + coll, struct.pack("<H", 2) + "\xe9x".encode("cp1252")),
    ]
    (call,) = rpc.parse_rpc(by_name("sp_executesql") + b"".join(values), V74)
    assert [p.value for p in call.params] == [text, None, "hi", None, "\xe9x"]
    assert [(p.type.name, p.type.length) for p in call.params] == [
        ("nvarchar", -1), ("varbinary", -1), ("nvarchar", -1), ("varbinary", -1), ("varchar", 10)]


def test_unsupported_types_and_truncated_streams_are_8009():
    for raw in (by_name("sp_executesql") + param("", b"\xF1\x00", b""),            # XML
                by_name("sp_executesql") + param("", b"\x26\x04", b"\x04\x01"),  # value cut short
                by_name("sp_executesql") + param("", b"\x26\x04", b"\x03" + bytes(3)),  # no 3-byte int
                by_name("sp_executesql") + param("", b"\x2B\x03", b"\x08" + bytes(8))):  # datetimeoffset(3) is 9
        with pytest.raises(TsqlError) as e:
            rpc.parse_rpc(raw, V74)
        assert e.value.number == 8009


def _p(name, value, t="int"):
    from tests.support.tds_emulator.protocol import SqlType

    return rpc.Param(name, 0, SqlType(t), value)


def test_declarations_and_binding_errors():
    decl = rpc.parse_declarations("@a int, @B nvarchar(10) OUTPUT,@c AS binary(4)")
    assert [(d.name, d.ctype.name, d.ctype.length, d.output) for d in decl] == [
        ("@a", "int", None, False), ("@B", "nvarchar", 10, True), ("@c", "binary", 4, False)]
    bound = rpc.bind("sp_executesql", decl, [_p("", 1), _p("@c", b"\x01"), _p("@b", "x")], "SELECT 1")
    assert sorted(bound) == ["@a", "@b", "@c"]
    cases = [
        ([_p("", 1), _p("", 2), _p("", 3), _p("", 4)], 8144),
        ([_p("", 1), _p("@zz", 2)], 8145),
        ([_p("", 1)], 8178),
        ([_p("@a", 1), _p("", 2)], 119),
    ]
    for values, number in cases:
        with pytest.raises(TsqlError) as e:
            rpc.bind("sp_executesql", decl, values, "SELECT 1")
        assert e.value.number == number
    for text, number in (("@a int, @a int", 134), ("@a nosuchtype", 2715), ("a int", 102), ("@a int = 1", 102)):
        with pytest.raises(TsqlError) as e:
            rpc.parse_declarations(text)
        assert e.value.number == number, text


def test_values_are_converted_to_the_declared_type():
    def value(decl, v, t="int"):
        (d,) = rpc.parse_declarations("@x " + decl)
        return rpc.pg_value(_p("@x", v, t), d.ctype)

    assert value("binary(4)", b"\x01", "varbinary") == "'\\x01000000'::bytea"
    assert value("varbinary(2)", b"\x01\x02\x03", "varbinary") == "'\\x0102'::bytea"
    assert value("varchar(10)", "\u65e5a", "nvarchar") == "CAST('?a' AS varchar(10))"  # cp1252
    assert value("int", decimal.Decimal("-2.7"), "decimal") == "CAST('-2' AS integer)"
    assert value("bit", 5) == "CAST(1 AS smallint)"
    assert value("nvarchar(5)", None, "nvarchar") == "CAST(NULL AS varchar(5))"
    assert value("datetimeoffset(7)", datetime.datetime(2020, 1, 1, 10, 0, tzinfo=datetime.timezone(
        datetime.timedelta(hours=5, minutes=30))), "datetimeoffset") == "'2020-01-01 10:00:00.000000 +05:30'"
    assert value("nvarchar(5)", "a\x00b", "nvarchar") == "CAST('a\uffffb' AS varchar(5))"
    for decl, v, t, number in (("varbinary(4)", "text", "nvarchar", 257), ("int", uuid.UUID(int=1),
                                                                          "uniqueidentifier", 206)):
        with pytest.raises(TsqlError) as e:
            value(decl, v, t)
        assert e.value.number == number


def test_returnvalue_token_layout():
    from tests.support.tds_emulator.protocol import SqlType

    tok = rpc.returnvalue(0, "@handle", SqlType("int"), 7)
    assert tok == (b"\xAC\x00\x00" + b_varchar("@handle") + b"\x01" + struct.pack("<IH", 0, 1) + b"\x26\x04"
                   + b"\x04" + struct.pack("<i", 7))
    assert rpc.returnstatus(-6) == b"\x79" + struct.pack("<i", -6)


def test_malformed_requests_are_errors_not_dropped_sessions():
    with pytest.raises(TsqlError) as e:
        rpc._parsed(rpc.parse_rpc, struct.pack("<H", 3) + b"s\x00p", V74)  # name longer than the stream
    assert e.value.number == 8009
    with pytest.raises(TsqlError) as e:
        rpc._parsed(rpc.parse_tm, b"\x05")
    assert e.value.number == 8009

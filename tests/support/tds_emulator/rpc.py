"""Transaction-manager requests (packet 0x0E) and RPC requests (packet 0x03) with typed parameters.

Layouts follow [MS-TDS]: ALL_HEADERS 2.2.5.3, TRANSACTION_MANAGER request 2.2.6.9, RPC request 2.2.6.6,
TYPE_INFO 2.2.5.6, data type encodings 2.2.5.5 (PLP 2.2.5.2.3), RETURNSTATUS 2.2.7.18,
RETURNVALUE 2.2.7.19, DONEPROC/DONEINPROC 2.2.7.7-8. Parameter values are bound into the statement as
typed PostgreSQL literals of their declared type (``@params``), so the translator sees them as values,
never as text to parse.
"""

import datetime
import decimal
import struct
import uuid

from . import protocol as P
from .protocol import SqlType
from .translate import ISOLATION, TsqlError, parse_type, pg_string, tokenize

# TM request types
TM_GET_DTC_ADDRESS = 0
TM_PROPAGATE_XACT = 1
TM_BEGIN_XACT = 5
TM_PROMOTE_XACT = 6
TM_COMMIT_XACT = 7
TM_ROLLBACK_XACT = 8
TM_SAVE_XACT = 9

# isolation level byte of TM_BEGIN_XACT (0: keep the session's)
TM_ISOLATION = {1: "READ UNCOMMITTED", 2: "READ COMMITTED", 3: "REPEATABLE READ", 4: "SERIALIZABLE", 5: "SNAPSHOT"}

# well-known procedure ids (NameLenProcID = 0xFFFF + id)
PROC_IDS = {10: "sp_executesql", 11: "sp_prepare", 12: "sp_execute", 13: "sp_prepexec", 15: "sp_unprepare"}
PROC_NAMES = {1: "sp_cursor", 2: "sp_cursoropen", 3: "sp_cursorprepare", 4: "sp_cursorexecute",
              5: "sp_cursorprepexec", 6: "sp_cursorunprepare", 7: "sp_cursorfetch", 8: "sp_cursoroption",
              9: "sp_cursorclose", 14: "sp_prepexecrpc", **PROC_IDS}

RETURNSTATUS = 0x79
RETURNVALUE = 0xAC
DONEPROC = 0xFE
DONEINPROC = 0xFF

F_BYREF = 0x01
F_DEFAULT = 0x02


def rpc_error(text):
    """The error SQL Server sends for a malformed RPC stream (8009 family); ``text`` says what."""
    return TsqlError(8009, "The incoming tabular data stream (TDS) remote procedure call (RPC) protocol stream is "
                           "incorrect. %s" % text, cls=16)


class Reader:
    def __init__(self, data, pos=0):
        self.data = data
        self.pos = pos

    def take(self, n):
        if self.pos + n > len(self.data):
            raise rpc_error("The stream ended inside a value.")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt):
        s = struct.calcsize(fmt)
        v = struct.unpack_from(fmt, self.take(s))
        return v[0] if len(v) == 1 else v

    def byte(self):
        return self.take(1)[0]

    def b_varchar(self):
        n = self.byte()
        return self.take(2 * n).decode("utf-16-le", errors="surrogatepass")

    def at_end(self):
        return self.pos >= len(self.data)


def split_all_headers(payload, tds_version):
    """ALL_HEADERS (TDS 7.2+) -> (transaction descriptor or None, rest of the payload)."""
    if tds_version < 0x72000000 or len(payload) < 4:
        return None, payload
    total = struct.unpack_from("<I", payload, 0)[0]
    if not 4 <= total <= len(payload):
        raise rpc_error("ALL_HEADERS has a bad length.")
    descriptor = None
    pos = 4
    while pos + 6 <= total:
        hlen, htype = struct.unpack_from("<IH", payload, pos)
        if hlen < 6 or pos + hlen > total:
            raise rpc_error("A stream header has a bad length.")
        if htype == 2 and hlen >= 18:
            descriptor = struct.unpack_from("<Q", payload, pos + 6)[0]
        pos += hlen
    return descriptor, payload[total:]


# ---------------------------------------------------------------------------------------------
# transaction manager


class TmRequest:
    __slots__ = ("kind", "name", "isolation", "begin_after", "new_name")

    def __init__(self, kind, name="", isolation=None, begin_after=False, new_name=""):
        self.kind = kind
        self.name = name
        self.isolation = isolation
        self.begin_after = begin_after
        self.new_name = new_name


def _tm_isolation(b):
    if b == 0:
        return None
    if b not in TM_ISOLATION:
        raise TsqlError(3930, "tds_emulator: unknown isolation level %d in TM_BEGIN_XACT" % b)
    return ISOLATION[TM_ISOLATION[b]]


def parse_tm(body):
    r = Reader(body)
    kind = r.unpack("<H")
    if kind == TM_BEGIN_XACT:
        iso = _tm_isolation(r.byte())
        return TmRequest(kind, r.b_varchar(), iso)
    if kind in (TM_COMMIT_XACT, TM_ROLLBACK_XACT):
        name = r.b_varchar()
        flags = r.byte() if not r.at_end() else 0
        req = TmRequest(kind, name, begin_after=bool(flags & 0x01))
        if req.begin_after:
            req.isolation = _tm_isolation(r.byte())
            req.new_name = r.b_varchar()
        return req
    if kind == TM_SAVE_XACT:
        return TmRequest(kind, r.b_varchar())
    return TmRequest(kind)


# ---------------------------------------------------------------------------------------------
# RPC request


class Param:
    """One RPC parameter: name as sent (``@x`` or ''), status flags, wire type (SqlType) and value."""

    __slots__ = ("name", "status", "type", "value")

    def __init__(self, name, status, sqltype, value):
        self.name = name
        self.status = status
        self.type = sqltype
        self.value = value

    @property
    def output(self):
        return bool(self.status & F_BYREF)


class RpcCall:
    __slots__ = ("proc", "options", "params")

    def __init__(self, proc, options, params):
        self.proc = proc
        self.options = options
        self.params = params


def parse_rpc(body, tds_version):
    """RPCReqBatch *((BatchFlag / NoExecFlag) RPCReqBatch) -> list of RpcCall."""
    sep = (0xFF, 0xFE) if tds_version >= 0x72000000 else (0x80, 0xFE)
    r = Reader(body)
    calls = []
    while not r.at_end():
        n = r.unpack("<H")
        if n == 0xFFFF:
            pid = r.unpack("<H")
            proc = PROC_NAMES.get(pid, "proc id %d" % pid)
        else:
            proc = r.take(2 * n).decode("utf-16-le", errors="surrogatepass")
        options = r.unpack("<H")
        params = []
        while not r.at_end() and r.data[r.pos] not in sep:
            name = r.b_varchar()
            status = r.byte()
            if status & 0x08:
                raise rpc_error("Parameter %d (\"%s\"): encrypted parameters are not supported." % (len(params) + 1,
                                                                                                  name))
            t, read = read_type_info(r, len(params) + 1, name)
            params.append(Param(name, status, t, read(r)))
        calls.append(RpcCall(proc, options, params))
        if not r.at_end():
            r.byte()  # the separator; NoExecFlag is treated as a plain separator
    return calls


# ---------------------------------------------------------------------------------------------
# TYPE_INFO and values


_EPOCH_1900 = datetime.datetime(1900, 1, 1)
_DATE_0001 = datetime.date(1, 1, 1).toordinal()
_FIXED = {  # fixed-length types: (SqlType name, size, struct format)
    0x30: ("tinyint", "<B"), 0x32: ("bit", "<B"), 0x34: ("smallint", "<h"), 0x38: ("int", "<i"),
    0x7F: ("bigint", "<q"), 0x3B: ("real", "<f"), 0x3E: ("float", "<d"), 0x3C: ("money", None),
    0x7A: ("smallmoney", None), 0x3D: ("datetime", None), 0x3A: ("smalldatetime", None),
}
_INTN = {1: "tinyint", 2: "smallint", 4: "int", 8: "bigint"}
_INTFMT = {1: "<B", 2: "<h", 4: "<i", 8: "<q"}
_STRING = {0xA7: "varchar", 0xAF: "char", 0xE7: "nvarchar", 0xEF: "nchar"}
_BINARY = {0xA5: "varbinary", 0xAD: "binary"}


def _money(raw):
    if len(raw) == 4:
        return decimal.Decimal(struct.unpack("<i", raw)[0]).scaleb(-4)
    hi, lo = struct.unpack("<iI", raw)
    return decimal.Decimal((hi << 32) | lo).scaleb(-4)


def _datetime(raw):
    if len(raw) == 4:
        days, minutes = struct.unpack("<HH", raw)
        return _EPOCH_1900 + datetime.timedelta(days=days, minutes=minutes)
    days, ticks = struct.unpack("<iI", raw)
    ms = (ticks * 10 + 1) // 3  # ticks of 1/300 s -> .000/.003/.007 milliseconds, as SQL Server shows them
    return _EPOCH_1900 + datetime.timedelta(days=days, milliseconds=ms)


def _date(raw):
    return datetime.date.fromordinal(int.from_bytes(raw, "little") + _DATE_0001)


def _time_of(raw, scale):
    units = int.from_bytes(raw, "little")
    micro = units * 10 ** 6 // 10 ** scale
    secs, micro = divmod(micro, 10 ** 6)
    h, rest = divmod(secs, 3600)
    m, s = divmod(rest, 60)
    if h >= 24:
        raise rpc_error("A time value is out of range.")
    return datetime.time(h, m, s, micro)


def _varlen(r, size, exact=None):
    """A BYTELEN value: None for length 0; ``exact`` is a length or a set of the lengths the type allows."""
    n = r.byte()
    if n == 0:
        return None
    if isinstance(exact, int):
        exact = (exact,)
    if (size is not None and n > size) or (exact is not None and n not in exact):
        raise rpc_error("A value has a length its type does not allow (%d)." % n)
    return r.take(n)


def _ushort_len(r):
    n = r.unpack("<H")
    return None if n == 0xFFFF else r.take(n)


def _plp(r):
    total = r.unpack("<Q")
    if total == 0xFFFFFFFFFFFFFFFF:
        return None
    parts = []
    while True:
        n = r.unpack("<I")
        if n == 0:
            break
        parts.append(r.take(n))
    return b"".join(parts)


def _long_len(r):
    n = r.unpack("<i")
    return None if n == -1 else r.take(n)


def read_type_info(r, ordinal, name):
    """TYPE_INFO at the reader -> (SqlType, read(reader) -> Python value or None)."""
    tid = r.byte()
    if tid == 0x1F:  # NULLTYPE
        return SqlType("int"), lambda r: None
    if tid in _FIXED:
        tname, fmt = _FIXED[tid]
        size = {"tinyint": 1, "bit": 1, "smallint": 2, "int": 4, "bigint": 8, "real": 4, "float": 8, "money": 8,
                "smallmoney": 4, "datetime": 8, "smalldatetime": 4}[tname]
        t = SqlType(tname, precision=24 if tname == "real" else (53 if tname == "float" else None))
        return t, lambda r: _fixed_value(tname, fmt, r.take(size))
    if tid == 0x26:
        size = r.byte()
        if size not in _INTN:
            raise rpc_error("Parameter %d (\"%s\"): bad INTN length %d." % (ordinal, name, size))

        def read(r):
            raw = _varlen(r, size, _INTFMT)
            return None if raw is None else struct.unpack(_INTFMT[len(raw)], raw)[0]
        return SqlType(_INTN[size]), read
    if tid == 0x68:
        r.byte()
        return SqlType("bit"), lambda r: _opt(_varlen(r, 1, 1), lambda b: b[0] != 0)
    if tid == 0x6D:
        size = r.byte()

        def read(r):
            raw = _varlen(r, 8, (4, 8))
            return None if raw is None else struct.unpack("<f" if len(raw) == 4 else "<d", raw)[0]
        return (SqlType("real", precision=24) if size == 4 else SqlType("float", precision=53)), read
    if tid == 0x6E:
        size = r.byte()
        return SqlType("smallmoney" if size == 4 else "money"), lambda r: _opt(_varlen(r, 8, (4, 8)), _money)
    if tid == 0x6F:
        size = r.byte()
        return SqlType("smalldatetime" if size == 4 else "datetime"), lambda r: _opt(_varlen(r, 8, (4, 8)), _datetime)
    if tid in (0x6A, 0x6C, 0x37, 0x3F):  # DECIMALN, NUMERICN (and the legacy fixed forms)
        r.byte()
        p, s = r.byte(), r.byte()

        def read(r):
            raw = _varlen(r, 17, (5, 9, 13, 17))
            if raw is None:
                return None
            mag = decimal.Decimal(int.from_bytes(raw[1:], "little")).scaleb(-s)
            return mag if raw[0] == 1 else -mag
        return SqlType("decimal", precision=p, scale=s), read
    if tid == 0x24:
        r.byte()
        return SqlType("uniqueidentifier"), lambda r: _opt(_varlen(r, 16, 16), lambda b: uuid.UUID(bytes_le=b))
    if tid == 0x28:
        return SqlType("date"), lambda r: _opt(_varlen(r, 3, 3), _date)
    if tid in (0x29, 0x2A, 0x2B):
        scale = r.byte()
        if scale > 7:
            raise rpc_error("Parameter %d (\"%s\"): bad scale %d." % (ordinal, name, scale))
        tl = P._TIME_LEN[scale]
        if tid == 0x29:
            return SqlType("time", scale=scale), lambda r: _opt(_varlen(r, 5, tl), lambda b: _time_of(b, scale))
        if tid == 0x2A:
            def read(r):
                raw = _varlen(r, 8, tl + 3)
                if raw is None:
                    return None
                return datetime.datetime.combine(_date(raw[tl:tl + 3]), _time_of(raw[:tl], scale))
            return SqlType("datetime2", scale=scale), read

        def read(r):
            raw = _varlen(r, 10, tl + 5)
            if raw is None:
                return None
            utc = datetime.datetime.combine(_date(raw[tl:tl + 3]), _time_of(raw[:tl], scale))
            off = datetime.timedelta(minutes=struct.unpack("<h", raw[tl + 3:tl + 5])[0])
            return (utc + off).replace(tzinfo=datetime.timezone(off))
        return SqlType("datetimeoffset", scale=scale), read
    if tid in _STRING or tid in _BINARY:
        maxlen = r.unpack("<H")
        wide = tid in (0xE7, 0xEF)
        if tid in _STRING:
            r.take(5)  # collation: values are decoded as UTF-16 (n*) or code page 1252
            decode = ((lambda b: b.decode("utf-16-le", errors="surrogatepass")) if wide
                      else (lambda b: b.decode("cp1252", errors="replace")))
            tname = _STRING[tid]
        else:
            decode = bytes
            tname = _BINARY[tid]
        if maxlen == 0xFFFF:
            if tname in ("char", "nchar", "binary"):
                raise rpc_error("Parameter %d (\"%s\"): %s cannot be (max)." % (ordinal, name, tname))
            return SqlType(tname, -1), lambda r: _opt(_plp(r), decode)
        length = maxlen // 2 if wide else maxlen
        return SqlType(tname, max(length, 1)), lambda r: _opt(_ushort_len(r), decode)
    if tid in (0x23, 0x63, 0x22):  # TEXT, NTEXT, IMAGE: LONGLEN values
        r.unpack("<i")
        if tid != 0x22:
            r.take(5)
        if tid == 0x63:
            return SqlType("nvarchar", -1), lambda r: _opt(_long_len(r), _utf16)
        if tid == 0x23:
            return SqlType("varchar", -1), lambda r: _opt(_long_len(r), lambda b: b.decode("cp1252", "replace"))
        return SqlType("varbinary", -1), lambda r: _opt(_long_len(r), bytes)
    raise rpc_error("Parameter %d (\"%s\"): Data type 0x%02X is unknown." % (ordinal, name, tid))


def _utf16(b):
    return b.decode("utf-16-le", errors="surrogatepass")


def _opt(raw, fn):
    return None if raw is None else fn(raw)


def _fixed_value(tname, fmt, raw):
    if fmt is not None:
        v = struct.unpack(fmt, raw)[0]
        return v != 0 if tname == "bit" else v
    if tname in ("money", "smallmoney"):
        return _money(raw)
    return _datetime(raw)


# ---------------------------------------------------------------------------------------------
# @params declarations and binding


class Declared:
    __slots__ = ("name", "ctype", "output")

    def __init__(self, name, ctype, output):
        self.name = name
        self.ctype = ctype
        self.output = output


def parse_declarations(text):
    """``@a int, @b nvarchar(10) OUTPUT`` -> list of Declared (raises TsqlError like SQL Server)."""
    if text is None or not text.strip():
        return []
    toks = tokenize(text)
    out = []
    i = 0
    n = len(toks)
    while i < n:
        t = toks[i]
        if t.kind != "var" or t.text.startswith("@@"):
            raise TsqlError(102, "Incorrect syntax near '%s'." % t.text, cls=15)
        i += 1
        if i < n and toks[i].is_word("AS"):
            i += 1
        if i >= n:
            raise TsqlError(102, "Incorrect syntax near '%s'." % t.text, cls=15)
        ct, i = parse_type(toks, i)
        output = False
        if i < n and toks[i].is_word("OUTPUT", "OUT"):
            output = True
            i += 1
        if i < n and toks[i].is_op("="):
            raise TsqlError(102, "Incorrect syntax near '='. (tds_emulator: parameter defaults are not supported)",
                            cls=15)
        if any(d.name.lower() == t.text.lower() for d in out):
            raise TsqlError(134, "The variable name '%s' has already been declared. Variable names must be unique "
                                 "within a query batch or stored procedure." % t.text, cls=15, state=1)
        out.append(Declared(t.text, ct, output))
        if i < n:
            if not toks[i].is_op(","):
                raise TsqlError(102, "Incorrect syntax near '%s'." % toks[i].text, cls=15)
            i += 1
    return out


def bind(proc, declared, values, stmt_text):
    """Match the value parameters (positional, then named) to the declarations -> {lower name: Param}.

    Raises 8144 (too many), 8145 (unknown name), 8178 (declared but not supplied) as SQL Server does."""
    bound = {}
    seen_named = False
    for k, p in enumerate(values):
        if p.name:
            seen_named = True
            key = p.name.lower()
            if not any(d.name.lower() == key for d in declared):
                raise TsqlError(8145, "%s is not a parameter for procedure %s." % (p.name, proc), cls=16)
        else:
            if seen_named:
                raise TsqlError(119, "Must pass parameter number %d and subsequent parameters as '@name = value'. "
                                "After the form '@name = value' has been used, all subsequent parameters must be "
                                "passed in the form '@name = value'." % (k + 1), cls=15)
            if k >= len(declared):
                raise TsqlError(8144, "Procedure or function %s has too many arguments specified." % proc, cls=16)
            key = declared[k].name.lower()
        bound[key] = p
    for d in declared:
        if d.name.lower() not in bound:
            raise TsqlError(8178, "The parameterized query '(%s' expects the parameter '%s', which was not "
                                  "supplied." % (stmt_text[:80], d.name), cls=16)
    return bound


def _fmt_time(t):
    return t.strftime("%H:%M:%S.%f")


def _fmt_dt(v):
    return v.strftime("%Y-%m-%d %H:%M:%S.%f").rjust(26, "0")


def _fmt_dto(v):
    off = v.utcoffset() or datetime.timedelta(0)
    minutes = int(off.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return "%s %s%02d:%02d" % (_fmt_dt(v.replace(tzinfo=None)), sign, minutes // 60, minutes % 60)


def _text_of(v, ct):
    """Python value -> the text PostgreSQL parses as a value of the declared type."""
    name = ct.name
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (int, decimal.Decimal)):
        return str(v) if not isinstance(v, decimal.Decimal) else format(v, "f")
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, datetime.datetime):
        if name == "date":
            return v.date().isoformat()
        if name == "time":
            return _fmt_time(v.time())
        if v.tzinfo is not None:
            if name == "datetimeoffset":
                return _fmt_dto(v)
            v = v.replace(tzinfo=None)
        return _fmt_dt(v)
    if isinstance(v, datetime.date):
        return v.isoformat() + ("" if name == "date" else " 00:00:00")
    if isinstance(v, datetime.time):
        return _fmt_time(v) if name != "datetime2" else "1900-01-01 " + _fmt_time(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        if name in ("binary", "varbinary", "timestamp"):
            return None
        raise TsqlError(257, "Implicit conversion from data type varbinary to %s is not allowed. Use the CONVERT "
                             "function to run this query." % name, cls=16, state=3)
    return str(v)


_NUMERIC = {"tinyint", "smallint", "int", "bigint", "bit", "decimal", "numeric", "money", "smallmoney", "float",
            "real"}


def pg_value(param, ct):
    """A bound parameter -> a PostgreSQL expression of the declared type ``ct`` (a ColumnType)."""
    v = param.value
    name = ct.name
    target = "text" if name == "datetimeoffset" else ct.cast_pg()
    if v is None:
        return "CAST(NULL AS %s)" % target
    if name in ("binary", "varbinary", "timestamp"):
        if isinstance(v, str):
            raise TsqlError(257, "Implicit conversion from data type %s to %s is not allowed. Use the CONVERT "
                                 "function to run this query." % (param.type.name, name), cls=16, state=3)
        if not isinstance(v, (bytes, bytearray)):
            raise TsqlError(257, "Implicit conversion from data type %s to %s is not allowed."
                            % (param.type.name, name), cls=16, state=3)
        data = bytes(v)
        limit = 8 if name == "timestamp" else ct.length
        if limit is not None and limit != -1:
            data = data[:limit]
            if name in ("binary", "timestamp") and len(data) < limit:
                data += b"\x00" * (limit - len(data))
        return "'\\x%s'::bytea" % data.hex()
    if name in _NUMERIC and isinstance(v, (datetime.date, datetime.time, uuid.UUID)):
        raise TsqlError(206, "Operand type clash: %s is incompatible with %s" % (param.type.name, name), cls=16,
                        state=2)
    if name == "uniqueidentifier" and not isinstance(v, (uuid.UUID, str)):
        raise TsqlError(206, "Operand type clash: %s is incompatible with uniqueidentifier" % param.type.name,
                        cls=16, state=2)
    text = _text_of(v, ct)
    if name in ("char", "varchar"):
        text = text.encode("cp1252", errors="replace").decode("cp1252")  # a cp1252 database's varchar
    if name in ("tinyint", "smallint", "int", "bigint") and isinstance(v, (float, decimal.Decimal)):
        # SQL Server truncates toward zero converting to an integer type
        text = format(decimal.Decimal(v).to_integral_value(rounding=decimal.ROUND_DOWN), "f")
    if name == "datetimeoffset":
        return pg_string(text)
    if name == "bit":
        if isinstance(v, str):
            return "CAST((CASE WHEN CAST(%s AS numeric) <> 0 THEN 1 ELSE 0 END) AS smallint)" % pg_string(text)
        return "CAST(%d AS smallint)" % (1 if (v != 0) else 0)
    if name == "tinyint":
        return "tds_meta.tinyint(CAST(%s AS numeric))" % pg_string(text)
    return "CAST(%s AS %s)" % (pg_string(text), target)


def bound_expressions(declared, bound):
    """{lower name: PostgreSQL expression} for the translator."""
    return {d.name.lower(): pg_value(bound[d.name.lower()], d.ctype) for d in declared}


# ---------------------------------------------------------------------------------------------
# response tokens


def returnstatus(value):
    return struct.pack("<Bi", RETURNSTATUS, value)


def returnvalue(ordinal, name, sqltype, value):
    """RETURNVALUE of an output parameter (status 0x01), typed as ``sqltype``."""
    meta, enc = P.column_codec(sqltype)
    return (struct.pack("<BH", RETURNVALUE, ordinal) + P.b_varchar(name) + b"\x01"
            + struct.pack("<IH", sqltype.usertype, 0x01) + meta + enc(value))


def sqltype_of(ct):
    """translate.ColumnType -> protocol.SqlType (for RETURNVALUE of a declared output parameter)."""
    return SqlType(ct.name, ct.length, ct.precision, ct.scale)


def wire_value(value, ct):
    """A Python value as the RETURNVALUE encoder of the declared type expects it."""
    if value is None:
        return None
    name = ct.name
    if name in ("char", "varchar", "nchar", "nvarchar"):
        return value if isinstance(value, str) else _text_of(value, ct)
    if name in ("tinyint", "smallint", "int", "bigint"):
        return int(value)
    if name == "bit":
        return bool(value)
    if name in ("decimal", "numeric", "money", "smallmoney"):
        return decimal.Decimal(value)
    if name in ("float", "real"):
        return float(value)
    return value


# ---------------------------------------------------------------------------------------------
# request handlers (run on the session's thread)


def transaction_request(s, payload):
    """TM_BEGIN_XACT / TM_COMMIT_XACT / TM_ROLLBACK_XACT (with fBeginXact: a new transaction right after).
    Answered with ENVCHANGE 8/9/10 carrying the transaction descriptor, then DONE."""
    w = s.writer()
    try:
        _, body = split_all_headers(payload, s.tds_version)
        req = _parsed(parse_tm, body)
        if req.kind == TM_BEGIN_XACT:
            _begin(s, w, req.isolation, req.name)
        elif req.kind in (TM_COMMIT_XACT, TM_ROLLBACK_XACT):
            if req.name:
                raise TsqlError(6401, "Cannot roll back %s. No transaction or savepoint of that name was found. "
                                      "(tds_emulator: named transactions are not supported)" % req.name)
            if req.kind == TM_COMMIT_XACT:
                s.commit_xact(w, whole=True)
            else:
                s.rollback_xact(w)
            if req.begin_after:
                _begin(s, w, req.isolation, req.new_name)
        else:
            names = {TM_GET_DTC_ADDRESS: "TM_GET_DTC_ADDRESS", TM_PROPAGATE_XACT: "TM_PROPAGATE_XACT",
                     TM_PROMOTE_XACT: "TM_PROMOTE_XACT", TM_SAVE_XACT: "TM_SAVE_XACT"}
            raise TsqlError(8509, "tds_emulator: transaction manager request %s is not supported (no distributed "
                                  "transactions, no savepoints)" % names.get(req.kind, req.kind))
        w.add(P.done(P.DONE_FINAL))
    except TsqlError as e:
        w.add(s.error(e) + P.done(P.DONE_ERROR))
    w.finish()


def _parsed(fn, *args):
    """A malformed request is an 8009 error for the client, never a dropped session."""
    try:
        return fn(*args)
    except (ValueError, IndexError, struct.error) as e:
        raise rpc_error("(tds_emulator: %s)" % e) from e


def _begin(s, w, isolation, name):
    if name:
        raise TsqlError(6401, "tds_emulator: named transactions are not supported")
    if isolation is not None and isolation != s.isolation:
        if s.trancount:
            raise TsqlError(102, "tds_emulator: changing the isolation level inside a transaction is not supported",
                            cls=15)
        s.isolation = isolation
    s.begin_xact(w)


def _proc_key(name):
    last = name.split(".")[-1].strip()
    if last.startswith("[") and last.endswith("]"):
        last = last[1:-1]
    return last.lower()


def rpc_request(s, payload):
    """One RPC message: each call answers with its results (DONEINPROC), RETURNSTATUS, RETURNVALUEs and
    DONEPROC (DONE_MORE on all but the last call)."""
    w = s.writer()
    try:
        _, body = split_all_headers(payload, s.tds_version)
        calls = _parsed(parse_rpc, body, s.tds_version)
    except TsqlError as e:
        w.add(s.error(e) + P.done(P.DONE_ERROR))
        w.finish()
        return
    for k, call in enumerate(calls):
        if s.attn.is_set():
            break
        _run_call(s, call, w, P.DONE_MORE if k < len(calls) - 1 else 0)
    if s.attn.is_set():
        s.attn.clear()
        w.add(P.done(P.DONE_ATTN))
    w.finish()


def _string_arg(call, idx, proc, formal):
    if idx >= len(call.params):
        raise TsqlError(201, "Procedure or function '%s' expects parameter '%s', which was not supplied."
                        % (proc, formal), cls=16, state=4)
    p = call.params[idx]
    if p.name and p.name.lower() != formal.lower():
        raise TsqlError(201, "Procedure or function '%s' expects parameter '%s', which was not supplied."
                        % (proc, formal), cls=16, state=4)
    if p.value is not None and p.type.name not in ("nvarchar", "nchar"):
        raise TsqlError(214, "Procedure expects parameter '%s' of type 'ntext/nchar/nvarchar'." % formal, cls=16,
                        state=2)
    return p.value


def _handle_arg(call, proc):
    if not call.params:
        raise TsqlError(201, "Procedure or function '%s' expects parameter '@handle', which was not supplied."
                        % proc, cls=16, state=4)
    return call.params[0]


def _run_call(s, call, w, more):
    proc = _proc_key(call.proc)
    outputs = []  # (ordinal, name, SqlType, value)
    try:
        if proc == "sp_executesql":
            stmt = _string_arg(call, 0, proc, "@stmt")
            decl = _string_arg(call, 1, proc, "@params") if len(call.params) > 1 else None
            declared = parse_declarations(decl)
            values = call.params[2:]
            err = _execute(s, proc, stmt, declared, values, w)
            outputs = _outputs(declared, values, 2)
        elif proc in ("sp_prepexec", "sp_prepare"):
            hp = _handle_arg(call, proc)
            decl = _string_arg(call, 1, proc, "@params")
            stmt = _string_arg(call, 2, proc, "@stmt")
            declared = parse_declarations(decl)
            handle = s.next_handle
            s.next_handle += 1
            s.prepared[handle] = (declared, stmt or "")
            if proc == "sp_prepare":
                err = 0
                values = []
            else:
                values = call.params[3:]
                err = _execute(s, proc, stmt, declared, values, w)
            outputs = [(0, hp.name or "@handle", SqlType("int"), handle)] + _outputs(declared, values, 3)
        elif proc == "sp_execute":
            hp = _handle_arg(call, proc)
            entry = s.prepared.get(hp.value)
            if entry is None:
                raise TsqlError(8179, "Could not find prepared statement with handle %s." % hp.value, cls=16,
                                state=4)
            declared, stmt = entry
            values = call.params[1:]
            err = _execute(s, proc, stmt, declared, values, w)
            outputs = _outputs(declared, values, 1)
        elif proc == "sp_unprepare":
            hp = _handle_arg(call, proc)
            if s.prepared.pop(hp.value, None) is None:
                raise TsqlError(8179, "Could not find prepared statement with handle %s." % hp.value, cls=16,
                                state=4)
            err = 0
        else:
            raise TsqlError(2812, "Could not find stored procedure '%s'. (tds_emulator: RPC serves sp_executesql, "
                                  "sp_prepare, sp_prepexec, sp_execute, sp_unprepare)" % call.proc, cls=16, state=62)
    except TsqlError as e:
        w.add(s.error(e) + P.done(P.DONE_ERROR | more, token=DONEPROC))
        return
    if s.attn.is_set():
        return
    w.add(returnstatus(err or 0))
    for ordinal, name, t, value in outputs:
        w.add(returnvalue(ordinal, name, t, value))
    w.add(P.done((P.DONE_ERROR if err else 0) | more, token=DONEPROC))


def _outputs(declared, values, first_ordinal):
    """Output parameters come back unchanged (the supported statements cannot assign variables)."""
    out = []
    for k, p in enumerate(values):
        if not p.output:
            continue
        d = _declared_for(declared, p, k)
        out.append((first_ordinal + k, p.name or d.name, sqltype_of(d.ctype), wire_value(p.value, d.ctype)))
    return out


def _declared_for(declared, p, k):
    if p.name:
        return next(d for d in declared if d.name.lower() == p.name.lower())
    return declared[k]


def _execute(s, proc, stmt, declared, values, w):
    """Bind and run ``stmt``; returns the number of the error that stopped it (0: none)."""
    bound = bind(proc, declared, values, stmt or "")
    for k, p in enumerate(values):
        d = _declared_for(declared, p, k)
        if p.output and not d.output:
            raise TsqlError(8162, 'The formal parameter "%s" was not declared as an OUTPUT parameter, but the actual '
                                  'parameter passed in requested output.' % d.name, cls=16, state=2)
    params = bound_expressions(declared, bound)
    if not stmt:
        return 0
    s.params, s.done_token = params, DONEINPROC
    try:
        return s.run_text(stmt, w, in_proc=True) or 0
    finally:
        s.params, s.done_token = {}, 0xFD

"""TDS 7.x wire format: packets, login records, tokens and the SQL Server value encodings.

Layouts follow [MS-TDS] (packet header 2.2.3.1, PRELOGIN 2.2.6.5, LOGIN7 2.2.6.4, tokens 2.2.7,
TYPE_INFO 2.2.5.6, data type encodings 2.2.5.5). Only what pymssql/FreeTDS exercise is implemented.
"""

import datetime
import decimal
import struct

# packet types
PKT_SQL_BATCH = 0x01
PKT_RPC = 0x03
PKT_REPLY = 0x04
PKT_ATTENTION = 0x06
PKT_BULK = 0x07
PKT_TRANSACTION = 0x0E
PKT_LOGIN7 = 0x10
PKT_SSPI = 0x11
PKT_PRELOGIN = 0x12

HEADER = struct.Struct(">BBHHBB")

# DONE status bits
DONE_FINAL = 0x00
DONE_MORE = 0x01
DONE_ERROR = 0x02
DONE_INXACT = 0x04
DONE_COUNT = 0x10
DONE_ATTN = 0x20
DONE_SRVERROR = 0x100

CMD_SELECT = 0xC1
CMD_INSERT = 0xC3
CMD_DELETE = 0xC4
CMD_UPDATE = 0xC5

# SQL_Latin1_General_CP1_CI_AS: LCID 0x0409, sort id 52 (code page 1252)
COLLATION = bytes([0x09, 0x04, 0xD0, 0x00, 0x34])
SERVER_NAME = "TDSEMU"
PROG_NAME = "Microsoft SQL Server"
PROG_VERSION = bytes([16, 0, 0x03, 0xE8])  # 16.0.1000

TDS_VERSIONS = {
    0x74000004: "7.4",
    0x730B0003: "7.3B",
    0x730A0003: "7.3A",
}


class ProtocolError(Exception):
    pass


class ConnectionClosed(Exception):
    pass


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionClosed()
        buf += chunk
    return bytes(buf)


def read_packet(sock):
    """One packet: (type, status, payload)."""
    ptype, status, length, _spid, _pid, _win = HEADER.unpack(recv_exact(sock, 8))
    if length < 8:
        raise ProtocolError("bad packet length %d" % length)
    return ptype, status, recv_exact(sock, length - 8)


# ---------------------------------------------------------------------------------------------
# PRELOGIN / LOGIN7


def parse_prelogin(payload):
    opts = {}
    i = 0
    while i < len(payload) and payload[i] != 0xFF:
        tok, off, ln = struct.unpack_from(">BHH", payload, i)
        opts[tok] = payload[off:off + ln]
        i += 5
    return opts


def build_prelogin_response():
    # VERSION, ENCRYPTION (NOT_SUP), INSTOPT, THREADID, MARS
    options = [
        (0x00, struct.pack(">IH", 0x10000000 | 0x03E8, 0)),
        (0x01, b"\x02"),
        (0x02, b"\x00"),
        (0x03, b""),
        (0x04, b"\x00"),
    ]
    head_len = 5 * len(options) + 1
    head = bytearray()
    body = bytearray()
    for tok, data in options:
        head += struct.pack(">BHH", tok, head_len + len(body), len(data))
        body += data
    head.append(0xFF)
    return bytes(head + body)


def _unobfuscate(b):
    out = bytearray()
    for x in b:
        x ^= 0xA5
        out.append(((x & 0x0F) << 4) | (x >> 4))
    return bytes(out)


def parse_login7(payload):
    (length, tds_version, packet_size) = struct.unpack_from("<III", payload, 0)

    def field(pos, password=False):
        off, ln = struct.unpack_from("<HH", payload, pos)
        raw = payload[off:off + 2 * ln]
        if password:
            raw = _unobfuscate(raw)
        return raw.decode("utf-16-le", errors="replace")

    return {
        "tds_version": tds_version,
        "packet_size": packet_size,
        "hostname": field(36),
        "user": field(40),
        "password": field(44, password=True),
        "app": field(48),
        "server": field(52),
        "library": field(60),
        "language": field(64),
        "database": field(68),
    }


# ---------------------------------------------------------------------------------------------
# tokens


def b_varchar(s):
    data = s.encode("utf-16-le")
    return bytes([len(data) // 2]) + data


def us_varchar(s):
    data = s.encode("utf-16-le")
    return struct.pack("<H", len(data) // 2) + data


def done(status=DONE_FINAL, curcmd=0, rowcount=0, token=0xFD):
    return struct.pack("<BHHQ", token, status, curcmd, rowcount)


def message_token(number, text, state=1, cls=16, line=1, info=False, server=SERVER_NAME):
    body = (struct.pack("<iBB", number, state, cls) + us_varchar(text) + b_varchar(server) + b_varchar("")
            + struct.pack("<i", line))
    return bytes([0xAB if info else 0xAA]) + struct.pack("<H", len(body)) + body


def envchange_str(kind, new, old=""):
    body = bytes([kind]) + b_varchar(new) + b_varchar(old)
    return b"\xE3" + struct.pack("<H", len(body)) + body


def envchange_bytes(kind, new, old=b""):
    body = bytes([kind, len(new)]) + new + bytes([len(old)]) + old
    return b"\xE3" + struct.pack("<H", len(body)) + body


def loginack(tds_version):
    body = b"\x01" + struct.pack(">I", tds_version) + b_varchar(PROG_NAME) + PROG_VERSION
    return b"\xAD" + struct.pack("<H", len(body)) + body


# ---------------------------------------------------------------------------------------------
# data types: SqlType describes a result column as SQL Server would declare it


class SqlType:
    """A SQL Server column type: name (lower case), length (bytes for binary/char, characters for n*),
    precision, scale. ``length`` -1 means (max)."""

    __slots__ = ("name", "length", "precision", "scale", "usertype")

    def __init__(self, name, length=None, precision=None, scale=None):
        self.name = name
        self.length = length
        self.precision = precision
        self.scale = scale
        self.usertype = 0x50 if name in ("timestamp", "rowversion") else 0

    def __repr__(self):
        return "SqlType(%r, %r, %r, %r)" % (self.name, self.length, self.precision, self.scale)


_EPOCH_1900 = datetime.date(1900, 1, 1).toordinal()
_ORD_0001 = datetime.date(1, 1, 1).toordinal()
_PLP_NULL = b"\xff" * 8
_TIME_LEN = {0: 3, 1: 3, 2: 3, 3: 4, 4: 4, 5: 5, 6: 5, 7: 5}
_DEC_LEN = [(9, 5), (19, 9), (28, 13), (38, 17)]


def _dec_size(p):
    for maxp, size in _DEC_LEN:
        if p <= maxp:
            return size
    raise ValueError("precision %d > 38" % p)


def _time_units(t_seconds, micro, scale):
    # units of 10**-scale seconds since midnight (value carries microseconds only)
    return t_seconds * 10 ** scale + (micro * 10 ** scale) // 1000000


def _plp(data):
    if not data:
        return b"\x00" * 8 + b"\x00\x00\x00\x00"
    n = len(data)
    return struct.pack("<QI", n, n) + data + b"\x00\x00\x00\x00"


def nul_out(s):
    """Strings are stored with U+FFFF standing for U+0000 (PostgreSQL text cannot hold NUL)."""
    return s.replace("\uffff", "\x00") if "\uffff" in s else s


def column_codec(t):
    """(TYPE_INFO bytes, encoder(value) -> bytes) for a SqlType."""
    name = t.name
    pk = struct.pack
    if name in ("tinyint", "smallint", "int", "bigint"):
        size, fmt = {"tinyint": (1, "<BB"), "smallint": (2, "<Bh"), "int": (4, "<Bi"), "bigint": (8, "<Bq")}[name]
        s = struct.Struct(fmt)

        def enc(v):
            return b"\x00" if v is None else s.pack(size, v)

        return bytes([0x26, size]), enc
    if name == "bit":
        def enc(v):
            return b"\x00" if v is None else (b"\x01\x01" if v else b"\x01\x00")

        return b"\x68\x01", enc
    if name in ("float", "real"):
        if name == "real" or (t.precision is not None and t.precision <= 24):
            s = struct.Struct("<Bf")
            size = 4
        else:
            s = struct.Struct("<Bd")
            size = 8

        def enc(v):
            return b"\x00" if v is None else s.pack(size, v)

        return bytes([0x6D, size]), enc
    if name in ("money", "smallmoney"):
        q = decimal.Decimal("0.0001")

        if name == "money":
            def enc(v):
                if v is None:
                    return b"\x00"
                m = int(decimal.Decimal(v).quantize(q, rounding=decimal.ROUND_HALF_UP).scaleb(4))
                return pk("<BiI", 8, m >> 32, m & 0xFFFFFFFF)

            return b"\x6E\x08", enc

        def enc(v):
            if v is None:
                return b"\x00"
            m = int(decimal.Decimal(v).quantize(q, rounding=decimal.ROUND_HALF_UP).scaleb(4))
            return pk("<Bi", 4, m)

        return b"\x6E\x04", enc
    if name in ("decimal", "numeric"):
        p = t.precision or 18
        sc = t.scale or 0
        size = _dec_size(p)
        quant = decimal.Decimal(1).scaleb(-sc)
        ctx = decimal.Context(prec=60)

        def enc(v):
            if v is None:
                return b"\x00"
            d = decimal.Decimal(v).quantize(quant, rounding=decimal.ROUND_HALF_UP, context=ctx)
            n = int(d.scaleb(sc, context=ctx))
            sign = 1 if n >= 0 else 0
            return bytes([size, sign]) + abs(n).to_bytes(size - 1, "little")

        return bytes([0x6A if name == "decimal" else 0x6C, size, p, sc]), enc
    if name in ("datetime", "smalldatetime"):
        if name == "datetime":
            def enc(v):
                if v is None:
                    return b"\x00"
                days = v.toordinal() - _EPOCH_1900
                us = ((v.hour * 60 + v.minute) * 60 + v.second) * 1000000 + v.microsecond
                ticks = (us * 300 + 500000) // 1000000
                if ticks >= 300 * 86400:
                    days += 1
                    ticks = 0
                return pk("<BiI", 8, days, ticks)

            return b"\x6F\x08", enc

        def enc(v):
            if v is None:
                return b"\x00"
            days = v.toordinal() - _EPOCH_1900
            minutes = v.hour * 60 + v.minute + (1 if v.second >= 30 else 0)
            return pk("<BHH", 4, days, minutes)

        return b"\x6F\x04", enc
    if name == "date":
        def enc(v):
            if v is None:
                return b"\x00"
            return b"\x03" + (v.toordinal() - _ORD_0001).to_bytes(3, "little")

        return b"\x28", enc
    if name in ("time", "datetime2", "datetimeoffset"):
        sc = 7 if t.scale is None else t.scale
        tl = _TIME_LEN[sc]
        if name == "time":
            def enc(v):
                if v is None:
                    return b"\x00"
                u = _time_units((v.hour * 60 + v.minute) * 60 + v.second, v.microsecond, sc)
                return bytes([tl]) + u.to_bytes(tl, "little")

            return bytes([0x29, sc]), enc
        if name == "datetime2":
            def enc(v):
                if v is None:
                    return b"\x00"
                u = _time_units((v.hour * 60 + v.minute) * 60 + v.second, v.microsecond, sc)
                return (bytes([tl + 3]) + u.to_bytes(tl, "little")
                        + (v.toordinal() - _ORD_0001).to_bytes(3, "little"))

            return bytes([0x2A, sc]), enc

        def enc(v):
            # v: aware datetime; on the wire: UTC time, UTC date, offset minutes
            if v is None:
                return b"\x00"
            off = v.utcoffset()
            offmin = int(off.total_seconds() // 60)
            u = (v - off).replace(tzinfo=None)
            units = _time_units((u.hour * 60 + u.minute) * 60 + u.second, u.microsecond, sc)
            return (bytes([tl + 5]) + units.to_bytes(tl, "little") + (u.toordinal() - _ORD_0001).to_bytes(3, "little")
                    + pk("<h", offmin))

        return bytes([0x2B, sc]), enc
    if name == "uniqueidentifier":
        def enc(v):
            return b"\x00" if v is None else b"\x10" + v.bytes_le

        return b"\x24\x10", enc
    if name in ("binary", "varbinary", "timestamp", "rowversion"):
        n = t.length if name not in ("timestamp", "rowversion") else 8
        fixed = name != "varbinary"
        tok = 0xAD if fixed else 0xA5
        if n == -1:
            def enc(v):
                return _PLP_NULL if v is None else _plp(bytes(v))

            return bytes([tok]) + b"\xff\xff", enc

        def enc(v):
            if v is None:
                return b"\xff\xff"
            v = bytes(v)
            if fixed and len(v) < n:
                v = v + b"\x00" * (n - len(v))
            return pk("<H", len(v)) + v

        return bytes([tok]) + pk("<H", n), enc
    if name in ("char", "varchar", "nchar", "nvarchar"):
        wide = name[0] == "n"
        fixed = name in ("char", "nchar")
        n = t.length
        tok = {"char": 0xAF, "varchar": 0xA7, "nchar": 0xEF, "nvarchar": 0xE7}[name]
        codec, errors = ("utf-16-le", "surrogatepass") if wide else ("cp1252", "replace")

        def conv(v):
            if "\uffff" in v:
                v = v.replace("\uffff", "\x00")
            return v.encode(codec, errors)
        if n == -1:
            def enc(v):
                return _PLP_NULL if v is None else _plp(conv(v))

            return bytes([tok]) + b"\xff\xff" + COLLATION, enc
        maxbytes = n * 2 if wide else n

        if fixed:
            def enc(v):
                if v is None:
                    return b"\xff\xff"
                if len(v) < n:
                    v = v + " " * (n - len(v))
                data = conv(v)
                return pk("<H", len(data)) + data
        else:
            def enc(v):
                if v is None:
                    return b"\xff\xff"
                if "\uffff" in v:
                    v = v.replace("\uffff", "\x00")
                data = v.encode(codec, errors)
                return pk("<H", len(data)) + data

        return bytes([tok]) + pk("<H", maxbytes) + COLLATION, enc
    raise ValueError("no wire encoding for type %r" % name)


def colmetadata(columns):
    """columns: list of (name, SqlType, nullable) -> COLMETADATA token bytes and encoders."""
    out = bytearray(b"\x81" + struct.pack("<H", len(columns)))
    encoders = []
    for name, t, nullable in columns:
        meta, enc = column_codec(t)
        flags = 0x01 if nullable else 0x00
        if t.name in ("timestamp", "rowversion"):
            flags |= 0x08 | 0x10 * 0  # updateable: unknown; computed no
        out += struct.pack("<IH", t.usertype, flags) + meta + b_varchar(name[:255])
        encoders.append(enc)
    return bytes(out), encoders


def row_encoder(encoders):
    """A function row(values) -> ROW token, or NBCROW (null bitmap, TDS 7.3+) when the row holds NULLs,
    as SQL Server does. The ROW path is generated for the column count (no per-value loop)."""
    n = len(encoders)
    if n == 0:
        return lambda values: b"\xD1"
    encs = tuple(encoders)
    nbytes = (n + 7) // 8

    def nbcrow(r):
        bitmap = bytearray(nbytes)
        parts = [b"\xD2", b""]
        for i, v in enumerate(r):
            if v is None:
                bitmap[i >> 3] |= 1 << (i & 7)
            else:
                parts.append(encs[i](v))
        parts[1] = bytes(bitmap)
        return b"".join(parts)

    names = ["e%d" % i for i in range(n)]
    src = ("def row(r):\n    if None in r:\n        return nbcrow(r)\n    return b'\\xD1' + %s\n"
           % " + ".join("%s(r[%d])" % (names[i], i) for i in range(n)))
    env = dict(zip(names, encs, strict=True))
    env["nbcrow"] = nbcrow
    exec(compile(src, "<tds row encoder>", "exec"), env)  # noqa: S102 - only generated indices, no input
    return env["row"]

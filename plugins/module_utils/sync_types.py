# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sync building blocks without I/O: the domain error, PostgreSQL identifiers, the SQL Server ->
PostgreSQL type mapping and the row transform (U+0000 rule, datetimeoffset offsets)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

PG_IDENT_MAX_BYTES = 63
OFFSET_SUFFIX = "_offset_min"
NUL_RULES = ("strip", "replace", "fail")


class SyncError(Exception):
    """A sync step failed; the message says which and why."""


# ---- identifiers -------------------------------------------------------------------------------

def check_pg_ident(name, what):
    """A PostgreSQL identifier kept verbatim (quoted): at most 63 bytes, no NUL; else SyncError."""
    if not isinstance(name, str) or name == "":
        raise SyncError("%s: empty name" % what)
    if "\x00" in name:
        raise SyncError("%s %r: contains NUL" % (what, name))
    if len(name.encode("utf-8")) > PG_IDENT_MAX_BYTES:
        raise SyncError("%s %r: %d bytes in UTF-8, PostgreSQL allows %d (names are never truncated; "
                        "map it to a shorter name or exclude it)" % (what, name, len(name.encode("utf-8")),
                                                                     PG_IDENT_MAX_BYTES))
    return name


# ---- types -------------------------------------------------------------------------------------

class ColumnMap(object):
    """One source column and what it becomes in PostgreSQL.

    ``pg_type`` is spelled as ``format_type()`` prints it (so catalog comparisons are exact);
    ``copy_type`` is the psycopg binary COPY type name; ``kind`` selects the value conversion:
    None (as is), ``str`` (NUL rule), ``dto`` (datetimeoffset -> timestamptz + offset minutes).
    """

    __slots__ = ("name", "src_type", "pg_type", "copy_type", "kind", "nullable", "note", "offset_name")

    def __init__(self, name, src_type, pg_type, copy_type, kind=None, nullable=True, note=None):
        self.name = name
        self.src_type = src_type
        self.pg_type = pg_type
        self.copy_type = copy_type
        self.kind = kind
        self.nullable = nullable
        self.note = note
        self.offset_name = name + OFFSET_SUFFIX if kind == "dto" else None

    def target_columns(self):
        """[(name, pg_type, copy_type)] this column occupies in the target."""
        out = [(self.name, self.pg_type, self.copy_type)]
        if self.offset_name:
            out.append((self.offset_name, "smallint", "int2"))
        return out


def _int(v, what):
    try:
        return int(v)
    except (TypeError, ValueError):
        raise SyncError("catalog: %s %r is not an integer" % (what, v))


def map_column(col):
    """Map one INFORMATION_SCHEMA.COLUMNS row (a dict) to a ColumnMap, or raise SyncError.

    Rules: decimal/numeric(p,s) exact; money numeric(19,4); smallmoney numeric(10,4); datetime
    timestamp(3); smalldatetime timestamp(0); datetime2(n)/time(n) keep min(n,6) digits (n=7 loses
    the 100-ns digit, noted); datetimeoffset(n) -> timestamptz(min(n,6)) + smallint
    ``<name>_offset_min``; (n)(var)char(n) -> character varying(n) (values kept verbatim, padding
    included), (max)/text/ntext/xml -> text; binary types -> bytea; uniqueidentifier -> uuid;
    rowversion/timestamp -> bytea (8 bytes, big-endian: bytea order equals SQL Server's order).
    """
    name = col["COLUMN_NAME"]
    t = str(col["DATA_TYPE"]).lower()
    nullable = str(col.get("IS_NULLABLE", "YES")).upper() == "YES"
    cml = col.get("CHARACTER_MAXIMUM_LENGTH")
    prec = col.get("NUMERIC_PRECISION")
    scale = col.get("NUMERIC_SCALE")
    dtp = col.get("DATETIME_PRECISION")

    def cm(pg, copy, kind=None, note=None):
        return ColumnMap(name, t, pg, copy, kind, nullable, note)

    simple = {
        "bit": ("boolean", "bool"),
        "tinyint": ("smallint", "int2"),
        "smallint": ("smallint", "int2"),
        "int": ("integer", "int4"),
        "bigint": ("bigint", "int8"),
        "money": ("numeric(19,4)", "numeric"),
        "smallmoney": ("numeric(10,4)", "numeric"),
        "real": ("real", "float4"),
        "date": ("date", "date"),
        "datetime": ("timestamp(3) without time zone", "timestamp"),
        "smalldatetime": ("timestamp(0) without time zone", "timestamp"),
        "uniqueidentifier": ("uuid", "uuid"),
        "binary": ("bytea", "bytea"),
        "varbinary": ("bytea", "bytea"),
        "image": ("bytea", "bytea"),
        "timestamp": ("bytea", "bytea"),
        "rowversion": ("bytea", "bytea"),
    }
    if t in simple:
        return cm(*simple[t])
    if t in ("decimal", "numeric"):
        p, s = _int(prec, "precision"), _int(scale or 0, "scale")
        if not 1 <= p <= 38 or not 0 <= s <= p:
            raise SyncError("column %r: decimal(%s,%s) out of range" % (name, p, s))
        return cm("numeric(%d,%d)" % (p, s), "numeric")
    if t == "float":
        p = _int(prec if prec is not None else 53, "precision")
        return cm("real", "float4") if p <= 24 else cm("double precision", "float8")
    if t in ("datetime2", "time", "datetimeoffset"):
        n = _int(dtp if dtp is not None else 7, "datetime precision")
        if not 0 <= n <= 7:
            raise SyncError("column %r: %s(%d) out of range" % (name, t, n))
        keep = min(n, 6)
        note = None
        if n == 7:
            note = "%s(7): the 100-ns digit is dropped (PostgreSQL keeps microseconds)" % t
        if t == "datetime2":
            return cm("timestamp(%d) without time zone" % keep, "timestamp", note=note)
        if t == "time":
            return cm("time(%d) without time zone" % keep, "time", note=note)
        note = ((note + "; ") if note else "") + "offset kept in %s" % (name + OFFSET_SUFFIX)
        return cm("timestamp(%d) with time zone" % keep, "timestamptz", kind="dto", note=note)
    if t in ("char", "varchar", "nchar", "nvarchar"):
        n = _int(cml if cml is not None else -1, "character length")
        if n == -1:
            return cm("text", "text", kind="str")
        if n < 1:
            raise SyncError("column %r: %s(%d) out of range" % (name, t, n))
        return cm("character varying(%d)" % n, "text", kind="str")
    if t in ("text", "ntext", "xml", "sysname"):
        return cm("text", "text", kind="str")
    raise SyncError("column %r: SQL Server type %s is not supported; exclude the column" % (name, t))


def is_rowversion_type(data_type):
    return str(data_type).lower() in ("timestamp", "rowversion")


def make_transform(colmaps, nul_rule, nul_counts):
    """A function turning a pymssql row into the target row, or None when rows pass unchanged."""
    idx_str = [i for i, c in enumerate(colmaps) if c.kind == "str"]
    idx_dto = [i for i, c in enumerate(colmaps) if c.kind == "dto"]
    if not idx_str and not idx_dto:
        return None
    names = [c.name for c in colmaps]
    repl = "" if nul_rule == "strip" else u"\ufffd"

    def fix_str(row):
        for i in idx_str:
            v = row[i]
            if v is not None and "\x00" in v:
                if nul_rule == "fail":
                    raise SyncError("column %r: value contains U+0000, which PostgreSQL text cannot store "
                                    "(nul_character: fail)" % names[i])
                row[i] = v.replace("\x00", repl)
                nul_counts[names[i]] = nul_counts.get(names[i], 0) + 1
        return row

    if not idx_dto:
        def transform(row):
            for i in idx_str:
                v = row[i]
                if v is not None and "\x00" in v:
                    return tuple(fix_str(list(row)))
            return row
        return transform

    dto = set(idx_dto)

    def transform(row):
        row = fix_str(list(row)) if idx_str else row
        out = []
        for i, v in enumerate(row):
            out.append(v)
            if i in dto:
                if v is None:
                    out.append(None)
                else:
                    off = v.utcoffset()
                    out.append(None if off is None else int(off.total_seconds() // 60))
        return out
    return transform

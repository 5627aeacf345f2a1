# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every T-SQL statement the ``mssql_sync`` engine sends to SQL Server, in one place.

This file is the contract with the SQL Server (TDS) emulator in ``tests/support/tds_emulator``:
the emulator supports exactly the statements built here (plus pymssql's own connect-time ``SET``
batch). Keep the set small and standard.

Rules:

* identifiers are bracket-quoted by :func:`quote_ident` only (``]`` doubled, at most 128
  characters, no NUL, not empty); a two-part name by :func:`quote_table`;
* values are never formatted into the text: a value's place in a template is :data:`SLOT` (NUL, which
  quote_ident refuses, so no quoted name holds one), filled by ``mssql.render`` with pymssql's own quoting
  (``str`` -> ``N'...'``, ``bytearray`` -> ``0x...``). Not pymssql's ``%s`` placeholders: pymssql finds
  them by a regular expression over the whole text, also inside a bracket-quoted name (a table named
  ``a%sb``), and has no escape for them. The docs below write a SLOT as ``%s``;
* rowversion watermarks are passed as ``bytearray`` (8 bytes, big-endian) via
  :func:`rv_param`: plain ``bytes`` that happen to be ASCII would be interpolated as a string
  literal by pymssql.

Statements (name -> text; ``{...}`` are quoted identifiers filled in by the builders):

``SERVER_VERSION``      ``SELECT CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128)), @@VERSION``
``DATABASE_IDENTITY``   ``SELECT database_guid, recovery_fork_guid FROM sys.database_recovery_status
                        WHERE database_id = DB_ID()``
``WATERMARKS``          ``SELECT MIN_ACTIVE_ROWVERSION(), @@DBTS``
``TABLE_EXISTS``        ``SELECT TABLE_TYPE FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = %s AND
                        TABLE_NAME = %s``
``COLUMNS``             INFORMATION_SCHEMA.COLUMNS of one table, ordered by ORDINAL_POSITION
``PRIMARY_KEY``         INFORMATION_SCHEMA.TABLE_CONSTRAINTS + KEY_COLUMN_USAGE, ordered by ORDINAL_POSITION
``window_select``       ``SELECT {cols} FROM {s}.{t} WHERE {rv} >= %s AND {rv} < %s ORDER BY {rv}``
``window_count``        ``SELECT COUNT_BIG(*) FROM {s}.{t} WHERE {rv} >= %s AND {rv} < %s``
``full_select``         ``SELECT {cols} FROM {s}.{t}``                   (mode full, no rowversion)
``full_count``          ``SELECT COUNT_BIG(*) FROM {s}.{t}``
``pk_select``           ``SELECT {pk cols} FROM {s}.{t}``               (delete_detection pk_diff)
``CT_SNAPSHOT``         ``SET TRANSACTION ISOLATION LEVEL SNAPSHOT`` (then ``BEGIN TRAN`` .. ``COMMIT TRAN``,
                        ``CT_READ_COMMITTED`` afterwards)            (delete_detection change_tracking)
``ct_versions``         ``SELECT CHANGE_TRACKING_CURRENT_VERSION(), CHANGE_TRACKING_MIN_VALID_VERSION(
                        OBJECT_ID(%s))`` (the quoted two-part name as the parameter)
``ct_deleted_keys``     ``SELECT CT.{pk cols} FROM CHANGETABLE(CHANGES {s}.{t}, %s) AS CT
                        WHERE CT.SYS_CHANGE_OPERATION = N'D'`` (the stored version, an integer); for a table
                        synced both ways ``... AND (CT.SYS_CHANGE_CONTEXT IS NULL OR CT.SYS_CHANGE_CONTEXT <> %s)``
                        (the sync's own context: its deletes are not read back)
``CT_CONTEXT``          ``WITH CHANGE_TRACKING_CONTEXT (%s)``, prefixed to the reverse direction's DML on such a
                        table (``sync_reverse``)
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

MAX_IDENT_LEN = 128  # SQL Server sysname
SLOT = "\x00"  # a value's place in a statement (quote_ident refuses NUL, so no quoted name holds one)


class TsqlError(ValueError):
    """An identifier or value cannot be turned into T-SQL safely."""


def quote_ident(name):
    """Return ``name`` as a bracket-quoted T-SQL identifier (``]`` doubled).

    Rejects empty names, names longer than 128 characters (sysname) and names containing NUL.
    """
    if not isinstance(name, str):
        raise TsqlError("quote identifier %r: not a string" % (name,))
    if name == "":
        raise TsqlError("quote identifier: empty name")
    if len(name) > MAX_IDENT_LEN:
        raise TsqlError("quote identifier %r: longer than %d characters" % (name[:20] + "...", MAX_IDENT_LEN))
    if "\x00" in name:
        raise TsqlError("quote identifier %r: contains a NUL character" % (name,))
    return "[" + name.replace("]", "]]") + "]"


def quote_table(schema, table):
    """Return ``[schema].[table]``."""
    return quote_ident(schema) + "." + quote_ident(table)


def parse_two_part_name(text):
    """Parse ``[schema].[table]``, ``schema.table`` or ``table`` (schema ``dbo``) -> (schema, table).

    Bracketed parts may contain anything (``]]`` is an escaped ``]``); bare parts may not contain
    ``.``, ``[`` or ``]``. Raises TsqlError on anything else.
    """
    if not isinstance(text, str) or not text.strip():
        raise TsqlError("parse table name: empty")
    parts = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == "[":
            j = i + 1
            buf = []
            while True:
                if j >= n:
                    raise TsqlError("parse table name %r: unterminated [" % (text,))
                if text[j] == "]":
                    if j + 1 < n and text[j + 1] == "]":
                        buf.append("]")
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            parts.append("".join(buf))
            i = j + 1
        else:
            j = i
            while j < n and text[j] != ".":
                if text[j] in "[]":
                    raise TsqlError("parse table name %r: stray bracket" % (text,))
                j += 1
            part = text[i:j].strip()
            parts.append(part)
            i = j
        if i >= n:
            break
        if text[i] != ".":
            raise TsqlError("parse table name %r: expected '.' at position %d" % (text, i))
        i += 1
    if len(parts) == 1:
        parts = ["dbo"] + parts
    if len(parts) != 2:
        raise TsqlError("parse table name %r: expected [schema].[table]" % (text,))
    for p in parts:
        quote_ident(p)  # validates
    return parts[0], parts[1]


def rv_param(value):
    """A rowversion as a pymssql parameter: ``bytearray`` of 8 big-endian bytes (int or bytes in)."""
    if isinstance(value, int):
        if value < 0 or value >= 1 << 64:
            raise TsqlError("rowversion %d out of range" % value)
        return bytearray(value.to_bytes(8, "big"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
        if len(b) != 8:
            raise TsqlError("rowversion must be 8 bytes, got %d" % len(b))
        return bytearray(b)
    raise TsqlError("rowversion %r: not int or bytes" % (value,))


def rv_int(value):
    """A rowversion (bytes from pymssql, or int) as an unsigned integer; None stays None."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    b = bytes(value)
    if len(b) > 8:
        raise TsqlError("rowversion longer than 8 bytes")
    return int.from_bytes(b, "big")


def rv_hex(value):
    """``0x`` + 16 hex digits, for reports."""
    return None if value is None else "0x%016X" % rv_int(value)


def _slots(template):
    """A fixed statement (no names in it): its ``%s`` places as SLOTs."""
    return template.replace("%s", SLOT)


# ---- fixed statements -------------------------------------------------------------------------

SERVER_VERSION = "SELECT CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128)), @@VERSION"

DATABASE_IDENTITY = (
    "SELECT database_guid, recovery_fork_guid FROM sys.database_recovery_status WHERE database_id = DB_ID()"
)

# MIN_ACTIVE_ROWVERSION() in its own statement, read before any extraction starts (autocommit reader).
WATERMARKS = "SELECT MIN_ACTIVE_ROWVERSION(), @@DBTS"

TABLE_EXISTS = _slots(
    "SELECT TABLE_TYPE FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
)

# rowversion columns show DATA_TYPE 'timestamp'
COLUMNS = _slots(
    "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE,"
    " DATETIME_PRECISION, IS_NULLABLE, ORDINAL_POSITION"
    " FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
    " ORDER BY ORDINAL_POSITION"
)

PRIMARY_KEY = _slots(
    "SELECT kcu.COLUMN_NAME FROM INFORMATION_SCHEMA.TABLE_CONSTRAINTS tc"
    " JOIN INFORMATION_SCHEMA.KEY_COLUMN_USAGE kcu"
    " ON kcu.CONSTRAINT_SCHEMA = tc.CONSTRAINT_SCHEMA AND kcu.CONSTRAINT_NAME = tc.CONSTRAINT_NAME"
    " WHERE tc.CONSTRAINT_TYPE = 'PRIMARY KEY' AND tc.TABLE_SCHEMA = %s AND tc.TABLE_NAME = %s"
    " ORDER BY kcu.ORDINAL_POSITION"
)


# ---- builders (identifiers quoted here, values stay SLOTs) -----------------------------------------
# Only identifiers that went through quote_ident are ever formatted into a statement.

def _cols(columns):
    if not columns:
        raise TsqlError("select: no columns")
    return ", ".join(quote_ident(c) for c in columns)


def window_select(schema, table, columns, rv_column):
    """Rows with ``lo <= rv < hi`` in rowversion order; params ``(rv_param(lo), rv_param(hi))``."""
    rv = quote_ident(rv_column)
    text = "SELECT %s FROM %s WHERE %s >= %s AND %s < %s ORDER BY %s"
    return text % (_cols(columns), quote_table(schema, table), rv, SLOT, rv, SLOT, rv)


def window_count(schema, table, rv_column):
    """Pending row count in the window (check mode); params ``(rv_param(lo), rv_param(hi))``."""
    rv = quote_ident(rv_column)
    text = "SELECT COUNT_BIG(*) FROM %s WHERE %s >= %s AND %s < %s"
    return text % (quote_table(schema, table), rv, SLOT, rv, SLOT)


def full_select(schema, table, columns):
    """Every row (mode full, for tables without a rowversion column)."""
    text = "SELECT %s FROM %s"
    return text % (_cols(columns), quote_table(schema, table))


def full_count(schema, table):
    text = "SELECT COUNT_BIG(*) FROM %s"
    return text % quote_table(schema, table)


def pk_select(schema, table, key_columns):
    """Every primary key (delete_detection pk_diff)."""
    text = "SELECT %s FROM %s"
    return text % (_cols(key_columns), quote_table(schema, table))


# delete_detection change_tracking: the versions and the deleted keys are read in ONE snapshot
# transaction, so CHANGE_TRACKING_CURRENT_VERSION() is exactly the upper bound of the CHANGETABLE window.
CT_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL SNAPSHOT"
CT_READ_COMMITTED = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED"
CT_BEGIN = "BEGIN TRAN"
CT_COMMIT = "COMMIT TRAN"


def ct_versions():
    """(CHANGE_TRACKING_CURRENT_VERSION(), CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(name))); param: the
    table's quoted two-part name (:func:`quote_table`) as a string."""
    return _slots("SELECT CHANGE_TRACKING_CURRENT_VERSION(), CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(%s))")


# the change tracking context of the sync's own writes (a varbinary(128) constant, the parameter)
CT_CONTEXT = _slots("WITH CHANGE_TRACKING_CONTEXT (%s)")


def ct_deleted_keys(schema, table, key_columns, skip_context=False):
    """Keys deleted since a version (net operation D); params: the version (an int, a literal for pymssql), and
    with ``skip_context`` a context (bytearray) whose deletes are left out: SYS_CHANGE_CONTEXT is the context of
    the key's last change, so a delete the sync made itself is skipped and any later change is not."""
    if not key_columns:
        raise TsqlError("select: no columns")
    cols = ", ".join("CT." + quote_ident(c) for c in key_columns)
    text = "SELECT %s FROM CHANGETABLE(CHANGES %s, %s) AS CT WHERE CT.SYS_CHANGE_OPERATION = N'D'"
    if skip_context:
        text += " AND (CT.SYS_CHANGE_CONTEXT IS NULL OR CT.SYS_CHANGE_CONTEXT <> %s)"
    return text % ((cols, quote_table(schema, table), SLOT) + ((SLOT,) if skip_context else ()))


def all_statement_shapes():
    """Example of every statement, for the emulator's tests and docs."""
    s, t, rv = "dbo", "Orders", "rv"
    return {
        "SERVER_VERSION": SERVER_VERSION,
        "DATABASE_IDENTITY": DATABASE_IDENTITY,
        "WATERMARKS": WATERMARKS,
        "TABLE_EXISTS": TABLE_EXISTS,
        "COLUMNS": COLUMNS,
        "PRIMARY_KEY": PRIMARY_KEY,
        "window_select": window_select(s, t, ["id", "name", rv], rv),
        "window_count": window_count(s, t, rv),
        "full_select": full_select(s, t, ["id", "name"]),
        "full_count": full_count(s, t),
        "pk_select": pk_select(s, t, ["id"]),
        "CT_SNAPSHOT": CT_SNAPSHOT,
        "CT_READ_COMMITTED": CT_READ_COMMITTED,
        "ct_versions": ct_versions(),
        "ct_deleted_keys": ct_deleted_keys(s, t, ["id"]),
        "ct_deleted_keys_skip_context": ct_deleted_keys(s, t, ["id"], skip_context=True),
        "CT_CONTEXT": CT_CONTEXT,
    }

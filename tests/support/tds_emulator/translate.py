"""The supported T-SQL subset, tokenized and translated to PostgreSQL.

Hand-written rather than sqlglot (see the shared reference §6.3): the statements are few and known,
and whatever is not understood must become a SQL Server error, not a best-effort rewrite.
Identifiers are resolved case-insensitively and mapped to PostgreSQL names by :func:`pgname`.
"""

import hashlib
import re

from psycopg import sql

PG_MAX_IDENT = 63


class TsqlError(Exception):
    """A SQL Server error to send to the client."""

    def __init__(self, number, message, state=1, cls=16):
        super().__init__(message)
        self.number = number
        self.message = message
        self.state = state
        self.cls = cls


def syntax_error(near, why=None):
    """102, or 156 when the offending token is a reserved keyword (as SQL Server reports it)."""
    if near.upper() in KEYWORDS and near.isidentifier():
        number, msg = 156, "Incorrect syntax near the keyword '%s'." % near.upper()
    else:
        number, msg = 102, "Incorrect syntax near '%s'." % near
    if why:
        msg += " (tds_emulator: %s)" % why
    return TsqlError(number, msg, state=1, cls=15)


def pgname(name):
    """SQL Server name (case-insensitive, up to 128 characters) -> PostgreSQL name (<= 63 bytes)."""
    low = name.lower()
    raw = low.encode("utf-8")
    if len(raw) <= PG_MAX_IDENT:
        return low
    digest = hashlib.sha1(raw).hexdigest()[:10]
    cut = raw[:PG_MAX_IDENT - 11].decode("utf-8", errors="ignore")
    return cut + "_" + digest


def qi(name):
    """Quoted PostgreSQL identifier for a SQL Server name."""
    return sql.Identifier(pgname(name)).as_string(None)


def pg_quote_ident(pg):
    return sql.Identifier(pg).as_string(None)


# ---------------------------------------------------------------------------------------------
# tokens

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
    |(?P<comment>--[^\n]*|/\*.*?\*/)
    |(?P<nstr>[Nn]'(?:[^']|'')*')
    |(?P<str>'(?:[^']|'')*')
    |(?P<bin>0[xX][0-9a-fA-F]*)
    |(?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
    |(?P<bracket>\[(?:[^\]]|\]\])*\])
    |(?P<dq>"(?:[^"]|"")*")
    |(?P<var>@@?[^\W\d][\w@#$]*)
    |(?P<word>[^\W\d][\w@#$]*)
    |(?P<op><>|!=|>=|<=|!<|!>|[-+*/%=<>(),.;~&|^])
    """,
    re.S | re.X,
)


class Tok:
    __slots__ = ("kind", "text", "value", "up", "pos", "end")

    def __init__(self, kind, text, value, pos, end):
        self.kind = kind  # word, ident, str, bin, num, var, op
        self.text = text
        self.value = value
        self.up = text.upper() if kind == "word" else None
        self.pos = pos
        self.end = end

    def is_op(self, s):
        return self.kind == "op" and self.text == s

    def is_word(self, *words):
        return self.kind == "word" and self.up in words

    def __repr__(self):
        return "Tok(%s,%r)" % (self.kind, self.text)


def tokenize(text):
    toks = []
    pos = 0
    n = len(text)
    while pos < n:
        m = _TOKEN_RE.match(text, pos)
        if not m:
            ch = text[pos]
            if ch == "'" or (ch in "Nn" and text[pos + 1:pos + 2] == "'"):
                raise TsqlError(105, "Unclosed quotation mark after the character string '%s'." % text[pos + 1:][:50],
                                cls=15)
            if ch == "[":
                raise TsqlError(105, "Unclosed quotation mark after the character string '%s'." % text[pos + 1:][:50],
                                cls=15)
            raise syntax_error(ch)
        kind = m.lastgroup
        s = m.group()
        end = m.end()
        if kind in ("ws", "comment"):
            pos = end
            continue
        if kind == "nstr":
            toks.append(Tok("str", s, s[2:-1].replace("''", "'"), pos, end))
        elif kind == "str":
            toks.append(Tok("str", s, s[1:-1].replace("''", "'"), pos, end))
        elif kind == "bracket":
            toks.append(Tok("ident", s, s[1:-1].replace("]]", "]"), pos, end))
        elif kind == "dq":
            toks.append(Tok("ident", s, s[1:-1].replace('""', '"'), pos, end))
        elif kind == "word":
            toks.append(Tok("word", s, s, pos, end))
        else:
            toks.append(Tok(kind, s, s, pos, end))
        pos = end
    return toks


KEYWORDS = frozenset("""
ADD ALL ALTER AND ANY AS ASC BEGIN BETWEEN BY CASE CHECK CLUSTERED COLLATE COLUMN COMMIT CONSTRAINT CREATE
CROSS CURRENT_TIMESTAMP DEFAULT DELETE DESC DISTINCT DROP ELSE END ESCAPE EXCEPT EXISTS FOREIGN FROM FULL GROUP
HAVING IDENTITY IF IN INDEX INNER INSERT INTERSECT INTO IS JOIN KEY LEFT LIKE NONCLUSTERED NOT NULL OF OFF ON
OR ORDER OUTER PERCENT PRIMARY REFERENCES RIGHT ROLLBACK SELECT SET TABLE THEN TOP TRAN TRANSACTION TRUNCATE
UNION UNIQUE UPDATE USE VALUES WHEN WHERE WITH WAITFOR KILL OFFSET FETCH NEXT ROWS ROW ONLY FIRST
""".split())

TABLE_HINTS = frozenset("NOLOCK READUNCOMMITTED READCOMMITTED READCOMMITTEDLOCK READPAST ROWLOCK UPDLOCK "
                        "HOLDLOCK PAGLOCK TABLOCK TABLOCKX XLOCK NOWAIT SERIALIZABLE REPEATABLEREAD".split())

STARTERS = frozenset("SELECT INSERT UPDATE DELETE CREATE DROP ALTER SET USE BEGIN COMMIT ROLLBACK TRUNCATE "
                     "WAITFOR KILL DECLARE EXEC EXECUTE IF WHILE PRINT SAVE MERGE RAISERROR THROW WITH".split())

SPECIAL_SCHEMAS = {"information_schema": "tds_information_schema", "sys": "tds_sys"}

# SQL Server's spelling of catalog view columns (PostgreSQL reports them lower case)
CATALOG_COLUMN_NAMES = {c.lower(): c for c in """
TABLE_CATALOG TABLE_SCHEMA TABLE_NAME TABLE_TYPE COLUMN_NAME ORDINAL_POSITION COLUMN_DEFAULT IS_NULLABLE
DATA_TYPE CHARACTER_MAXIMUM_LENGTH CHARACTER_OCTET_LENGTH NUMERIC_PRECISION NUMERIC_PRECISION_RADIX
NUMERIC_SCALE DATETIME_PRECISION CHARACTER_SET_NAME COLLATION_NAME CONSTRAINT_CATALOG CONSTRAINT_SCHEMA
CONSTRAINT_NAME CONSTRAINT_TYPE IS_DEFERRABLE INITIALLY_DEFERRED
""".split()}


def split_statements(toks):
    """Split a batch into statements (``;`` or a statement keyword at depth 0)."""
    stmts = []
    cur = []
    depth = 0
    seen_set = seen_body = False
    lead = 0  # the statement's first word: after a WITH CHANGE_TRACKING_CONTEXT (..) prefix, its DML keyword
    for t in toks:
        if t.kind == "op":
            if t.text == "(":
                depth += 1
            elif t.text == ")":
                depth -= 1
            elif t.text == ";" and depth == 0:
                if cur:
                    stmts.append(cur)
                cur = []
                seen_set = seen_body = False
                lead = 0
                continue
        if depth == 0 and t.kind == "word" and t.up in STARTERS and cur:
            first = cur[lead].up
            prev = cur[-1]
            cont = False
            if lead == 0 and first == "WITH" and len(cur) >= 2 and cur[1].is_word("CHANGE_TRACKING_CONTEXT"):
                if t.up in ("INSERT", "UPDATE", "DELETE", "MERGE"):
                    cont = True
                    lead = len(cur)
            elif t.up == "SELECT":
                if first == "INSERT" and not seen_body:
                    cont = True
                elif first == "WITH":
                    cont = True
                elif prev.is_word("UNION", "ALL", "EXCEPT", "INTERSECT") or prev.is_op("("):
                    cont = True
            elif t.up == "SET" and first == "UPDATE" and not seen_set:
                cont = True
            elif t.up == "SET" and first == "ALTER" and len(cur) >= 2 and cur[1].is_word("DATABASE"):
                cont = True
            elif t.up == "WITH" and (first in ("SELECT", "UPDATE", "DELETE", "INSERT", "CREATE", "ALTER")):
                cont = True  # table hints, WITH TIES
            elif t.up in ("ALTER", "DROP") and first == "ALTER" and len(cur) >= 3 and not any(
                    x.is_word("ALTER", "DROP") for x in cur[1:]):
                cont = True  # ALTER TABLE t ALTER COLUMN / DROP COLUMN
            elif t.up == "IF" and prev.is_word("TABLE"):
                cont = True  # DROP TABLE IF EXISTS
            if not cont:
                stmts.append(cur)
                cur = []
                seen_set = seen_body = False
                lead = 0
        if depth == 0 and t.kind == "word":
            if t.up == "SET":
                seen_set = True
            if t.up in ("VALUES", "SELECT", "DEFAULT") and cur and cur[lead].up == "INSERT":
                seen_body = True
        cur.append(t)
    if depth != 0:
        raise syntax_error(toks[-1].text if toks else "", "unbalanced parentheses")
    if cur:
        stmts.append(cur)
    return stmts


# ---------------------------------------------------------------------------------------------
# types


class ColumnType:
    """A declared SQL Server type and its PostgreSQL storage."""

    def __init__(self, name, length=None, precision=None, scale=None):
        self.name = name
        self.length = length
        self.precision = precision
        self.scale = scale

    def pg(self):
        n = self.name
        if n in ("tinyint", "smallint", "bit"):
            return "smallint"
        if n == "int":
            return "integer"
        if n == "bigint":
            return "bigint"
        if n in ("decimal", "numeric"):
            return "numeric(%d,%d)" % (self.precision, self.scale)
        if n == "money":
            return "numeric(19,4)"
        if n == "smallmoney":
            return "numeric(10,4)"
        if n == "float":
            return "double precision" if self.precision > 24 else "real"
        if n == "real":
            return "real"
        if n == "date":
            return "date"
        if n == "time":
            return "time(%d)" % min(self.scale, 6)
        if n == "datetime":
            return "timestamp(3)"
        if n == "smalldatetime":
            return "timestamp(0)"
        if n == "datetime2":
            return "timestamp(%d)" % min(self.scale, 6)
        if n == "datetimeoffset":
            return "text"
        if n in ("char", "nchar"):
            return "char(%d) COLLATE tds_meta.tds_ci" % self.length
        if n in ("varchar", "nvarchar"):
            return ("text" if self.length == -1 else "varchar(%d)" % self.length) + " COLLATE tds_meta.tds_ci"
        if n in ("binary", "varbinary", "timestamp"):
            return "bytea"
        if n == "uniqueidentifier":
            return "uuid"
        raise AssertionError(n)

    def cast_pg(self):
        if self.name == "datetimeoffset":
            return "timestamptz"
        if self.name == "bit":
            return "smallint"
        return self.pg().replace(" COLLATE tds_meta.tds_ci", "")


_TYPE_ALIASES = {"integer": "int", "rowversion": "timestamp", "sysname": "nvarchar", "character": "char",
                 "double": "float", "dec": "decimal"}
_TYPES = {"tinyint", "smallint", "int", "bigint", "bit", "decimal", "numeric", "money", "smallmoney", "float",
          "real", "date", "time", "datetime", "smalldatetime", "datetime2", "datetimeoffset", "char", "varchar",
          "nchar", "nvarchar", "binary", "varbinary", "timestamp", "uniqueidentifier"}


def parse_type(toks, i, in_cast=False):
    """Parse a type at toks[i] -> (ColumnType, next index). A length-less char type is (1) in a declaration
    and (30) in CAST/CONVERT, as on SQL Server."""
    t = toks[i]
    if t.kind not in ("word", "ident"):
        raise syntax_error(t.text)
    raw = t.value.lower()
    name = _TYPE_ALIASES.get(raw, raw)
    i += 1
    if raw == "double" and i < len(toks) and toks[i].is_word("PRECISION"):
        i += 1
    if name not in _TYPES:
        raise TsqlError(2715, "Column, parameter, or variable #1: Cannot find data type %s." % t.value)
    args = []
    if i < len(toks) and toks[i].is_op("("):
        i += 1
        while True:
            a = toks[i]
            if a.kind == "num":
                args.append(int(a.text))
            elif a.is_word("MAX"):
                args.append(-1)
            else:
                raise syntax_error(a.text)
            i += 1
            if toks[i].is_op(","):
                i += 1
                continue
            if toks[i].is_op(")"):
                i += 1
                break
            raise syntax_error(toks[i].text)
    ct = ColumnType(name)
    if raw == "sysname":
        args = [128]
    if name in ("char", "varchar", "nchar", "nvarchar", "binary", "varbinary"):
        n = args[0] if args else (30 if in_cast else 1)
        limit = 4000 if name[0] == "n" else 8000
        if n == -1 and name in ("char", "nchar", "binary"):
            raise TsqlError(2716, "Column, parameter, or variable #1: Cannot specify a column width on data type %s."
                            % name)
        if n == 0 or n > limit:
            raise TsqlError(131 if name[0] != "n" else 2717,
                            "The size (%d) given to the type '%s' exceeds the maximum allowed (%d)." % (n, name, limit))
        ct.length = n
    elif name in ("decimal", "numeric"):
        p = args[0] if args else 18
        s = args[1] if len(args) > 1 else 0
        if not 1 <= p <= 38 or not 0 <= s <= p:
            raise TsqlError(2750, "Column or parameter #1: Specified column precision %d is greater than the maximum "
                            "precision of 38." % p)
        ct.precision, ct.scale = p, s
    elif name == "float":
        p = args[0] if args else 53
        ct.precision = 24 if p <= 24 else 53
    elif name in ("time", "datetime2", "datetimeoffset"):
        s = args[0] if args else 7
        if not 0 <= s <= 7:
            raise TsqlError(1002, "Specified scale %d is invalid." % s)
        ct.scale = s
    elif args:
        raise TsqlError(2716, "Column, parameter, or variable #1: Cannot specify a column width on data type %s."
                        % name)
    return ct, i


# ---------------------------------------------------------------------------------------------
# expression translation

_FRAC7 = re.compile(r"(\d{1,2}:\d{2}:\d{2}\.\d{6})\d+")


def pg_string(value):
    if "\uffff" in value:
        raise TsqlError(50000, "tds_emulator: U+FFFF in a string is reserved (it stands for U+0000)")
    value = value.replace("\x00", "\uffff")
    value = _FRAC7.sub(r"\1", value)
    return "'" + value.replace("'", "''") + "'"


def pg_binary(text):
    h = text[2:]
    if len(h) % 2:
        h = "0" + h
    return "'\\x%s'::bytea" % h.lower()


class Context:
    """What the translator needs to know about the session."""

    def __init__(self, database, spid=0, trancount=0, rowcount=0, params=None):
        self.database = database
        self.spid = spid
        self.trancount = trancount
        self.rowcount = rowcount
        self.params = params or {}  # RPC parameters: lower-case @name -> PostgreSQL expression of its type


SERVER_VERSION_TEXT = ("Microsoft SQL Server 2022 (RTM) - 16.0.1000.6 (X64) \n\tCopyright (C) 2022 Microsoft "
                       "Corporation\n\tDeveloper Edition (64-bit) on Linux (berqenas tds_emulator)")


class ExprTranslator:
    """Token-stream translation of SELECT/DML text. Records column aliases (pg name -> SQL Server name)."""

    def __init__(self, toks, ctx):
        self.toks = toks
        self.ctx = ctx
        self.aliases = {}

    def tr(self, i, j):
        toks = self.toks
        out = []
        limits = [None]
        # ORDER BY state per depth: None, "item" (NULLS placement still due) or "done". SQL Server sorts
        # NULLs first in ascending order, PostgreSQL last: every sort key gets NULLS FIRST/LAST.
        orders = [None]

        def close_order():
            if orders[-1] == "item":
                out.append("NULLS FIRST")
            orders[-1] = None

        while i < j:
            t = toks[i]
            k = t.kind
            if k == "op":
                s = t.text
                if s == "(":
                    # deprecated hint form: table (NOLOCK)
                    if (i + 2 < j and toks[i + 1].kind == "word" and toks[i + 1].up in TABLE_HINTS
                            and toks[i + 2].is_op(")")):
                        i += 3
                        continue
                    limits.append(None)
                    orders.append(None)
                    out.append("(")
                elif s == ")":
                    if len(orders) > 1:
                        close_order()
                        orders.pop()
                    lim = limits.pop() if len(limits) > 1 else None
                    if lim is not None:
                        out.append("LIMIT %s" % lim)
                    out.append(")")
                elif s == "," and orders[-1] is not None:
                    close_order()
                    orders[-1] = "item"
                    out.append(",")
                elif s == "!<":
                    out.append(">=")
                elif s == "!>":
                    out.append("<=")
                elif s == "^":
                    out.append("#")  # T-SQL ^ is bitwise XOR (PostgreSQL #), not a power
                elif s in (";",):
                    pass
                else:
                    out.append(s)
                i += 1
            elif k == "str":
                out.append(pg_string(t.value))
                i += 1
            elif k == "bin":
                out.append(pg_binary(t.text))
                i += 1
            elif k == "num":
                out.append(t.text)
                i += 1
            elif k == "var":
                out.append(self.variable(t))
                i += 1
            elif k == "word":
                up = t.up
                nxt = toks[i + 1] if i + 1 < j else None
                if up == "TOP":
                    i = self.top(i, j, limits)
                    continue
                if up == "WITH" and nxt is not None and nxt.is_op("("):
                    # table hints WITH (NOLOCK, ...)
                    m = i + 2
                    while m < j and (toks[m].kind == "word" and toks[m].up in TABLE_HINTS or toks[m].is_op(",")):
                        m += 1
                    if m < j and toks[m].is_op(")") and m > i + 2:
                        i = m + 1
                        continue
                    raise syntax_error("(", "only table hints may follow WITH here")
                hint_follows = (i + 3 < j and toks[i + 2].kind == "word" and toks[i + 2].up in TABLE_HINTS
                                and toks[i + 3].is_op(")"))
                if (nxt is not None and nxt.is_op("(") and not hint_follows
                        and (up not in KEYWORDS or up in ("LEFT", "RIGHT"))):
                    text, i = self.function(i, j)
                    out.append(text)
                    continue
                if up == "CONVERT" or up == "CURRENT_TIMESTAMP":
                    if up == "CURRENT_TIMESTAMP":
                        out.append("LOCALTIMESTAMP(3)")
                        i += 1
                        continue
                if up == "ORDER" and nxt is not None and nxt.is_word("BY"):
                    close_order()
                    out.append("ORDER BY")
                    orders[-1] = "item"
                    i += 2
                    continue
                if up in ("ASC", "DESC") and orders[-1] == "item":
                    out.append(up + (" NULLS FIRST" if up == "ASC" else " NULLS LAST"))
                    orders[-1] = "done"
                    i += 1
                    continue
                if up in ("OFFSET", "FOR", "UNION", "EXCEPT", "INTERSECT") and orders[-1] is not None:
                    close_order()
                if up == "LIKE" and nxt is not None and nxt.kind == "str" and "[" in nxt.value:
                    raise syntax_error("LIKE", "LIKE character classes [..] are not supported")
                if up in KEYWORDS:
                    if up == "AS" and nxt is not None and nxt.kind in ("word", "ident", "str") and (
                            nxt.kind != "word" or nxt.up not in KEYWORDS):
                        alias = nxt.value
                        self.aliases[pgname(alias)] = alias
                        out.append("AS " + qi(alias))
                        i += 2
                        continue
                    out.append(up)
                    i += 1
                    continue
                text, i = self.name_chain(i, j)
                out.append(text)
            elif k == "ident":
                text, i = self.name_chain(i, j)
                out.append(text)
            else:
                raise syntax_error(t.text)
        close_order()
        if limits[0] is not None:
            out.append("LIMIT %s" % limits[0])
        return " ".join(out)

    def top(self, i, j, limits):
        toks = self.toks
        i += 1
        if i < j and toks[i].is_op("("):
            if not (i + 2 < j and toks[i + 1].kind == "num" and toks[i + 2].is_op(")")):
                raise syntax_error("(", "TOP takes a number")
            n = toks[i + 1].text
            i += 3
        elif i < j and toks[i].kind == "num":
            n = toks[i].text
            i += 1
        else:
            raise syntax_error(toks[i].text if i < j else "TOP")
        if not n.isdigit():
            raise TsqlError(1060, "The number of rows in the TOP clause must be an integer.")
        if i < j and toks[i].is_word("PERCENT", "WITH"):
            raise syntax_error(toks[i].text, "TOP PERCENT / WITH TIES not supported")
        limits[-1] = n
        return i

    def variable(self, t):
        v = t.text.upper()
        ctx = self.ctx
        if v == "@@DBTS":
            return "tds_meta.dbts()"
        if v == "@@VERSION":
            return "CAST(%s AS varchar(300))" % pg_string(SERVER_VERSION_TEXT)
        if v == "@@SPID":
            return "CAST(%d AS smallint)" % ctx.spid
        if v == "@@TRANCOUNT":
            return "CAST(%d AS integer)" % ctx.trancount
        if v == "@@ROWCOUNT":
            return "CAST(%d AS integer)" % ctx.rowcount
        if v == "@@SERVERNAME":
            return "CAST('TDSEMU' AS varchar(128))"
        bound = ctx.params.get(t.text.lower())
        if bound is not None:
            return bound
        raise TsqlError(137, 'Must declare the scalar variable "%s".' % t.text, cls=15, state=2)

    def args(self, i, j):
        """toks[i] is '('; returns (list of (a, b) token ranges, index after ')')."""
        toks = self.toks
        depth = 0
        start = i + 1
        ranges = []
        m = i
        while m < j:
            t = toks[m]
            if t.is_op("("):
                depth += 1
            elif t.is_op(")"):
                depth -= 1
                if depth == 0:
                    if m > start or ranges:
                        ranges.append((start, m))
                    return ranges, m + 1
            elif t.is_op(",") and depth == 1:
                ranges.append((start, m))
                start = m + 1
            m += 1
        raise syntax_error("(")

    @staticmethod
    def cast(expr, ct):
        if ct.name == "datetimeoffset":
            # PostgreSQL's timestamptz keeps the instant but not the offset: refuse rather than change it
            raise syntax_error("datetimeoffset", "CAST/CONVERT to datetimeoffset is not supported; insert the "
                                                 "string into a datetimeoffset column instead")
        if ct.name in ("tinyint", "smallint", "int", "bigint"):
            # SQL Server truncates toward zero when converting to an integer type; PostgreSQL rounds
            expr = "tds_meta.trunc_num(%s)" % expr
            if ct.name == "tinyint":
                return "tds_meta.tinyint(%s)" % expr
        return "CAST(%s AS %s)" % (expr, ct.cast_pg())

    def function(self, i, j):
        toks = self.toks
        t = toks[i]
        up = t.up
        if up == "CAST":
            ranges, nxt = self.args(i + 1, j)
            if len(ranges) != 1:
                raise syntax_error("CAST")
            a, b = ranges[0]
            m = a
            depth = 0
            while m < b:
                if toks[m].is_op("("):
                    depth += 1
                elif toks[m].is_op(")"):
                    depth -= 1
                elif depth == 0 and toks[m].is_word("AS"):
                    break
                m += 1
            if m >= b:
                raise syntax_error("CAST", "CAST needs AS")
            ct, end = parse_type(toks, m + 1, in_cast=True)
            if end != b:
                raise syntax_error(toks[end].text)
            return self.cast(self.tr(a, m), ct), nxt
        if up == "CONVERT":
            ranges, nxt = self.args(i + 1, j)
            if len(ranges) != 2:
                raise syntax_error("CONVERT", "CONVERT with a style is not supported")
            ct, end = parse_type(toks, ranges[0][0], in_cast=True)
            if end != ranges[0][1]:
                raise syntax_error(toks[end].text)
            return self.cast(self.tr(*ranges[1]), ct), nxt
        if up == "CHANGETABLE":
            return self.changetable(i, j)
        ranges, nxt = self.args(i + 1, j)
        if up == "OBJECT_ID":
            if len(ranges) != 1 or ranges[0][1] - ranges[0][0] != 1 or toks[ranges[0][0]].kind != "str":
                raise syntax_error("OBJECT_ID", "OBJECT_ID takes one string literal here")
            parts = [t2.value for t2 in tokenize(toks[ranges[0][0]].value) if t2.kind in ("word", "ident")]
            if len(parts) == 3 and parts[0].lower() == self.ctx.database.lower():
                parts = parts[1:]
            if len(parts) == 1:
                parts = ["dbo"] + parts
            if len(parts) != 2:
                return "CAST(NULL AS integer)", nxt
            return "tds_meta.object_id_of(%s, %s)" % (pg_string(parts[0]), pg_string(parts[1])), nxt
        args = [self.tr(a, b) for a, b in ranges]
        n = len(args)

        def need(k):
            if n != k:
                raise TsqlError(174, "The %s function requires %d argument(s)." % (t.text.lower(), k), cls=15)

        if up in ("COUNT", "COUNT_BIG"):
            if n != 1:
                raise syntax_error(t.text)
            body = "count(%s)" % args[0]
            return (body if up == "COUNT_BIG" else "CAST(%s AS integer)" % body), nxt
        if up in ("MIN", "MAX", "SUM"):  # AVG: integer AVG truncates in SQL Server, not in PostgreSQL
            need(1)
            return "%s(%s)" % (up.lower(), args[0]), nxt
        if up == "ISNULL":
            need(2)
            return "COALESCE(%s, %s)" % tuple(args), nxt
        if up == "COALESCE":
            return "COALESCE(%s)" % ", ".join(args), nxt
        if up == "NULLIF":
            need(2)
            return "NULLIF(%s, %s)" % tuple(args), nxt
        if up == "LEN":
            need(1)
            return "CAST(length(rtrim(%s)) AS integer)" % args[0], nxt
        if up == "DATALENGTH":
            need(1)
            return "tds_meta.datalength(%s)" % args[0], nxt
        if up in ("UPPER", "LOWER", "LTRIM", "RTRIM", "ABS"):
            need(1)
            return "%s(%s)" % (up.lower(), args[0]), nxt
        if up in ("NCHAR", "CHAR"):
            need(1)
            return "tds_meta.nchar(%s)" % args[0], nxt
        if up == "NEWID":
            need(0)
            return "gen_random_uuid()", nxt
        if up == "GETDATE" or up == "CURRENT_TIMESTAMP":
            need(0)
            return "LOCALTIMESTAMP(3)", nxt
        if up == "SYSDATETIME":
            need(0)
            return "LOCALTIMESTAMP", nxt
        if up in ("SYSUTCDATETIME", "GETUTCDATE"):
            need(0)
            return "(now() AT TIME ZONE 'UTC')", nxt
        if up == "SYSDATETIMEOFFSET":
            need(0)
            return "now()", nxt
        if up == "DB_ID":
            need(0)
            return "tds_meta.db_id()", nxt
        if up == "DB_NAME":
            need(0)
            return "CAST(%s AS varchar(128))" % pg_string(self.ctx.database), nxt
        if up == "SERVERPROPERTY":
            need(1)
            return "tds_meta.serverproperty(%s)" % args[0], nxt
        if up == "MIN_ACTIVE_ROWVERSION":
            need(0)
            return "tds_meta.min_active_rowversion()", nxt
        if up == "CHANGE_TRACKING_CURRENT_VERSION":
            need(0)
            return "tds_meta.ct_current_version()", nxt
        if up == "CHANGE_TRACKING_MIN_VALID_VERSION":
            need(1)
            return "tds_meta.ct_min_valid_version(%s)" % args[0], nxt
        raise TsqlError(195, "'%s' is not a recognized built-in function name." % t.text, cls=15, state=10)

    def changetable(self, i, j):
        """CHANGETABLE(CHANGES table, last_sync_version): last_sync_version is a bigint scalar (a literal,
        NULL or a variable; an expression is a syntax error, as on SQL Server). VERSION is not supported."""
        toks = self.toks
        if not (i + 2 < j and toks[i + 1].is_op("(") and toks[i + 2].is_word("CHANGES")):
            raise syntax_error(toks[min(i + 2, j - 1)].text, "only CHANGETABLE(CHANGES table, version)")
        name, k = _table_name(toks, i + 3, self.ctx)
        if not (k + 2 < j and toks[k].is_op(",") and toks[k + 2].is_op(")")):
            raise syntax_error(toks[min(k + 1, j - 1)].text)
        v = toks[k + 1]
        if v.kind == "num":
            arg = v.text
        elif v.kind == "var":
            arg = self.variable(v)
        elif v.is_word("NULL"):
            arg = "NULL"
        else:
            raise syntax_error(v.text)
        fn = pg_quote_ident("tds_ct") + "." + pg_quote_ident(pgname(name[0]) + "." + pgname(name[1]))
        return "%s(CAST(%s AS bigint))" % (fn, arg), k + 3

    def name_chain(self, i, j):
        toks = self.toks
        parts = []
        while True:
            t = toks[i]
            if t.kind == "ident" or (t.kind == "word" and t.up not in KEYWORDS):
                parts.append(t.value)
            else:
                raise syntax_error(t.text)
            i += 1
            if i + 1 < j and toks[i].is_op(".") and (toks[i + 1].kind == "ident" or (
                    toks[i + 1].kind == "word" and toks[i + 1].up not in KEYWORDS)):
                i += 1
                continue
            break
        star = ""
        if i + 1 < j and toks[i].is_op(".") and toks[i + 1].is_op("*"):
            star = ".*"
            i += 2
        if len(parts) > 4:
            raise syntax_error(".".join(parts))
        if len(parts) == 4:
            raise TsqlError(7202, "Could not find server '%s' in sys.servers." % parts[0], cls=16)
        if len(parts) == 3:
            if parts[0].lower() != self.ctx.database.lower():
                raise TsqlError(208, "Invalid object name '%s'." % ".".join(parts), cls=16)
            parts = parts[1:]
        if len(parts) == 2 and parts[0].lower() in SPECIAL_SCHEMAS:
            text = pg_quote_ident(SPECIAL_SCHEMAS[parts[0].lower()]) + "." + qi(parts[1])
        else:
            text = ".".join(qi(p) for p in parts)
        return text + star, i


# ---------------------------------------------------------------------------------------------
# statements


class Stmt:
    """A parsed statement: ``kind`` plus fields per kind; ``source`` is the T-SQL text."""

    def __init__(self, kind, source, **kw):
        self.kind = kind
        self.source = source
        self.__dict__.update(kw)


BOOL_OPTIONS = frozenset("""ARITHABORT ARITHIGNORE CONCAT_NULL_YIELDS_NULL ANSI_NULLS ANSI_NULL_DFLT_ON
ANSI_NULL_DFLT_OFF ANSI_PADDING ANSI_WARNINGS ANSI_DEFAULTS CURSOR_CLOSE_ON_COMMIT QUOTED_IDENTIFIER NOCOUNT XACT_ABORT
IMPLICIT_TRANSACTIONS NUMERIC_ROUNDABORT FMTONLY NOEXEC PARSEONLY STATISTICS FORCEPLAN""".split())


def _expect_word(toks, i, *words):
    if i >= len(toks) or not toks[i].is_word(*words):
        raise syntax_error(toks[i].text if i < len(toks) else (toks[-1].text if toks else ""))
    return i + 1


def _table_name(toks, i, ctx):
    """Parse [db.][schema.]table -> ((schema, table), next)."""
    parts = []
    while True:
        if i >= len(toks) or toks[i].kind not in ("ident", "word") or (
                toks[i].kind == "word" and toks[i].up in KEYWORDS):
            raise syntax_error(toks[i].text if i < len(toks) else toks[-1].text)
        parts.append(toks[i].value)
        i += 1
        if i < len(toks) and toks[i].is_op("."):
            i += 1
            continue
        break
    if len(parts) == 3:
        if parts[0].lower() != ctx.database.lower():
            raise TsqlError(2702 if False else 208, "Invalid object name '%s'." % ".".join(parts))
        parts = parts[1:]
    if len(parts) == 1:
        parts = ["dbo"] + parts
    if len(parts) != 2:
        raise syntax_error(".".join(parts))
    for p in parts:
        if len(p) > 128:
            raise TsqlError(103, "The identifier that starts with '%s' is too long. Maximum length is 128." % p[:128],
                            cls=15, state=4)
    return (parts[0], parts[1]), i


def parse_statement(toks, text, ctx):
    """One statement's tokens -> Stmt (raises TsqlError)."""
    source = text[toks[0].pos:toks[-1].end]
    first = toks[0]
    if first.kind != "word":
        raise syntax_error(first.text)
    up = first.up
    n = len(toks)
    if up == "WITH" and n > 1 and toks[1].is_word("CHANGE_TRACKING_CONTEXT"):
        return _parse_ct_context(toks, text, ctx)
    if up in ("SELECT", "WITH"):
        for t in toks:
            if t.is_word("INTO"):
                raise syntax_error("INTO", "SELECT ... INTO is not supported")
        tr = ExprTranslator(toks, ctx)
        return Stmt("query", source, pg=tr.tr(0, n), aliases=tr.aliases, cmd=0xC1)
    if up == "INSERT":
        i = 1
        if i < n and toks[i].is_word("INTO"):
            i += 1
        name, j = _table_name(toks, i, ctx)
        toks, output = _take_output(toks, j, ("VALUES", "SELECT", "DEFAULT"))
        n = len(toks)
        for t in toks:
            if t.is_word("OUTPUT", "EXEC", "EXECUTE"):
                raise syntax_error(t.text, "INSERT ... %s is not supported" % t.up)
        tr = ExprTranslator(toks, ctx)
        body = tr.tr(j, n)
        target = qi(name[0]) + "." + qi(name[1])
        stmt = Stmt("query", source, pg="INSERT INTO %s %s" % (target, body), aliases=tr.aliases, cmd=0xC3,
                    table=name)
        at = _depth0(toks[j:], "SELECT", "FROM")
        if "FROM" in at and "SELECT" in at and at["FROM"] + 2 < n - j and toks[j + at["FROM"] + 1].is_op("(") and \
                toks[j + at["FROM"] + 2].is_word("VALUES"):
            # INSERT ... SELECT ... FROM (VALUES ...) AS v ... (e.g. WHERE NOT EXISTS (a seek of the target per
            # row)): planned as the UPDATE ... FROM (server.py, Session._run)
            stmt.seek_join = True
        return _with_output(stmt, output, None)
    if up == "UPDATE":
        name, j = _table_name(toks, 1, ctx)
        toks, output = _take_output(toks, j, ("FROM", "WHERE"))
        n = len(toks)
        for t in toks:
            if t.is_word("OUTPUT"):
                raise syntax_error(t.text, "UPDATE ... %s is not supported" % t.up)
        at = _depth0(toks, "FROM", "WHERE")
        if "FROM" in at:
            stmt, qualifier = _parse_update_from(toks, source, ctx, j, at)
            return _with_output(stmt, output, qualifier)
        for t in toks:
            if t.is_word("FROM"):
                raise syntax_error(t.text, "UPDATE ... FROM is supported only as UPDATE alias SET ... FROM table "
                                           "AS alias JOIN source ON ...")
        tr = ExprTranslator(toks, ctx)
        return _with_output(Stmt("query", source, pg=tr.tr(0, n), aliases=tr.aliases, cmd=0xC5), output, None)
    if up == "DELETE":
        i = 1
        if i < n and toks[i].is_word("FROM"):
            i += 1
        name, j = _table_name(toks, i, ctx)
        for t in toks[j:]:
            if t.is_word("OUTPUT", "FROM", "TOP"):
                raise syntax_error(t.text, "DELETE ... %s is not supported" % t.up)
        tr = ExprTranslator(toks, ctx)
        return Stmt("query", source, pg="DELETE FROM " + tr.tr(i, n), aliases=tr.aliases, cmd=0xC4)
    if up == "TRUNCATE":
        i = _expect_word(toks, 1, "TABLE")
        name, j = _table_name(toks, i, ctx)
        if j != n:
            raise syntax_error(toks[j].text)
        return Stmt("truncate", source, table=name)
    if up == "SET":
        return _parse_set(toks, source, ctx)
    if up == "USE":
        if n != 2 or toks[1].kind not in ("word", "ident"):
            raise syntax_error(toks[-1].text)
        return Stmt("use", source, database=toks[1].value)
    if up == "BEGIN":
        if n >= 2 and toks[1].is_word("TRAN", "TRANSACTION") and n <= 3:
            return Stmt("begin", source)
        raise syntax_error(toks[1].text if n > 1 else "BEGIN", "only BEGIN TRAN[SACTION] is supported")
    if up in ("COMMIT", "ROLLBACK"):
        if n == 1 or (toks[1].is_word("TRAN", "TRANSACTION", "WORK") and n == 2):
            return Stmt(up.lower(), source)
        raise syntax_error(toks[-1].text, "named transactions / savepoints are not supported")
    if up == "WAITFOR":
        if n == 3 and toks[1].is_word("DELAY") and toks[2].kind == "str":
            m = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?", toks[2].value.strip())
            if not m:
                raise TsqlError(148, "Incorrect time syntax in time string '%s' used with WAITFOR." % toks[2].value)
            secs = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3) or 0) + int(
                (m.group(4) or "0").ljust(3, "0")) / 1000.0
            return Stmt("waitfor", source, seconds=secs)
        raise syntax_error(toks[1].text if n > 1 else "WAITFOR", "only WAITFOR DELAY 'hh:mm:ss' is supported")
    if up == "KILL":
        if n == 2 and toks[1].kind == "num" and toks[1].text.isdigit():
            return Stmt("kill", source, spid=int(toks[1].text))
        raise syntax_error(toks[-1].text)
    if up == "CREATE":
        if n > 1 and toks[1].is_word("TABLE"):
            return _parse_create_table(toks, source, ctx)
        if n == 3 and toks[1].is_word("SCHEMA") and toks[2].kind in ("word", "ident"):
            return Stmt("create_schema", source, name=toks[2].value)
        return _parse_create_index(toks, source, ctx)
    if up == "DROP":
        if n > 1 and toks[1].is_word("TABLE"):
            i = 2
            if_exists = False
            if i + 1 < n and toks[i].is_word("IF") and toks[i + 1].is_word("EXISTS"):
                if_exists = True
                i += 2
            names = []
            while True:
                name, i = _table_name(toks, i, ctx)
                names.append(name)
                if i < n and toks[i].is_op(","):
                    i += 1
                    continue
                break
            if i != n:
                raise syntax_error(toks[i].text)
            return Stmt("drop_table", source, names=names, if_exists=if_exists)
        raise syntax_error(toks[1].text if n > 1 else "DROP", "only DROP TABLE is supported")
    if up == "ALTER":
        return _parse_alter(toks, source, ctx)
    raise syntax_error(first.text, "statement not supported")


def _parse_ct_context(toks, text, ctx):
    """WITH CHANGE_TRACKING_CONTEXT ( context ) INSERT | UPDATE | DELETE ...: the DML's Stmt with ``ct_context``,
    the PostgreSQL expression of the context (a constant or a variable; varbinary(128), never NULL)."""
    n = len(toks)
    if not (n > 3 and toks[2].is_op("(")):
        raise syntax_error(toks[min(2, n - 1)].text)
    depth, j = 0, 2
    while j < n:
        if toks[j].is_op("("):
            depth += 1
        elif toks[j].is_op(")"):
            depth -= 1
            if depth == 0:
                break
        j += 1
    if j >= n - 1 or j == 3 or not toks[j + 1].is_word("INSERT", "UPDATE", "DELETE"):
        raise syntax_error(toks[min(j + 1, n - 1)].text if j < n else toks[-1].text)
    if toks[3].is_word("NULL") and j == 4:
        raise TsqlError(50000, "tds_emulator: the WITH CHANGE_TRACKING_CONTEXT context cannot be NULL")
    tr = ExprTranslator(toks, ctx)
    value = "CAST(%s AS bytea)" % tr.tr(3, j)
    stmt = parse_statement(toks[j + 1:], text, ctx)
    stmt.ct_context = value
    stmt.source = text[toks[0].pos:toks[-1].end]
    return stmt


def _depth0(toks, *words):
    """{word: index of its first occurrence at parenthesis depth 0} for the given keywords."""
    out = {}
    depth = 0
    for i, t in enumerate(toks):
        if t.kind == "op":
            if t.text == "(":
                depth += 1
            elif t.text == ")":
                depth -= 1
        elif depth == 0 and t.kind == "word" and t.up in words and t.up not in out:
            out[t.up] = i
    return out


def _closing(toks, i):
    """Index of the ')' matching the '(' at toks[i]."""
    depth = 0
    for m in range(i, len(toks)):
        if toks[m].is_op("("):
            depth += 1
        elif toks[m].is_op(")"):
            depth -= 1
            if depth == 0:
                return m
    raise syntax_error("(")


def _alias(toks, i, end):
    """An optional ``[AS] alias`` at toks[i] -> (alias or None, next index)."""
    if i < end and toks[i].is_word("AS"):
        i += 1
        if i >= end or toks[i].kind not in ("word", "ident") or (toks[i].kind == "word" and toks[i].up in KEYWORDS):
            raise syntax_error(toks[i].text if i < end else "AS")
        return toks[i].value, i + 1
    if i < end and (toks[i].kind == "ident" or (toks[i].kind == "word" and toks[i].up not in KEYWORDS)):
        return toks[i].value, i + 1
    return None, i


def _skip_hints(toks, i, end):
    """Table hints ``WITH (UPDLOCK, ...)`` at toks[i] are skipped (PostgreSQL locks what UPDATE writes)."""
    if i + 1 < end and toks[i].is_word("WITH") and toks[i + 1].is_op("("):
        m = i + 2
        while m < end and (toks[m].kind == "word" and toks[m].up in TABLE_HINTS or toks[m].is_op(",")):
            m += 1
        if m < end and toks[m].is_op(")") and m > i + 2:
            return m + 1
        raise syntax_error("(", "only table hints may follow WITH here")
    return i


def _parse_update_from(toks, source, ctx, j, at):
    """``UPDATE target SET col = expr, ... FROM table [AS] alias [INNER] JOIN source [AS] alias2 [(cols)] ON cond
    [WHERE cond]`` where ``target`` is the first table's alias (or its name when it has none) and ``source`` is a
    table or a derived table (``(VALUES ...)`` or ``(SELECT ...)``) -> PostgreSQL ``UPDATE table AS alias SET ...
    FROM source WHERE cond AND cond``. SQL Server's other forms (the target absent from FROM, outer joins, several
    joins) are refused: their semantics differ from PostgreSQL's UPDATE ... FROM."""
    n = len(toks)
    unsupported = "UPDATE ... FROM is supported only as UPDATE alias SET ... FROM table AS alias JOIN source ON ..."
    target_parts = [t.value for t in toks[1:j] if t.kind in ("word", "ident")]
    if j >= n or not toks[j].is_word("SET"):
        raise syntax_error(toks[min(j, n - 1)].text, unsupported)
    f = at["FROM"]
    w = at.get("WHERE", n)
    if w < f:
        raise syntax_error("WHERE")
    tr = ExprTranslator(toks, ctx)
    # FROM table [AS] alias [WITH (hints)]
    table, k = _table_name(toks, f + 1, ctx)
    alias, k = _alias(toks, k, w)
    k = _skip_hints(toks, k, w)
    if alias is not None:
        same = len(target_parts) == 1 and target_parts[0].lower() == alias.lower()
    else:
        same = tuple(p.lower() for p in _table_name(toks, 1, ctx)[0]) == tuple(p.lower() for p in table)
    if not same:
        raise syntax_error(toks[1].text, unsupported)
    if k < w and toks[k].is_word("INNER"):
        k += 1
    if not (k < w and toks[k].is_word("JOIN")):
        raise syntax_error(toks[k].text if k < w else "FROM", unsupported)
    k += 1
    if k < w and toks[k].is_op("("):
        close = _closing(toks, k)
        if close >= w or not toks[k + 1].is_word("VALUES", "SELECT"):
            raise syntax_error("(", unsupported)
        src = "(" + tr.tr(k + 1, close) + ")"
        k = close + 1
        src_alias, k = _alias(toks, k, w)
        if src_alias is None:
            raise syntax_error(toks[k].text if k < w else ")", "a derived table needs an alias")
        src += " AS " + qi(src_alias)
        if k < w and toks[k].is_op("("):
            close = _closing(toks, k)
            cols = toks[k + 1:close]
            names = [c.value for c in cols[0::2]]
            if not names or any(c.kind not in ("word", "ident") for c in cols[0::2]) or any(
                    not c.is_op(",") for c in cols[1::2]) or len(cols) % 2 == 0:
                raise syntax_error(toks[k + 1].text, "a column list is names separated by commas")
            src += " (" + ", ".join(qi(c) for c in names) + ")"
            k = close + 1
    else:
        name2, k = _table_name(toks, k, ctx)
        src = qi(name2[0]) + "." + qi(name2[1])
        src_alias, k = _alias(toks, k, w)
        if src_alias is not None:
            src += " AS " + qi(src_alias)
        k = _skip_hints(toks, k, w)
    if not (k < w and toks[k].is_word("ON")):
        raise syntax_error(toks[k].text if k < w else "JOIN", unsupported)
    extra = _depth0(toks[k + 1:w], "JOIN", "INNER", "LEFT", "RIGHT", "FULL", "CROSS", "OUTER", "APPLY")
    if extra:
        raise syntax_error(toks[k + 1 + min(extra.values())].text, unsupported)
    cond = "(" + tr.tr(k + 1, w) + ")"
    if w < n:
        cond += " AND (" + tr.tr(w + 1, n) + ")"
    # SET col = expr, ... (a column may be qualified by the target's alias or name: PostgreSQL wants it bare)
    sets = []
    start = j + 1
    depth = 0
    pieces = []
    for m in range(start, f):
        t = toks[m]
        if t.is_op("("):
            depth += 1
        elif t.is_op(")"):
            depth -= 1
        elif t.is_op(",") and depth == 0:
            pieces.append((start, m))
            start = m + 1
    pieces.append((start, f))
    target_low = [p.lower() for p in (target_parts if alias is not None else [table[0], table[1]])]
    for a, b in pieces:
        eq = next((m for m in range(a, b) if toks[m].is_op("=")), None)
        if eq is None or eq == a:
            raise syntax_error(toks[a].text if a < b else "SET")
        left = toks[a:eq]
        names = [t.value for t in left[0::2]]
        if any(t.kind not in ("word", "ident") or (t.kind == "word" and t.up in KEYWORDS) for t in left[0::2]) or any(
                not t.is_op(".") for t in left[1::2]) or len(left) % 2 == 0:
            raise syntax_error(left[0].text)
        qual = [p.lower() for p in names[:-1]]
        if qual and qual != target_low[-len(qual):]:
            raise syntax_error(".".join(names), "SET names a column of the target")
        sets.append("%s = %s" % (qi(names[-1]), tr.tr(eq + 1, b)))
    target = qi(table[0]) + "." + qi(table[1]) + ((" AS " + qi(alias)) if alias is not None else "")
    pg = "UPDATE %s SET %s FROM %s WHERE %s" % (target, ", ".join(sets), src, cond)
    return Stmt("query", source, pg=pg, aliases={}, cmd=0xC5, seek_join=True), qi(alias if alias is not None
                                                                                  else table[1])


def _take_output(toks, start, ends):
    """The OUTPUT clause of an INSERT or UPDATE (at parenthesis depth 0 after ``start``, up to one of the words
    ``ends``): ``OUTPUT inserted.col [[AS] alias], ...`` -> (the tokens without it, [(column, alias or None)]) or
    (toks, None) when there is none. ``inserted`` is the row as the statement left it (a rowversion column holds
    its new value, as in SQL Server, where OUTPUT reads the row after the change). Refused: ``deleted.`` (the
    values before an UPDATE: PostgreSQL's RETURNING cannot see them), ``inserted.*``, expressions, ``OUTPUT ...
    INTO``."""
    found = _depth0(toks[start:], "OUTPUT")
    if "OUTPUT" not in found:
        return toks, None
    at = start + found["OUTPUT"]
    n = len(toks)
    items = []
    m = at + 1
    while True:
        if m < n and toks[m].is_word("DELETED"):
            raise syntax_error(toks[m].text, "OUTPUT deleted.<column> is not supported")
        if not (m + 2 < n and toks[m].is_word("INSERTED") and toks[m + 1].is_op(".")):
            raise syntax_error(toks[m].text if m < n else "OUTPUT", "OUTPUT lists inserted.<column> items only")
        col = toks[m + 2]
        if col.is_op("*"):
            raise syntax_error("*", "OUTPUT inserted.* is not supported")
        if col.kind not in ("word", "ident"):
            raise syntax_error(col.text)
        m += 3
        alias = None
        if m < n and toks[m].is_word("AS"):
            m += 1
            if m >= n or toks[m].kind not in ("word", "ident", "str"):
                raise syntax_error(toks[m].text if m < n else "AS")
            alias = toks[m].value
            m += 1
        elif m < n and (toks[m].kind == "ident" or (toks[m].kind == "word" and toks[m].up not in KEYWORDS
                                                      and toks[m].up not in ends)):
            alias = toks[m].value
            m += 1
        items.append((col.value, alias))
        if m < n and toks[m].is_op(","):
            m += 1
            continue
        break
    if m < n and toks[m].is_word("INTO"):
        raise syntax_error("INTO", "OUTPUT ... INTO is not supported")
    if m < n and not toks[m].is_word(*ends):
        raise syntax_error(toks[m].text)
    return toks[:at] + toks[m:], items


def _with_output(stmt, output, qualifier):
    """The statement with its OUTPUT items as PostgreSQL's RETURNING (its rows come back as a result set: the
    row as the statement wrote it, after the rowversion trigger; the target's column names unless aliased)."""
    if output is None:
        return stmt
    cols = []
    for col, alias in output:
        ref = qi(col) if qualifier is None else qualifier + "." + qi(col)
        if alias is not None:
            stmt.aliases[pgname(alias)] = alias
            ref += " AS " + qi(alias)
        cols.append(ref)
    stmt.pg += " RETURNING " + ", ".join(cols)
    stmt.output = True
    return stmt


ISOLATION = {"READ COMMITTED": "READ COMMITTED", "READ UNCOMMITTED": "READ COMMITTED",
             "REPEATABLE READ": "REPEATABLE READ", "SNAPSHOT": "REPEATABLE READ", "SERIALIZABLE": "SERIALIZABLE"}


def _parse_set(toks, source, ctx):
    n = len(toks)
    if n < 2:
        raise syntax_error("SET")
    t = toks[1]
    if t.kind == "var":
        raise TsqlError(137, 'Must declare the scalar variable "%s".' % t.text, cls=15, state=2)
    if t.kind != "word":
        raise syntax_error(t.text)
    w = t.up
    if w == "TRANSACTION":
        i = _expect_word(toks, 2, "ISOLATION")
        i = _expect_word(toks, i, "LEVEL")
        level = " ".join(x.up or "" for x in toks[i:])
        if level not in ISOLATION:
            raise syntax_error(toks[i].text if i < n else "LEVEL")
        return Stmt("set", source, option="ISOLATION", value=ISOLATION[level])
    if w in ("TEXTSIZE", "LOCK_TIMEOUT", "ROWCOUNT"):
        if n == 3 and toks[2].kind == "num":
            val = int(toks[2].text)
        elif n == 4 and toks[2].is_op("-") and toks[3].kind == "num":
            val = -int(toks[3].text)
        else:
            raise syntax_error(toks[-1].text)
        if w == "ROWCOUNT" and val != 0:
            raise syntax_error("ROWCOUNT", "SET ROWCOUNT n is not supported")
        return Stmt("set", source, option=w, value=val)
    if w in ("DATEFORMAT", "LANGUAGE", "DEADLOCK_PRIORITY", "DATEFIRST"):
        if n == 3:
            return Stmt("set", source, option=w, value=toks[2].value)
        raise syntax_error(toks[-1].text)
    if w == "IDENTITY_INSERT":
        name, i = _table_name(toks, 2, ctx)
        if i == n - 1 and toks[i].is_word("ON", "OFF"):
            return Stmt("set", source, option=w, value=(name, toks[i].up == "ON"))
        raise syntax_error(toks[-1].text)
    # list of boolean options followed by ON/OFF
    opts = []
    i = 1
    while i < n:
        if toks[i].kind != "word" or toks[i].up not in BOOL_OPTIONS:
            raise syntax_error(toks[i].text, "SET option not supported")
        opts.append(toks[i].up)
        i += 1
        if i < n and toks[i].is_op(","):
            i += 1
            continue
        break
    if i != n - 1 or not toks[i].is_word("ON", "OFF"):
        raise syntax_error(toks[min(i, n - 1)].text)
    on = toks[i].up == "ON"
    if "IMPLICIT_TRANSACTIONS" in opts and on:
        raise syntax_error("IMPLICIT_TRANSACTIONS", "IMPLICIT_TRANSACTIONS ON is not supported")
    return Stmt("set", source, option="BOOL", value=(opts, on))


class ColumnDef:
    def __init__(self, name, ctype):
        self.name = name
        self.type = ctype
        self.nullable = None
        self.identity = None
        self.default = None  # PostgreSQL expression text
        self.default_src = None
        self.pk = False
        self.unique = False


class Constraint:
    def __init__(self, name, kind, columns):
        self.name = name
        self.kind = kind  # PRIMARY KEY | UNIQUE
        self.columns = columns


def _skip_clustered(toks, i):
    if i < len(toks) and toks[i].is_word("CLUSTERED", "NONCLUSTERED"):
        return i + 1
    return i


def _column_list(toks, i):
    if i >= len(toks) or not toks[i].is_op("("):
        raise syntax_error(toks[i].text if i < len(toks) else toks[-1].text)
    i += 1
    cols = []
    while True:
        t = toks[i]
        if t.kind not in ("ident", "word") or (t.kind == "word" and t.up in KEYWORDS):
            raise syntax_error(t.text)
        cols.append(t.value)
        i += 1
        if toks[i].is_word("ASC", "DESC"):
            i += 1
        if toks[i].is_op(","):
            i += 1
            continue
        if toks[i].is_op(")"):
            return cols, i + 1
        raise syntax_error(toks[i].text)


def _expr_end(toks, i, end):
    """End index of an expression starting at i (stops at ',' or ')' at depth 0, or a constraint keyword)."""
    depth = 0
    while i < end:
        t = toks[i]
        if t.is_op("("):
            depth += 1
        elif t.is_op(")"):
            if depth == 0:
                return i
            depth -= 1
        elif depth == 0 and (t.is_op(",") or t.is_word("NOT", "NULL", "PRIMARY", "UNIQUE", "CONSTRAINT", "IDENTITY",
                                                        "CHECK", "REFERENCES", "COLLATE")):
            return i
        i += 1
    return i


def _parse_column_def(toks, i, end, ctx):
    t = toks[i]
    if t.kind not in ("ident", "word") or (t.kind == "word" and t.up in KEYWORDS):
        raise syntax_error(t.text)
    if len(t.value) > 128:
        raise TsqlError(103, "The identifier that starts with '%s' is too long. Maximum length is 128." % t.value[:128],
                        cls=15, state=4)
    ctype, i = parse_type(toks, i + 1)
    col = ColumnDef(t.value, ctype)
    while i < end and not toks[i].is_op(","):
        w = toks[i]
        if w.is_word("NULL"):
            col.nullable = True
            i += 1
        elif w.is_word("NOT") and i + 1 < end and toks[i + 1].is_word("NULL"):
            col.nullable = False
            i += 2
        elif w.is_word("IDENTITY"):
            i += 1
            seed, inc = 1, 1
            if i < end and toks[i].is_op("("):
                nums = []
                i += 1
                while not toks[i].is_op(")"):
                    if toks[i].kind == "num":
                        nums.append(int(toks[i].text))
                    elif toks[i].is_op("-") and toks[i + 1].kind == "num":
                        nums.append(-int(toks[i + 1].text))
                        i += 1
                    elif not toks[i].is_op(","):
                        raise syntax_error(toks[i].text)
                    i += 1
                i += 1
                if len(nums) != 2:
                    raise syntax_error("IDENTITY")
                seed, inc = nums
            col.identity = (seed, inc)
        elif w.is_word("CONSTRAINT"):
            i += 2  # name of a column constraint (default or pk): not kept
        elif w.is_word("DEFAULT"):
            e = _expr_end(toks, i + 1, end)
            if e == i + 1:
                raise syntax_error("DEFAULT")
            tr = ExprTranslator(toks, ctx)
            col.default = tr.tr(i + 1, e)
            col.default_src = "(" + " ".join(x.text for x in toks[i + 1:e]) + ")"
            i = e
        elif w.is_word("PRIMARY"):
            i = _expect_word(toks, i + 1, "KEY")
            i = _skip_clustered(toks, i)
            col.pk = True
        elif w.is_word("UNIQUE"):
            i = _skip_clustered(toks, i + 1)
            col.unique = True
        elif w.is_word("COLLATE"):
            raise syntax_error("COLLATE", "column collations are not supported")
        else:
            raise syntax_error(w.text)
    return col, i


def _parse_create_table(toks, source, ctx):
    name, i = _table_name(toks, 2, ctx)
    n = len(toks)
    if i >= n or not toks[i].is_op("("):
        raise syntax_error(toks[min(i, n - 1)].text)
    if not toks[-1].is_op(")"):
        raise syntax_error(toks[-1].text)
    end = n - 1
    i += 1
    columns = []
    constraints = []
    while i < end:
        t = toks[i]
        if t.is_word("CONSTRAINT", "PRIMARY", "UNIQUE"):
            cname = None
            if t.is_word("CONSTRAINT"):
                cname = toks[i + 1].value
                i += 2
            if toks[i].is_word("PRIMARY"):
                i = _expect_word(toks, i + 1, "KEY")
                kind = "PRIMARY KEY"
            elif toks[i].is_word("UNIQUE"):
                i += 1
                kind = "UNIQUE"
            else:
                raise syntax_error(toks[i].text, "only PRIMARY KEY / UNIQUE constraints are supported")
            i = _skip_clustered(toks, i)
            cols, i = _column_list(toks, i)
            constraints.append(Constraint(cname, kind, cols))
        else:
            col, i = _parse_column_def(toks, i, end, ctx)
            columns.append(col)
        if i < end:
            if not toks[i].is_op(","):
                raise syntax_error(toks[i].text)
            i += 1
    if not columns:
        raise syntax_error(")")
    return Stmt("create_table", source, table=name, columns=columns, constraints=constraints)


def _parse_create_index(toks, source, ctx):
    n = len(toks)
    i = 1
    unique = False
    if i < n and toks[i].is_word("UNIQUE"):
        unique = True
        i += 1
    i = _skip_clustered(toks, i)
    i = _expect_word(toks, i, "INDEX")
    if i >= n or toks[i].kind not in ("ident", "word"):
        raise syntax_error(toks[min(i, n - 1)].text)
    index_name = toks[i].value
    i = _expect_word(toks, i + 1, "ON")
    table, i = _table_name(toks, i, ctx)
    cols, i = _column_list(toks, i)
    if i != n:
        raise syntax_error(toks[i].text, "index options are not supported")
    return Stmt("create_index", source, table=table, name=index_name, columns=cols, unique=unique)


_RETENTION_UNITS = {"DAYS": 1440, "HOURS": 60, "MINUTES": 1}


def _parse_alter_database(toks, source, ctx):
    """ALTER DATABASE {CURRENT | name} SET CHANGE_TRACKING = {ON [(CHANGE_RETENTION = n {DAYS | HOURS |
    MINUTES}, AUTO_CLEANUP = {ON | OFF})] | OFF} | SET ALLOW_SNAPSHOT_ISOLATION {ON | OFF}"""
    n = len(toks)
    words = [t.up if t.kind == "word" else t.text for t in toks]
    if n < 5 or words[3] != "SET":
        raise syntax_error(toks[min(3, n - 1)].text)
    if not (toks[2].is_word("CURRENT") or toks[2].value.lower() == ctx.database.lower()):
        raise TsqlError(5011, "User does not have permission to alter database '%s', the database does not exist, "
                              "or the database is not in a state that allows access checks." % toks[2].value,
                        cls=14)
    if words[4] == "ALLOW_SNAPSHOT_ISOLATION" and n == 6 and words[5] in ("ON", "OFF"):
        return Stmt("alter_database", source, option="ALLOW_SNAPSHOT_ISOLATION", value=words[5] == "ON")
    if words[4] != "CHANGE_TRACKING" or n < 7 or words[5] != "=" or words[6] not in ("ON", "OFF"):
        raise syntax_error(toks[min(4, n - 1)].text, "only CHANGE_TRACKING and ALLOW_SNAPSHOT_ISOLATION")
    if words[6] == "OFF":
        if n != 7:
            raise syntax_error(toks[7].text)
        return Stmt("alter_database", source, option="CHANGE_TRACKING", value=None)
    minutes, cleanup = 2 * 1440, True  # SQL Server's defaults: 2 days, auto cleanup on
    i = 7
    if i < n:
        if not (toks[i].is_op("(") and toks[-1].is_op(")")):
            raise syntax_error(toks[i].text)
        i += 1
        while i < n - 1:
            if words[i] == "CHANGE_RETENTION" and i + 3 < n and words[i + 1] == "=" and toks[i + 2].kind == "num" \
                    and words[i + 3] in _RETENTION_UNITS:
                minutes = int(toks[i + 2].text) * _RETENTION_UNITS[words[i + 3]]
                i += 4
            elif words[i] == "AUTO_CLEANUP" and i + 2 < n and words[i + 1] == "=" and words[i + 2] in ("ON", "OFF"):
                cleanup = words[i + 2] == "ON"
                i += 3
            else:
                raise syntax_error(toks[i].text)
            if i < n - 1:
                if not toks[i].is_op(","):
                    raise syntax_error(toks[i].text)
                i += 1
    return Stmt("alter_database", source, option="CHANGE_TRACKING", value=(minutes, cleanup))


def _parse_alter(toks, source, ctx):
    n = len(toks)
    if n > 1 and toks[1].is_word("DATABASE"):
        return _parse_alter_database(toks, source, ctx)
    i = _expect_word(toks, 1, "TABLE")
    table, i = _table_name(toks, i, ctx)
    if i + 1 < n and toks[i].is_word("ENABLE", "DISABLE") and toks[i + 1].value.upper() == "CHANGE_TRACKING":
        enable = toks[i].is_word("ENABLE")
        j = i + 2
        if enable and j < n:  # WITH (TRACK_COLUMNS_UPDATED = ON | OFF): accepted, SYS_CHANGE_COLUMNS stays NULL
            w = [t.text.upper() for t in toks[j:]]
            if w[:4] != ["WITH", "(", "TRACK_COLUMNS_UPDATED", "="] or len(w) != 6 or w[4] not in ("ON", "OFF") \
                    or w[5] != ")":
                raise syntax_error(toks[j].text)
            j = n
        if j != n:
            raise syntax_error(toks[j].text)
        return Stmt("ct_table", source, table=table, enable=enable)
    if i < n and toks[i].is_word("ADD"):
        i += 1
        cols = []
        while i < n:
            col, i = _parse_column_def(toks, i, n, ctx)
            cols.append(col)
            if i < n:
                if not toks[i].is_op(","):
                    raise syntax_error(toks[i].text)
                i += 1
        return Stmt("alter_add", source, table=table, columns=cols)
    if i + 1 < n and toks[i].is_word("DROP") and toks[i + 1].is_word("COLUMN"):
        i += 2
        names = []
        while i < n:
            names.append(toks[i].value)
            i += 1
            if i < n and toks[i].is_op(","):
                i += 1
        return Stmt("alter_drop", source, table=table, names=names)
    if i + 1 < n and toks[i].is_word("ALTER") and toks[i + 1].is_word("COLUMN"):
        col, j = _parse_column_def(toks, i + 2, n, ctx)
        if j != n or col.default is not None or col.identity or col.pk or col.unique:
            raise syntax_error(toks[min(j, n - 1)].text)
        return Stmt("alter_column", source, table=table, column=col)
    raise syntax_error(toks[i].text if i < n else "ALTER", "only ALTER TABLE ADD / DROP COLUMN / ALTER COLUMN")


def parse_batch(text, ctx):
    """A batch -> list of (Stmt or TsqlError). A syntax error stops the whole batch (SQL Server compiles
    the batch first), so it is returned alone."""
    toks = tokenize(text)
    if not toks:
        return []
    return [(stoks, text) for stoks in split_statements(toks)]

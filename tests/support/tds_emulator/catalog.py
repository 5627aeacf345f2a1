"""DDL on the backing PostgreSQL database, the emulator's catalog, and PostgreSQL -> SQL Server errors."""

import datetime
import re

from psycopg import sql

from .protocol import SqlType
from .translate import TsqlError, pgname, syntax_error

# system_type_id and catalog figures per SQL Server type
SYSTEM_TYPE_IDS = {
    "tinyint": 48, "smallint": 52, "int": 56, "bigint": 127, "bit": 104, "decimal": 106, "numeric": 108,
    "money": 60, "smallmoney": 122, "float": 62, "real": 59, "date": 40, "time": 41, "datetime": 61,
    "smalldatetime": 58, "datetime2": 42, "datetimeoffset": 43, "char": 175, "varchar": 167, "nchar": 239,
    "nvarchar": 231, "binary": 173, "varbinary": 165, "timestamp": 189, "uniqueidentifier": 36,
}
_FIXED = {"tinyint": (1, 3, 0), "smallint": (2, 5, 0), "int": (4, 10, 0), "bigint": (8, 19, 0), "bit": (1, 1, 0),
          "money": (8, 19, 4), "smallmoney": (4, 10, 4), "real": (4, 24, 0), "date": (3, 10, 0),
          "datetime": (8, 23, 3), "smalldatetime": (4, 16, 0), "timestamp": (8, 0, 0),
          "uniqueidentifier": (16, 0, 0)}


def catalog_figures(ct):
    """dict of the tds_meta.columns catalog figures for a translate.ColumnType."""
    n = ct.name
    f = {"system_type_id": SYSTEM_TYPE_IDS[n], "is_precision": None, "is_radix": None, "is_scale": None,
         "is_dt_precision": None, "is_char_len": None, "is_octet_len": None}
    if n in _FIXED:
        ml, p, s = _FIXED[n]
        f.update(max_length=ml, num_precision=p, num_scale=s)
    elif n in ("decimal", "numeric"):
        p = ct.precision
        f.update(max_length=5 if p <= 9 else 9 if p <= 19 else 13 if p <= 28 else 17, num_precision=p,
                 num_scale=ct.scale)
    elif n == "float":
        f.update(max_length=8 if ct.precision > 24 else 4, num_precision=ct.precision, num_scale=0)
    elif n in ("time", "datetime2", "datetimeoffset"):
        s = ct.scale
        base = {"time": 8, "datetime2": 19, "datetimeoffset": 26}[n]
        tl = 3 if s <= 2 else 4 if s <= 4 else 5
        extra = {"time": 0, "datetime2": 3, "datetimeoffset": 5}[n]
        f.update(max_length=tl + extra, num_precision=base + (s + 1 if s else 0), num_scale=s)
    elif n in ("char", "varchar", "binary", "varbinary"):
        f.update(max_length=ct.length, num_precision=0, num_scale=0)
    elif n in ("nchar", "nvarchar"):
        f.update(max_length=-1 if ct.length == -1 else ct.length * 2, num_precision=0, num_scale=0)
    # INFORMATION_SCHEMA.COLUMNS
    if n in ("tinyint", "smallint", "int", "bigint", "decimal", "numeric", "money", "smallmoney"):
        f.update(is_precision=f["num_precision"], is_radix=10, is_scale=f["num_scale"])
    elif n in ("float", "real"):
        f.update(is_precision=53 if n == "float" and ct.precision > 24 else 24, is_radix=2)
    elif n in ("date", "smalldatetime"):
        f.update(is_dt_precision=0)
    elif n == "datetime":
        f.update(is_dt_precision=3)
    elif n in ("time", "datetime2", "datetimeoffset"):
        f.update(is_dt_precision=ct.scale)
    elif n in ("char", "varchar", "binary", "varbinary"):
        f.update(is_char_len=ct.length, is_octet_len=ct.length)
    elif n in ("nchar", "nvarchar"):
        f.update(is_char_len=ct.length, is_octet_len=-1 if ct.length == -1 else ct.length * 2)
    return f


def _fmt(q, *args):
    return sql.SQL(q).format(*args)


class Catalog:
    """Catalog operations on one session's PostgreSQL connection (inside the statement's transaction)."""

    def __init__(self, conn, database):
        self.conn = conn
        self.database = database

    def q(self, query, params=None):
        return self.conn.execute(query, params)

    def schema(self, name, must=True):
        row = self.q("SELECT schema_id, pg_name FROM tds_meta.schemas WHERE lower(name) = lower(%s)",
                     (name,)).fetchone()
        if row is None and must:
            raise TsqlError(2760, 'The specified schema name "%s" either does not exist or you do not have permission '
                                  'to use it.' % name)
        return row

    def table(self, schema, name):
        """(object_id, pg_schema, pg_table, name) or None."""
        return self.q(
            "SELECT t.object_id, s.pg_name, t.pg_name, t.name FROM tds_meta.tables t JOIN tds_meta.schemas s"
            " USING (schema_id) WHERE lower(s.name) = lower(%s) AND lower(t.name) = lower(%s)",
            (schema, name)).fetchone()

    def create_schema(self, name):
        if len(name) > 128:
            raise TsqlError(103, "The identifier that starts with '%s' is too long. Maximum length is 128."
                            % name[:128])
        if self.schema(name, must=False):
            raise TsqlError(2714, "There is already an object named '%s' in the database." % name)
        pg = pgname(name)
        self.q(_fmt("CREATE SCHEMA {}", sql.Identifier(pg)))
        self.q("INSERT INTO tds_meta.schemas SELECT coalesce(max(schema_id), 4) + 1, %s, %s FROM tds_meta.schemas"
               " WHERE schema_id > 4", (name, pg))

    def _column_sql(self, col, object_id, checks, is_alter=False):
        ct = col.type
        parts = [sql.Identifier(pgname(col.name)), sql.SQL(ct.pg())]
        nullable = col.nullable
        if ct.name == "timestamp":
            if col.default is not None or col.identity:
                raise TsqlError(1755, "Defaults cannot be created on columns of data type timestamp. Table '%s', "
                                      "column '%s'." % ("", col.name))
            nullable = False if nullable is None else nullable
        if col.identity:
            if ct.name not in ("tinyint", "smallint", "int", "bigint", "decimal", "numeric"):
                raise TsqlError(2749, "Identity column '%s' must be of data type int, bigint, smallint, tinyint, or "
                                      "decimal or numeric with a scale of 0, and constrained to be nonnullable."
                                % col.name)
            seed, inc = col.identity
            parts.append(sql.SQL("GENERATED ALWAYS AS IDENTITY (START WITH {} INCREMENT BY {})").format(
                sql.Literal(seed), sql.Literal(inc)))
            nullable = False
        if col.pk:
            nullable = False
        if nullable is None:
            nullable = True  # ANSI_NULL_DFLT_ON (pymssql sets it)
        if not nullable and not is_alter:
            parts.append(sql.SQL("NOT NULL"))
        elif not nullable and is_alter:
            parts.append(sql.SQL("NOT NULL"))
        if col.default is not None:
            parts.append(sql.SQL("DEFAULT " + col.default))
        cid = sql.Identifier(pgname(col.name))
        if ct.name == "tinyint":
            checks.append(sql.SQL("CHECK ({} BETWEEN 0 AND 255)").format(cid))
        elif ct.name == "bit":
            checks.append(sql.SQL("CHECK ({} IN (0, 1))").format(cid))
        elif ct.name in ("binary", "varbinary") and ct.length != -1:
            checks.append(sql.SQL("CONSTRAINT {} CHECK (octet_length({}) <= {})").format(
                sql.Identifier("tds_len_%d_%s" % (object_id, pgname(col.name)[:40])), cid, sql.Literal(ct.length)))
        col.nullable = nullable
        return sql.SQL(" ").join(parts)

    def _insert_column(self, object_id, column_id, col, relid):
        ct = col.type
        attnum = self.q("SELECT attnum FROM pg_attribute WHERE attrelid = %s AND attname = %s",
                        (relid, pgname(col.name))).fetchone()[0]
        f = catalog_figures(ct)
        self.q(
            "INSERT INTO tds_meta.columns (object_id, column_id, name, pg_name, attnum, type_name, length, precision,"
            " scale, is_nullable, is_identity, default_text, max_length, system_type_id, num_precision, num_scale,"
            " is_precision, is_radix, is_scale, is_dt_precision, is_char_len, is_octet_len) VALUES"
            " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (object_id, column_id, col.name, pgname(col.name), attnum, ct.name, ct.length, ct.precision, ct.scale,
             col.nullable, bool(col.identity), col.default_src, f["max_length"], f["system_type_id"],
             f["num_precision"], f["num_scale"], f["is_precision"], f["is_radix"], f["is_scale"],
             f["is_dt_precision"], f["is_char_len"], f["is_octet_len"]))

    def _trigger(self, object_id, pg_schema, pg_table):
        rows = self.q("SELECT pg_name, type_name FROM tds_meta.columns WHERE object_id = %s AND type_name IN"
                      " ('timestamp', 'datetimeoffset', 'smalldatetime') ORDER BY column_id", (object_id,)).fetchall()
        fn = sql.Identifier("tds_meta", "row_%d" % object_id)
        tbl = sql.Identifier(pg_schema, pg_table)
        self.q(_fmt("DROP TRIGGER IF EXISTS tds_row ON {}", tbl))
        if not rows:
            self.q(_fmt("DROP FUNCTION IF EXISTS {}()", fn))
            return
        body = []
        for pg, tname in rows:
            ident = sql.Identifier(pg).as_string(self.conn)
            if tname == "timestamp":
                body.append(
                    "IF TG_OP = 'INSERT' AND NEW.%(c)s IS NOT NULL THEN RAISE EXCEPTION 'Cannot insert an explicit "
                    "value into a timestamp column. Use INSERT with a column list to exclude the timestamp column, or "
                    "insert a DEFAULT into the timestamp column.' USING ERRCODE = 'TS273'; END IF;\n"
                    "IF TG_OP = 'UPDATE' AND OLD.%(c)s IS NOT NULL AND NEW.%(c)s IS DISTINCT FROM OLD.%(c)s THEN "
                    "RAISE EXCEPTION 'Cannot update a timestamp column.' USING ERRCODE = 'TS272'; END IF;\n"
                    "NEW.%(c)s := tds_meta.next_rv();" % {"c": ident})
            elif tname == "smalldatetime":  # stored rounded to the minute, as SQL Server does
                body.append("NEW.%(c)s := date_trunc('minute', NEW.%(c)s + interval '30 seconds');" % {"c": ident})
            else:
                body.append("NEW.%(c)s := tds_meta.dto_norm(NEW.%(c)s);" % {"c": ident})
        code = "BEGIN\n%s\nRETURN NEW;\nEND" % "\n".join(body)
        self.q(_fmt("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}", fn, sql.Literal(code)))
        self.q(_fmt("CREATE TRIGGER tds_row BEFORE INSERT OR UPDATE ON {} FOR EACH ROW EXECUTE FUNCTION {}()",
                    tbl, fn))

    def create_table(self, stmt):
        schema, name = stmt.table
        sch = self.schema(schema)
        if self.table(schema, name):
            raise TsqlError(2714, "There is already an object named '%s' in the database." % name)
        object_id = self.q("SELECT nextval('tds_meta.object_ids')").fetchone()[0]
        seen = set()
        rv = 0
        for c in stmt.columns:
            if c.name.lower() in seen:
                raise TsqlError(2705, "Column names in each table must be unique. Column name '%s' in table '%s' is "
                                      "specified more than once." % (c.name, name))
            seen.add(c.name.lower())
            rv += c.type.name == "timestamp"
        if rv > 1:
            raise TsqlError(2738, "A table can only have one timestamp column. Because table '%s' already has one, "
                                  "the column '%s' cannot be added." % (name, stmt.columns[-1].name))
        constraints = list(stmt.constraints)
        for c in stmt.columns:
            if c.pk:
                constraints.append(_Con(None, "PRIMARY KEY", [c.name]))
            if c.unique:
                constraints.append(_Con(None, "UNIQUE", [c.name]))
        if sum(1 for k in constraints if k.kind == "PRIMARY KEY") > 1:
            raise TsqlError(8110, "Cannot add multiple PRIMARY KEY constraints to table '%s'." % name)
        for k in constraints:
            if k.kind == "PRIMARY KEY":
                keyset = {x.lower() for x in k.columns}
                for c in stmt.columns:
                    if c.name.lower() in keyset:
                        if c.nullable is True:
                            raise TsqlError(8111, "Cannot define PRIMARY KEY constraint on nullable column in table "
                                                  "'%s'." % name)
                        c.nullable = False
        checks = []
        items = [self._column_sql(c, object_id, checks) for c in stmt.columns]
        con_rows = []
        for idx, k in enumerate(constraints):
            for cn in k.columns:
                if cn.lower() not in seen:
                    raise TsqlError(1911, "Column name '%s' does not exist in the target table or view." % cn)
            kname = k.name or "%s__%s__%016X" % ("PK" if k.kind == "PRIMARY KEY" else "UQ", name[:8],
                                                 (object_id * 2654435761) & 0xFFFFFFFFFFFFFFFF)
            pg_con = "tds_c%d_%d" % (object_id, idx)
            items.append(sql.SQL("CONSTRAINT {} {} ({})").format(
                sql.Identifier(pg_con), sql.SQL(k.kind),
                sql.SQL(", ").join(sql.Identifier(pgname(c)) for c in k.columns)))
            con_rows.append((kname, pg_con, k.kind, [self._orig(stmt.columns, c) for c in k.columns]))
        items.extend(checks)
        pg_schema = sch[1]
        pg_table = pgname(name)
        self.q(_fmt("CREATE TABLE {} ({})", sql.Identifier(pg_schema, pg_table), sql.SQL(", ").join(items)))
        relid = self.q("SELECT %s::regclass::oid", (sql.Identifier(pg_schema, pg_table).as_string(self.conn),)
                       ).fetchone()[0]
        self.q("INSERT INTO tds_meta.tables (object_id, schema_id, name, pg_name, relid) VALUES (%s, %s, %s, %s, %s)",
               (object_id, sch[0], name, pg_table, relid))
        for i, c in enumerate(stmt.columns, 1):
            self._insert_column(object_id, i, c, relid)
        for kname, pg_con, kind, cols in con_rows:
            self.q("INSERT INTO tds_meta.constraints VALUES (%s, %s, %s, %s, %s)",
                   (object_id, kname, pg_con, kind, cols))
            self.database.constraint_names[pg_con] = (kname, kind, schema if sch is None else self._schema_name(sch[0]),
                                                      name)
        self._trigger(object_id, pg_schema, pg_table)

    def _schema_name(self, schema_id):
        return self.q("SELECT name FROM tds_meta.schemas WHERE schema_id = %s", (schema_id,)).fetchone()[0]

    @staticmethod
    def _orig(columns, name):
        for c in columns:
            if c.name.lower() == name.lower():
                return c.name
        return name

    def _must_table(self, table):
        row = self.table(*table)
        if row is None:
            raise TsqlError(4902, "Cannot find the object \"%s\" because it does not exist or you do not have "
                                  "permissions." % table[1])
        return row

    def drop_table(self, stmt):
        for schema, name in stmt.names:
            row = self.table(schema, name)
            if row is None:
                if stmt.if_exists:
                    continue
                raise TsqlError(3701, "Cannot drop the table '%s', because it does not exist or you do not have "
                                      "permission." % name)
            object_id, pg_schema, pg_table, _ = row
            self.q(_fmt("DROP TABLE {}", sql.Identifier(pg_schema, pg_table)))
            self.q(_fmt("DROP FUNCTION IF EXISTS {}()", sql.Identifier("tds_meta", "row_%d" % object_id)))
            self.q("DELETE FROM tds_meta.tables WHERE object_id = %s", (object_id,))

    def alter_add(self, stmt):
        object_id, pg_schema, pg_table, name = self._must_table(stmt.table)
        existing = {r[0].lower(): r[1] for r in self.q(
            "SELECT name, type_name FROM tds_meta.columns WHERE object_id = %s", (object_id,)).fetchall()}
        next_id = self.q("SELECT coalesce(max(column_id), 0) + 1 FROM tds_meta.columns WHERE object_id = %s",
                         (object_id,)).fetchone()[0]
        relid = self.q("SELECT relid FROM tds_meta.tables WHERE object_id = %s", (object_id,)).fetchone()[0]
        has_rv = "timestamp" in existing.values()
        for c in stmt.columns:
            if c.name.lower() in existing:
                raise TsqlError(2705, "Column names in each table must be unique. Column name '%s' in table '%s' is "
                                      "specified more than once." % (c.name, name))
            if c.type.name == "timestamp" and has_rv:
                raise TsqlError(2738, "A table can only have one timestamp column. Because table '%s' already has "
                                      "one, the column '%s' cannot be added." % (name, c.name))
            if c.pk or c.unique:
                raise TsqlError(102, "Incorrect syntax near 'PRIMARY'. (tds_emulator: constraints in ALTER TABLE ADD "
                                     "are not supported)")
            checks = []
            col_sql = self._column_sql(c, object_id, checks, is_alter=True)
            tbl = sql.Identifier(pg_schema, pg_table)
            if c.type.name == "timestamp":
                # existing rows get values, like SQL Server: add nullable, fill through the trigger, then NOT NULL
                self.q(_fmt("ALTER TABLE {} ADD COLUMN {} bytea", tbl, sql.Identifier(pgname(c.name))))
                existing[c.name.lower()] = "timestamp"
                self._insert_column(object_id, next_id, c, relid)
                self._trigger(object_id, pg_schema, pg_table)
                self.q(_fmt("UPDATE {} SET {} = NULL", tbl, sql.Identifier(pgname(c.name))))
                self.q(_fmt("ALTER TABLE {} ALTER COLUMN {} SET NOT NULL", tbl, sql.Identifier(pgname(c.name))))
                has_rv = True
            else:
                self.q(_fmt("ALTER TABLE {} ADD COLUMN {}", tbl, col_sql))
                for chk in checks:
                    self.q(_fmt("ALTER TABLE {} ADD {}", tbl, chk))
                self._insert_column(object_id, next_id, c, relid)
                existing[c.name.lower()] = c.type.name
                if c.type.name in ("datetimeoffset", "smalldatetime"):
                    self._trigger(object_id, pg_schema, pg_table)
            next_id += 1

    def alter_drop(self, stmt):
        object_id, pg_schema, pg_table, name = self._must_table(stmt.table)
        for cn in stmt.names:
            row = self.q("SELECT pg_name, column_id FROM tds_meta.columns WHERE object_id = %s AND lower(name) ="
                         " lower(%s)", (object_id, cn)).fetchone()
            if row is None:
                raise TsqlError(4924, "ALTER TABLE DROP COLUMN failed because column '%s' does not exist in table "
                                      "'%s'." % (cn, name))
            if self.q("SELECT 1 FROM tds_meta.constraints WHERE object_id = %s AND lower(%s) = ANY(SELECT lower(x) FROM"
                      " unnest(columns) x)", (object_id, cn)).fetchone():
                raise TsqlError(5074, "The object is dependent on column '%s'." % cn)
            self.q(_fmt("ALTER TABLE {} DROP COLUMN {}", sql.Identifier(pg_schema, pg_table), sql.Identifier(row[0])))
            self.q("DELETE FROM tds_meta.columns WHERE object_id = %s AND column_id = %s", (object_id, row[1]))
        self._trigger(object_id, pg_schema, pg_table)

    def alter_column(self, stmt):
        object_id, pg_schema, pg_table, name = self._must_table(stmt.table)
        c = stmt.column
        row = self.q("SELECT pg_name, column_id, type_name FROM tds_meta.columns WHERE object_id = %s AND lower(name)"
                     " = lower(%s)", (object_id, c.name)).fetchone()
        if row is None:
            raise TsqlError(4924, "ALTER TABLE ALTER COLUMN failed because column '%s' does not exist in table '%s'."
                            % (c.name, name))
        if row[2] == "timestamp" or c.type.name == "timestamp":
            raise TsqlError(4928, "Cannot alter column '%s' because it is 'timestamp'." % c.name)
        tbl = sql.Identifier(pg_schema, pg_table)
        col = sql.Identifier(row[0])
        self.q(_fmt("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING {}::{}", tbl, col, sql.SQL(c.type.pg()), col,
                    sql.SQL(c.type.cast_pg())))
        nullable = True if c.nullable is None else c.nullable
        self.q(_fmt("ALTER TABLE {} ALTER COLUMN {} {} NOT NULL", tbl, col, sql.SQL("DROP" if nullable else "SET")))
        c.nullable = nullable
        f = catalog_figures(c.type)
        self.q("UPDATE tds_meta.columns SET type_name = %s, length = %s, precision = %s, scale = %s, is_nullable = %s,"
               " max_length = %s, system_type_id = %s, num_precision = %s, num_scale = %s, is_precision = %s,"
               " is_radix = %s, is_scale = %s, is_dt_precision = %s, is_char_len = %s, is_octet_len = %s"
               " WHERE object_id = %s AND column_id = %s",
               (c.type.name, c.type.length, c.type.precision, c.type.scale, nullable, f["max_length"],
                f["system_type_id"], f["num_precision"], f["num_scale"], f["is_precision"], f["is_radix"],
                f["is_scale"], f["is_dt_precision"], f["is_char_len"], f["is_octet_len"], object_id, row[1]))
        self._trigger(object_id, pg_schema, pg_table)

    def create_index(self, stmt):
        object_id, pg_schema, pg_table, name = self._must_table(stmt.table)
        self.q(_fmt("CREATE {} INDEX ON {} ({})", sql.SQL("UNIQUE" if stmt.unique else ""),
                    sql.Identifier(pg_schema, pg_table),
                    sql.SQL(", ").join(sql.Identifier(pgname(c)) for c in stmt.columns)))

    def truncate(self, stmt):
        object_id, pg_schema, pg_table, name = self._must_table(stmt.table)
        self.q(_fmt("TRUNCATE TABLE {}", sql.Identifier(pg_schema, pg_table)))
        # TRUNCATE is not tracked: SQL Server moves the table's minimum valid version up to the current one
        self.q("DELETE FROM tds_meta.ct_changes WHERE object_id = %s", (object_id,))
        self.q("UPDATE tds_meta.ct_tables SET min_valid = tds_meta.ct_current_version() WHERE object_id = %s",
               (object_id,))

    # change tracking ---------------------------------------------------------------------------
    def alter_database(self, stmt):
        if stmt.option == "CHANGE_TRACKING":
            on = self.q("SELECT 1 FROM tds_meta.ct_database").fetchone() is not None
            if stmt.value is None:
                if self.q("SELECT 1 FROM tds_meta.ct_tables LIMIT 1").fetchone():
                    raise TsqlError(22115, "Change tracking is enabled for one or more tables in database '%s'. "
                                           "Disable change tracking on each table before disabling it for the "
                                           "database. Use the sys.change_tracking_tables catalog view to obtain a "
                                           "list of tables for which change tracking is enabled." % self.db_name())
                self.q("DELETE FROM tds_meta.ct_database")
                return
            if on:
                raise TsqlError(5088, "Change tracking is already enabled for database '%s'." % self.db_name())
            minutes, cleanup = stmt.value
            self.q("INSERT INTO tds_meta.ct_database VALUES (1, %s, %s)", (minutes, cleanup))
        else:
            if stmt.value:
                self.q("INSERT INTO tds_meta.db_flags VALUES (%s) ON CONFLICT DO NOTHING", (stmt.option,))
            else:
                self.q("DELETE FROM tds_meta.db_flags WHERE name = %s", (stmt.option,))

    def db_name(self):
        return self.q("SELECT name FROM tds_meta.dbinfo").fetchone()[0]

    def ct_table(self, stmt):
        object_id, pg_schema, pg_table, name = self._must_table(stmt.table)
        tracked = self.q("SELECT 1 FROM tds_meta.ct_tables WHERE object_id = %s", (object_id,)).fetchone()
        tbl = sql.Identifier(pg_schema, pg_table)
        fn = sql.Identifier("tds_ct", pg_schema + "." + pg_table)
        if not stmt.enable:
            if not tracked:
                raise TsqlError(4998, "Change tracking is not enabled on table '%s'." % name)
            self.q(_fmt("DROP TRIGGER tds_ct ON {}", tbl))
            self.q(_fmt("DROP TRIGGER IF EXISTS tds_ct_ctx ON {}", tbl))
            self.q(_fmt("DROP FUNCTION {}(bigint)", fn))
            self.q("DELETE FROM tds_meta.ct_tables WHERE object_id = %s", (object_id,))
            return
        if self.q("SELECT 1 FROM tds_meta.ct_database").fetchone() is None:
            raise TsqlError(4997, "Cannot enable change tracking on table '%s'. Change tracking must be enabled on "
                                  "the database before it can be enabled on a table." % name)
        if tracked:
            raise TsqlError(4996, "Change tracking is already enabled for table '%s'." % name)
        row = self.q("SELECT columns FROM tds_meta.constraints WHERE object_id = %s AND kind = 'PRIMARY KEY'",
                     (object_id,)).fetchone()
        if row is None:
            raise TsqlError(4997, "Cannot enable change tracking on table '%s'. Change tracking requires a primary "
                                  "key on the table. Create a primary key on the table before enabling change "
                                  "tracking." % name)
        keys = [pgname(c) for c in row[0]]
        types = dict(self.q("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE"
                            " a.attrelid = %s::regclass AND a.attnum > 0", (tbl.as_string(self.conn),)).fetchall())
        out = [sql.SQL("sys_change_version bigint, sys_change_creation_version bigint, sys_change_operation text, "
                       "sys_change_columns bytea, sys_change_context bytea")]
        out += [sql.SQL("{} {}").format(sql.Identifier(k), sql.SQL(types[k])) for k in keys]
        body = sql.SQL(
            "SELECT c.version, c.creation_version, CASE WHEN c.deleted THEN 'D' WHEN c.creation_version >"
            " coalesce($1, -1) THEN 'I' ELSE 'U' END, NULL::bytea, c.context, {} FROM tds_meta.ct_changes c,"
            " jsonb_populate_record(NULL::{}, c.pk) r WHERE c.object_id = {} AND ($1 IS NULL OR c.version > $1)"
        ).format(sql.SQL(", ").join(sql.Identifier("r", k) for k in keys), tbl, sql.Literal(object_id))
        self.q(_fmt("CREATE FUNCTION {}(bigint) RETURNS TABLE ({}) LANGUAGE sql STABLE AS {}", fn,
                    sql.SQL(", ").join(out), sql.Literal(body.as_string(self.conn))))
        self.q("INSERT INTO tds_meta.ct_tables VALUES (%s, tds_meta.ct_current_version())", (object_id,))
        self.q(_fmt("CREATE CONSTRAINT TRIGGER tds_ct AFTER INSERT OR UPDATE OR DELETE ON {} DEFERRABLE INITIALLY"
                    " DEFERRED FOR EACH ROW EXECUTE FUNCTION tds_meta.ct_capture({})", tbl,
                    sql.SQL(", ").join(sql.Literal(str(x)) for x in [object_id] + keys)))
        # WITH CHANGE_TRACKING_CONTEXT: each key's context, recorded while a transaction uses one (schema.sql)
        self.q(_fmt("CREATE TRIGGER tds_ct_ctx AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW WHEN"
                    " (current_setting('tds.ct_ctx_on', true) = 'on') EXECUTE FUNCTION tds_meta.ct_context({})", tbl,
                    sql.SQL(", ").join(sql.Literal(str(x)) for x in [object_id] + keys)))

    def columns_of(self, relids):
        return self.q(
            "SELECT t.relid, c.attnum, c.name, c.pg_name, c.type_name, c.length, c.precision, c.scale, c.is_nullable"
            " FROM tds_meta.columns c JOIN tds_meta.tables t USING (object_id) WHERE t.relid = ANY(%s)",
            (list(relids),)).fetchall()

    def constraint(self, pg_con):
        return self.q(
            "SELECT k.name, k.kind, s.name, t.name FROM tds_meta.constraints k JOIN tds_meta.tables t USING (object_id)"
            " JOIN tds_meta.schemas s USING (schema_id) WHERE k.pg_name = %s", (pg_con,)).fetchone()


class _Con:
    def __init__(self, name, kind, columns):
        self.name = name
        self.kind = kind
        self.columns = columns


# ---------------------------------------------------------------------------------------------
# result column types

def sqltype_from_catalog(type_name, length, precision, scale):
    return SqlType(type_name, length, precision, scale)


_UTC = datetime.UTC
_TZ_CACHE = {}


def dto_from_text(s):
    """'YYYY-MM-DD HH:MI:SS.ffffffZ+HH:MM' (UTC instant) -> aware datetime in its own offset."""
    if s is None:
        return None
    utc = datetime.datetime.fromisoformat(s[:26])
    off = s[27:]
    minutes = int(off[1:3]) * 60 + int(off[4:6])
    if off[0] == "-":
        minutes = -minutes
    tz = _TZ_CACHE.get(minutes)
    if tz is None:
        tz = _TZ_CACHE[minutes] = datetime.timezone(datetime.timedelta(minutes=minutes))
    return (utc + datetime.timedelta(minutes=minutes)).replace(tzinfo=tz)


def sqltype_from_pg(col):
    """SqlType for a computed result column from its PostgreSQL type."""
    oid = col.type_code
    if oid == 16:
        return SqlType("bit")
    if oid == 21:
        return SqlType("smallint")
    if oid in (23, 26):
        return SqlType("int")
    if oid == 20:
        return SqlType("bigint")
    if oid == 700:
        return SqlType("real")
    if oid == 701:
        return SqlType("float", precision=53)
    if oid == 1700:
        if col.precision is not None:
            return SqlType("decimal", precision=col.precision, scale=col.scale or 0)
        return SqlType("decimal", precision=38, scale=None)  # scale decided from the values
    if oid in (25, 1043, 19, 705):
        n = col.display_size if oid == 1043 else None
        if oid == 19:
            n = 128
        return SqlType("nvarchar", n if n and n <= 4000 else -1)
    if oid == 1042:
        n = col.display_size or 1
        return SqlType("nchar", n) if n <= 4000 else SqlType("nvarchar", -1)
    if oid == 17:
        return SqlType("varbinary", -1)
    if oid == 1082:
        return SqlType("date")
    if oid == 1083:
        return SqlType("time", scale=7)
    if oid == 1114:
        if col.precision == 3:
            return SqlType("datetime")
        return SqlType("datetime2", scale=7)
    if oid == 1184:
        return SqlType("datetimeoffset", scale=7)
    if oid == 2950:
        return SqlType("uniqueidentifier")
    raise TsqlError(50000, "tds_emulator: a result column of PostgreSQL type oid %d has no SQL Server type" % oid)


# ---------------------------------------------------------------------------------------------
# errors

_DUP_RE = re.compile(r"\)=\((.*)\) already exists")


def pg_error(exc, lookup=None):
    """psycopg error -> TsqlError with SQL Server's number."""
    st = getattr(exc, "sqlstate", None) or ""
    diag = getattr(exc, "diag", None)
    msg = (diag.message_primary if diag is not None else None) or str(exc)
    if st.startswith("TS") and st[2:].isdigit():
        return TsqlError(int(st[2:]), msg)
    if st == "23505":
        dup = _DUP_RE.search(diag.message_detail or "")
        val = dup.group(1) if dup else "?"
        info = None
        if lookup is not None and diag.constraint_name:
            info = lookup(diag.constraint_name)
        if info:
            kname, kind, sname, tname = info
            what = "PRIMARY KEY" if kind == "PRIMARY KEY" else "UNIQUE KEY"
            return TsqlError(2627, "Violation of %s constraint '%s'. Cannot insert duplicate key in object '%s.%s'. "
                                   "The duplicate key value is (%s)." % (what, kname, sname, tname, val),
                             state=1, cls=14)
        return TsqlError(2601, "Cannot insert duplicate key row in object '%s' with unique index '%s'. The duplicate "
                               "key value is (%s)." % (diag.table_name, diag.constraint_name, val), cls=14)
    if st == "23502":
        return TsqlError(515, "Cannot insert the value NULL into column '%s', table '%s'; column does not allow nulls. "
                              "INSERT fails." % (diag.column_name, diag.table_name), state=2)
    if st == "23514":
        if (diag.constraint_name or "").startswith("tds_len"):
            return TsqlError(2628, "String or binary data would be truncated in table '%s', column '%s'."
                             % (diag.table_name, (diag.constraint_name or "").split("_", 3)[-1]))
        return TsqlError(547, "The statement conflicted with the CHECK constraint \"%s\". The conflict occurred in "
                              "table \"%s\"." % (diag.constraint_name, diag.table_name))
    if st == "22001":
        return TsqlError(2628, "String or binary data would be truncated. (%s)" % msg)
    if st == "42P01":
        m = re.search(r'relation "([^"]*)"', msg)
        return TsqlError(208, "Invalid object name '%s'." % (m.group(1) if m else msg))
    if st == "42703":
        m = re.search(r'column "([^"]*)"', msg)
        return TsqlError(207, "Invalid column name '%s'." % (m.group(1) if m else msg))
    if st == "42601":
        m = re.search(r'at or near "([^"]*)"', msg)
        return syntax_error(m.group(1) if m else "", msg)
    if st == "42P07":
        return TsqlError(2714, "There is already an object named in the database. (%s)" % msg)
    if st in ("42883", "42804", "42846"):
        return TsqlError(206, "Operand type clash: %s" % msg)
    if st in ("22P02", "22007"):
        return TsqlError(245, "Conversion failed: %s" % msg)
    if st == "22008":
        return TsqlError(242, "The conversion of a varchar data type to a datetime data type resulted in an "
                              "out-of-range value. (%s)" % msg)
    if st == "22003":
        return TsqlError(8115, "Arithmetic overflow error converting expression to data type. (%s)" % msg)
    if st == "22012":
        return TsqlError(8134, "Divide by zero error encountered.")
    if st == "40P01":
        return TsqlError(1205, "Transaction (Process ID) was deadlocked on lock resources with another process and "
                               "has been chosen as the deadlock victim. Rerun the transaction.", state=51, cls=13)
    if st == "40001":
        return TsqlError(3960, "Snapshot isolation transaction aborted due to update conflict. (%s)" % msg, cls=16,
                         state=2)
    if st == "55P03":
        return TsqlError(1222, "Lock request time out period exceeded.", state=51)
    if st == "428C9":
        return TsqlError(544, "Cannot insert explicit value for identity column in table '%s' when IDENTITY_INSERT is "
                              "set to OFF." % (diag.table_name or ""))
    if st == "25P02":
        return TsqlError(3930, "The current transaction cannot be committed and cannot support operations that write "
                               "to the log file. Roll back the transaction.")
    return TsqlError(50000, "tds_emulator: PostgreSQL error %s: %s" % (st, msg))

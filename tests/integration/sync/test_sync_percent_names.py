"""Names holding pymssql's placeholder syntax (``%s``, ``%d``, ``%%``, ``%(x)s``) beside a ``]`` and quotes, end to
end: real pymssql against SQL Server (the TDS emulator; a real server with BERQENAS_TEST_MSSQL_DSN), real
PostgreSQL. pymssql finds placeholders by a regular expression over the whole statement text, inside
bracket-quoted names too, so every statement with a name and a value is rendered by mssql.render instead."""

import pytest
from psycopg import sql

from .emu import sync

pytestmark = pytest.mark.sync

TABLE = "T%s %d%%%(x)s]'\""
KEY, RV = "k%s", "rv%d"
COLS = ("c%s", "d%d", "e%%", "f%(x)s", "g]'\"")


def _q(name):
    return "[" + name.replace("]", "]]") + "]"


def _create(db, change_tracking=False):
    cols = ", ".join("%s nvarchar(20) NULL" % _q(c) for c in COLS)
    db.execute("CREATE TABLE dbo.%s (%s int NOT NULL PRIMARY KEY, %s, %s rowversion NOT NULL)"
               % (_q(TABLE), _q(KEY), cols, _q(RV)))
    if change_tracking:
        db.execute("ALTER DATABASE CURRENT SET CHANGE_TRACKING = ON (CHANGE_RETENTION = 2 DAYS, AUTO_CLEANUP = ON)")
        db.execute("ALTER DATABASE CURRENT SET ALLOW_SNAPSHOT_ISOLATION ON")
        db.execute("ALTER TABLE dbo.%s ENABLE CHANGE_TRACKING" % _q(TABLE))
    # values holding the same syntax (rendered as N'..' literals, never scanned again)
    db.execute("INSERT INTO dbo.%s (%s, %s) VALUES %s" % (
        _q(TABLE), _q(KEY), ", ".join(_q(c) for c in COLS),
        ", ".join("(%d, %s)" % (k, ", ".join("N'%%s%d%s'" % (k, c[0]) for c in COLS)) for k in (1, 2, 3))))


def _target(tenant):
    with tenant.connect() as c:
        return c.execute(sql.SQL("SELECT {}, {} FROM {} ORDER BY 1").format(
            sql.Identifier(KEY), sql.SQL(", ").join(sql.Identifier(c) for c in COLS),
            sql.Identifier(tenant.name, TABLE))).fetchall()


def _row(k, tag=None):
    return tuple([k] + ["%%s%d%s" % (k, c[0]) if tag is None else tag for c in COLS])


@pytest.mark.parametrize("detection", ["pk_diff", "change_tracking"])
def test_percent_names_load_update_delete(mssql_db, pg_cluster, tenant, detection):
    _create(mssql_db, change_tracking=detection == "change_tracking")
    tables = [{"source": "[dbo].%s" % _q(TABLE), "delete_detection": detection}]
    r = sync(mssql_db, pg_cluster, tenant, tables)["tables"][0]
    assert r["inserted"] == 3
    assert _target(tenant) == [_row(1), _row(2), _row(3)]
    mssql_db.execute("UPDATE dbo.%s SET %s WHERE %s = 2" % (
        _q(TABLE), ", ".join("%s = N'u%%d%%s'" % _q(c) for c in COLS), _q(KEY)))
    mssql_db.execute("DELETE FROM dbo.%s WHERE %s = 3" % (_q(TABLE), _q(KEY)))
    r = sync(mssql_db, pg_cluster, tenant, tables)["tables"][0]
    assert (r["updated"], r["deleted"]) == (1, 1)
    assert _target(tenant) == [_row(1), _row(2, "u%d%s")]


def _source(db):
    return [tuple(r) for r in db.execute("SELECT %s, %s FROM dbo.%s ORDER BY 1" % (
        _q(KEY), ", ".join(_q(c) for c in COLS), _q(TABLE)))]


def test_percent_names_both_ways(mssql_db, pg_cluster, tenant):
    """direction both: the reverse writer's statements (keys, UPDATE .. FROM (VALUES ..), inserts, deletes,
    rowversions read back) with the same names, and the forward read after them."""
    _create(mssql_db)
    tables = [{"source": "[dbo].%s" % _q(TABLE), "direction": "both"}]
    sync(mssql_db, pg_cluster, tenant, tables)
    with tenant.connect() as c:
        t = sql.Identifier(tenant.name, TABLE)
        # values as literals: with parameters psycopg, too, would read the names' % as placeholders
        c.execute(sql.SQL("UPDATE {} SET {} = {} WHERE {} = 2").format(t, sql.Identifier(COLS[0]),
                                                                        sql.Literal("pg%s%d"), sql.Identifier(KEY)))
        c.execute(sql.SQL("DELETE FROM {} WHERE {} = 3").format(t, sql.Identifier(KEY)))
        c.execute(sql.SQL("INSERT INTO {} ({}, {}) VALUES (4, {})").format(
            t, sql.Identifier(KEY), sql.Identifier(COLS[3]), sql.Literal("%(x)s")))
    r = sync(mssql_db, pg_cluster, tenant, tables)["tables"][0]
    assert (r["reverse"]["updated"], r["reverse"]["deleted"], r["reverse"]["inserted"]) == (1, 1, 1)
    two = ("pg%s%d",) + _row(2)[2:]
    assert _source(mssql_db) == [_row(1), (2,) + two, (4, None, None, None, "%(x)s", None)]
    mssql_db.execute("UPDATE dbo.%s SET %s = N'ms%%d' WHERE %s = 1" % (_q(TABLE), _q(COLS[4]), _q(KEY)))
    r = sync(mssql_db, pg_cluster, tenant, tables)["tables"][0]
    assert r["updated"] == 1 and r["reverse"]["updated"] == 0
    assert _target(tenant) == [_row(1)[:5] + ("ms%d",), (2,) + two, (4, None, None, None, "%(x)s", None)]

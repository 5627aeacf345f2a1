"""The reverse sync's capture on real PostgreSQL: the trigger, its change log, tombstones, the echo marker and
the read window (entries of open transactions are never inside it)."""

import psycopg
import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import sync_capture as C
from psycopg import sql

pytestmark = pytest.mark.sync


def _table(tenant, name, keys="id"):
    with tenant.connect() as c:
        c.execute(sql.SQL("CREATE TABLE {} (id int, k2 text, name text, rv bytea, PRIMARY KEY ({}))").format(
            sql.Identifier(tenant.name, name), sql.SQL(", ").join(sql.Identifier(k) for k in keys.split(","))))


def _log(tenant, name):
    with tenant.connect() as c:
        return c.execute("SELECT op, key, old_rv FROM berqenas.sync_change WHERE table_schema = %s AND table_name = %s"
                         " ORDER BY xid, id", (tenant.name, name)).fetchall()


def test_inserts_updates_deletes_become_entries_with_tombstones_and_old_rowversions(tenant):
    _table(tenant, "Items")
    with tenant.connect(autocommit=False) as c:
        assert C.install_capture(c, tenant.name, "Items", ["id"], "rv") is True
        assert C.install_capture(c, tenant.name, "Items", ["id"], "rv") is False  # idempotent
    t = sql.Identifier(tenant.name, "Items")
    with tenant.connect() as c:
        c.execute(sql.SQL("INSERT INTO {} (id, name, rv) VALUES (1, 'a', '\\x00000000000007d1'), (2, 'b', NULL)")
                  .format(t))
        c.execute(sql.SQL("UPDATE {} SET name = 'a2' WHERE id = 1").format(t))
        c.execute(sql.SQL("DELETE FROM {} WHERE id = 1").format(t))
        c.execute(sql.SQL("UPDATE {} SET id = 3 WHERE id = 2").format(t))  # a key change: D old, I new
    rv = bytes.fromhex("00000000000007d1")
    assert _log(tenant, "Items") == [
        ("I", {"id": 1}, None), ("I", {"id": 2}, None), ("U", {"id": 1}, rv), ("D", {"id": 1}, rv),
        ("D", {"id": 2}, None), ("I", {"id": 3}, None)]
    with tenant.connect() as c:
        got = C.coalesce(C.pending(c.cursor(), tenant.name, "Items", (0, 0), C.window_bound(c.cursor()), 100),
                         ["id"])
    # one action per key: the last op, the tombstone's old rowversion (a delete's conflict base)
    assert {k: v[:3] for k, v in got.items()} == {(1,): ("D", {"id": 1}, rv), (2,): ("D", {"id": 2}, None),
                                                  (3,): ("I", {"id": 3}, None)}


def test_the_sync_marker_is_not_captured_and_tenants_cannot_write_the_log(tenant):
    _table(tenant, "T")
    with tenant.connect(autocommit=False) as c:
        C.install_capture(c, tenant.name, "T", ["id"], "rv")
    t = sql.Identifier(tenant.name, "T")
    with tenant.connect(autocommit=False) as c:
        C.mark_sync_session(c)
        c.execute(sql.SQL("INSERT INTO {} (id, name) VALUES (1, 'from sqlserver')").format(t))
        c.execute(sql.SQL("UPDATE {} SET name = 'again' WHERE id = 1").format(t))
        c.commit()
        c.execute(sql.SQL("DELETE FROM {} WHERE id = 1").format(t))
        c.commit()
    assert _log(tenant, "T") == []
    # the tenant's own role: its change is captured (SECURITY DEFINER) but it cannot touch the log directly
    with tenant.connect() as c:
        c.execute(sql.SQL("GRANT INSERT, UPDATE, DELETE, SELECT ON {} TO {}").format(
            t, sql.Identifier(tenant.name + "_app")))
        c.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(tenant.name + "_app")))
        c.execute(sql.SQL("INSERT INTO {} (id, name) VALUES (2, 'user')").format(t))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("DELETE FROM berqenas.sync_change")
    assert _log(tenant, "T") == [("I", {"id": 2}, None)]


def test_the_window_stops_below_open_transactions(tenant):
    """An entry of a transaction still open is outside the window, and so is every later one: the position
    stored after reading can never pass an entry that commits later (ids are handed out at insert)."""
    _table(tenant, "W")
    with tenant.connect(autocommit=False) as c:
        C.install_capture(c, tenant.name, "W", ["id"])
    t = sql.Identifier(tenant.name, "W")
    slow = tenant.connect(autocommit=False)
    try:
        slow.execute(sql.SQL("INSERT INTO {} (id) VALUES (1)").format(t))  # open: xid A
        with tenant.connect() as c:
            c.execute(sql.SQL("INSERT INTO {} (id) VALUES (2)").format(t))  # committed: xid B > A
            cur = c.cursor()
            assert C.pending(cur, tenant.name, "W", (0, 0), C.window_bound(cur), 100) == []
            assert C.count_pending(cur, tenant.name, "W", (0, 0)) == 1  # B is committed, but waits for A
        slow.commit()
        with tenant.connect() as c:
            cur = c.cursor()
            got = C.pending(cur, tenant.name, "W", (0, 0), C.window_bound(cur), 100)
            assert [e[3] for e in got] == [{"id": 1}, {"id": 2}]  # commit order by xid: A before B
            # paging resumes exactly after the last entry read, and purge removes what was applied
            assert [e[3] for e in C.pending(cur, tenant.name, "W", got[0][:2], C.window_bound(cur), 100)] == [
                {"id": 2}]
            assert C.purge(cur, tenant.name, "W", got[0][:2]) == 1
            assert C.count_pending(cur, tenant.name, "W", (0, 0)) == 1
    finally:
        slow.close()


def test_hostile_names_are_quoted(tenant):
    name = 'we"ird; DROP TABLE x;--'
    with tenant.connect() as c:
        c.execute(sql.SQL("CREATE TABLE {} ({} int PRIMARY KEY, {} int, v text)").format(
            sql.Identifier(tenant.name, name), sql.Identifier("k'ey\""), sql.Identifier("r v")))
    with tenant.connect(autocommit=False) as c:
        C.install_capture(c, tenant.name, name, ["k'ey\""], "r v")
        assert C.trigger_args(c.cursor(), tenant.name, name) == ["r v", "k'ey\""]
    with tenant.connect() as c:
        c.execute(sql.SQL("INSERT INTO {} VALUES (7, NULL, 'x')").format(sql.Identifier(tenant.name, name)))
    assert _log(tenant, name) == [("I", {"k'ey\"": 7}, None)]
    with tenant.connect(autocommit=False) as c:
        C.remove_capture(c, tenant.name, name)
        assert C.trigger_args(c.cursor(), tenant.name, name) is None


def test_entries_are_paged_in_numeric_transaction_order(tenant, pg_cluster):
    """pending() pages in (xid, id) order by number: transaction 999's entries before 1000's (ordered as text,
    '1000' < '999', the page after 1000's entries would start past 999's and lose them)."""
    _table(tenant, "X")
    with tenant.connect(autocommit=False) as c:
        C.install_capture(c, tenant.name, "X", ["id"], "rv")
    with pg_cluster.connect(tenant.db) as c:
        for xid, key in (("1000", 2), ("999", 1), ("1000", 3)):
            c.execute("INSERT INTO berqenas.sync_change (xid, table_schema, table_name, op, key)"
                      " VALUES (%s::xid8, %s, 'X', 'I', %s::jsonb)", (xid, tenant.name, '{"id": %d}' % key))
        cur = c.cursor()
        pos, seen = (0, 0), []
        for _ in range(5):
            page = C.pending(cur, tenant.name, "X", pos, 1 << 40, 1)
            if not page:
                break
            seen.append((page[0][0], page[0][3]["id"]))
            pos = page[0][:2]
    assert seen == [(999, 1), (1000, 2), (1000, 3)]

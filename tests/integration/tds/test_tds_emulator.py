"""Emulator-only behaviour: fault injection, simulated restore, strictness, start-up time, the stand-alone
entry point."""

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time

import pymssql
import pytest

from tests.support.tds_clients import CLIENTS
from tests.support.tds_emulator import TdsEmulator

errnum = CLIENTS["pymssql"].errnum

pytestmark = pytest.mark.tds

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _seed(db, n):
    db.execute("CREATE TABLE dbo.t (id int PRIMARY KEY, rv rowversion)")
    with db.pg_connect() as pg:  # bulk seeding straight into the backing table (the trigger still stamps rv)
        pg.execute("INSERT INTO dbo.t (id) SELECT g FROM generate_series(1, %s) g", (n,))


def test_drop_after_rows_cuts_the_stream(emulated_mssql_db):
    db = emulated_mssql_db
    _seed(db, 5000)
    db.faults.drop_after_rows = 1200
    got = 0
    with contextlib.closing(db.connect()) as conn:
        cur = conn.cursor()
        with pytest.raises(pymssql.OperationalError):
            cur.execute("SELECT id, rv FROM dbo.t ORDER BY rv")
            while cur.fetchone() is not None:
                got += 1
    assert got <= 1200
    assert db.faults.drop_after_rows is None  # one shot
    assert db.execute("SELECT COUNT(*) FROM dbo.t") == [(5000,)]


def test_packet_delay_slows_every_packet(emulated_mssql_db):
    db = emulated_mssql_db
    with contextlib.closing(db.connect()) as conn:
        cur = conn.cursor()
        t0 = time.monotonic()
        cur.execute("SELECT 1")
        fast = time.monotonic() - t0
        db.faults.packet_delay = 0.3
        t0 = time.monotonic()
        cur.execute("SELECT 1")
        cur.fetchall()
        slow = time.monotonic() - t0
        db.faults.packet_delay = 0
    assert slow >= 0.3 > fast


def test_refused_login_and_injected_errors(emulated_mssql_db):
    db = emulated_mssql_db
    db.faults.refuse_logins = True
    with pytest.raises(pymssql.OperationalError) as e:
        db.connect()
    assert errnum(e.value) == 18456
    db.faults.reset()
    with contextlib.closing(db.connect()) as conn:
        cur = conn.cursor()
        db.faults.fail_statement(r"MIN_ACTIVE_ROWVERSION", 1205, times=2)
        for _ in range(2):
            with pytest.raises(pymssql.OperationalError) as e:
                cur.execute("SELECT MIN_ACTIVE_ROWVERSION()")
            assert errnum(e.value) == 1205
        cur.execute("SELECT MIN_ACTIVE_ROWVERSION()")  # times=2 used up
        assert len(cur.fetchone()[0]) == 8
        db.faults.fail_statement(r"^INSERT", 2627)
        with pytest.raises(pymssql.IntegrityError):
            cur.execute("INSERT INTO dbo.nothing (x) VALUES (1)")


def test_tds_before_73_is_refused_clearly(emulated_mssql_db):
    with pytest.raises(pymssql.OperationalError) as e:
        emulated_mssql_db.connect(tds_version="7.2")
    assert errnum(e.value) == 18456


def test_simulated_restore_rewinds_counter_and_changes_guids(emulated_mssql_db):
    db = emulated_mssql_db
    _seed(db, 10)
    before = db.execute("SELECT database_guid, recovery_fork_guid FROM sys.database_recovery_status"
                        " WHERE database_id = DB_ID()")
    (dbts_before,), = db.execute("SELECT @@DBTS")
    with pytest.raises(ValueError):
        db.simulate_restore(dbts=2003)  # rows stamped up to 2010 exist
    assert db.simulate_restore(dbts=2003, discard_newer=True) == 2003
    after = db.execute("SELECT database_guid, recovery_fork_guid FROM sys.database_recovery_status"
                       " WHERE database_id = DB_ID()")
    (dbts_after, mar), = db.execute("SELECT @@DBTS, MIN_ACTIVE_ROWVERSION()")
    assert int.from_bytes(dbts_before, "big") == 2010
    assert int.from_bytes(dbts_after, "big") == 2003 and int.from_bytes(mar, "big") == 2004
    assert before[0][0] != after[0][0] and before[0][1] != after[0][1]
    assert db.execute("SELECT id FROM dbo.t ORDER BY id") == [(1,), (2,), (3,)]  # later changes are lost
    db.execute("UPDATE dbo.t SET id = id WHERE id = 1")
    assert db.execute("SELECT rv FROM dbo.t WHERE id = 1") == [((2004).to_bytes(8, "big"),)]
    # default: back to the highest stored value, GUIDs change again
    assert db.simulate_restore() == 2004


@pytest.mark.parametrize("statement, number", [
    ("EXEC sp_who", 102),
    ("SELECT id INTO dbo.copy FROM dbo.t", 156),
    ("MERGE dbo.t AS x USING dbo.t AS y ON x.id = y.id WHEN MATCHED THEN DELETE;", 102),
    ("SELECT SOUNDEX(N'x')", 195),
    ("UPDATE dbo.t SET id = 1 OUTPUT deleted.id", 102),  # OUTPUT inserted.<col> only
    ("SELECT * FROM OtherDb.dbo.t", 208),
    ("SELECT @x", 137),
    ("SELECT TOP 10 PERCENT id FROM dbo.t", 156),
    ("SELECT N'unterminated", 105),
    ("INSERT INTO dbo.t (id, rv) VALUES (99, 0x01)", 273),
    ("UPDATE dbo.t SET rv = 0x01", 272),
])
def test_unsupported_or_invalid_is_an_error_not_a_guess(emulated_mssql_db, statement, number):
    db = emulated_mssql_db
    db.execute("CREATE TABLE dbo.t (id int PRIMARY KEY, rv rowversion)")
    db.execute("INSERT INTO dbo.t (id) VALUES (1)")
    with pytest.raises(pymssql.DatabaseError) as e:
        db.execute(statement)
    assert errnum(e.value) == number
    assert db.execute("SELECT id FROM dbo.t") == [(1,)]


def test_serves_as_soon_as_start_returns(pg_cluster):
    """start() returns once the emulator accepts connections: the first connect, with no retry, is served
    (a condition, not a stopwatch: the box may be loaded)."""
    pg_cluster.create_database("tds_startup")
    emu = TdsEmulator(user="sa", password="Startup-1")
    emu.add_database("Startup", pg_cluster.conninfo("tds_startup"))
    emu.start()
    try:
        with contextlib.closing(pymssql.connect(**emu.connect_params("Startup"))) as conn:
            cur = conn.cursor()
            cur.execute("SELECT DB_NAME()")
            assert cur.fetchone()[0] == "Startup"
    finally:
        emu.stop()


def test_standalone_entry_point_serves_until_sigterm(pg_cluster, tmp_path):
    pg_cluster.create_database("tds_cli")
    pw = tmp_path / "pw"
    pw.write_text("Cli-Pa55word\n")
    pw.chmod(0o600)
    argv = [sys.executable, "-m", "tests.support.tds_emulator", "--pg-dsn", pg_cluster.dsn("tds_cli"), "--port",
            "0", "--user", "loader", "--password-file", str(pw), "--database", "CliDb"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "no address line"
        addr = json.loads(proc.stdout.readline())
        assert addr["host"] == "127.0.0.1" and addr["port"] > 0
        with contextlib.closing(pymssql.connect(server=addr["host"], port=str(addr["port"]), user="loader",
                                                password="Cli-Pa55word", database="CliDb", tds_version="7.4",
                                                login_timeout=5)) as conn:
            cur = conn.cursor()
            cur.execute("SELECT @@DBTS")
            assert cur.fetchone()[0] == (2000).to_bytes(8, "big")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_standalone_refuses_exposed_secrets(pg_cluster, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("x")
    pw.chmod(0o644)
    r = subprocess.run([sys.executable, "-m", "tests.support.tds_emulator", "--pg-dsn", pg_cluster.dsn(), "--user",
                        "u", "--password-file", str(pw), "--database", "D"], cwd=REPO, capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 2 and "chmod 600" in r.stderr and r.stdout == ""
    pw.chmod(0o600)
    r = subprocess.run([sys.executable, "-m", "tests.support.tds_emulator", "--pg-dsn", "host=/tmp password=oops",
                        "--user", "u", "--password-file", str(pw), "--database", "D"], cwd=REPO, capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 2 and "no password on the command line" in r.stderr


def test_kill_sessions_drops_clients(emulated_mssql_db):
    db = emulated_mssql_db
    conn = db.connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        cur.fetchall()
        assert db.kill_sessions() == 1
        with pytest.raises(pymssql.OperationalError):
            cur.execute("SELECT 1")
            cur.fetchall()
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def test_update_from_runs_with_index_joins_and_leaves_the_session_as_it_was(emulated_mssql_db):
    """UPDATE ... FROM (VALUES ...) runs with PostgreSQL's hash and merge joins off (its planner would scan the whole
    target per statement); after a success, a failure outside a transaction and one inside, the backing session's
    settings are back to their defaults."""
    db = emulated_mssql_db
    db.execute("CREATE TABLE dbo.t (id int PRIMARY KEY, s nvarchar(3) NULL)")
    db.execute("INSERT INTO dbo.t (id, s) VALUES (1, N'a'), (2, N'b')")
    ok = ("UPDATE x SET s = v.s FROM dbo.t AS x JOIN (VALUES (CAST(1 AS int), CAST(N'z' AS nvarchar(max))))"
          " AS v (id, s) ON x.id = v.id")
    bad = ok.replace("N'z'", "N'too long'")
    with contextlib.closing(db.connect()) as conn:
        cur = conn.cursor()
        cur.execute("SELECT @@SPID")
        session = db.server.emulator.session(cur.fetchone()[0])

        def settings():
            return [session.pg.execute("SHOW " + n).fetchone()[0] for n in ("enable_hashjoin", "enable_mergejoin")]

        cur.execute(ok)
        assert settings() == ["on", "on"]
        with pytest.raises(pymssql.DatabaseError):
            cur.execute(bad)
        assert settings() == ["on", "on"]
        cur.execute("BEGIN TRAN")
        with pytest.raises(pymssql.DatabaseError):
            cur.execute(bad)
        cur.execute("ROLLBACK TRAN")
        assert settings() == ["on", "on"]
    assert db.execute("SELECT id, s FROM dbo.t ORDER BY id") == [(1, "z"), (2, "b")]

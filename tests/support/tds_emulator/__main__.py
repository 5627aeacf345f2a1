"""``python -m tests.support.tds_emulator --pg-dsn DSN --port 0 --user U --password-file F --database D``

Prints one JSON line ``{"host": ..., "port": ...}`` and serves until SIGTERM or SIGINT.
"""

import argparse
import json
import os
import signal
import stat
import sys
import threading

import psycopg

from .server import TdsEmulator


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tests.support.tds_emulator", description=__doc__)
    ap.add_argument("--pg-dsn", required=True, help="libpq DSN of the backing PostgreSQL database")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="TCP port (0: a free one)")
    ap.add_argument("--user", required=True, help="SQL login name")
    ap.add_argument("--password-file", required=True, help="file holding the SQL login's password (mode 0600)")
    ap.add_argument("--database", required=True, help="SQL Server database name served")
    args = ap.parse_args(argv)
    try:
        st = os.stat(args.password_file)
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            ap.error("password file %s: readable by group or others (chmod 600)" % args.password_file)
        with open(args.password_file, encoding="utf-8") as f:
            password = f.read().rstrip("\r\n")
    except OSError as e:
        ap.error("password file %s: %s" % (args.password_file, e.strerror))
    try:
        if "password" in psycopg.conninfo.conninfo_to_dict(args.pg_dsn):
            ap.error("--pg-dsn: no password on the command line (use PGPASSFILE or a socket connection)")
    except psycopg.ProgrammingError as e:
        ap.error("--pg-dsn: %s" % e)
    emu = TdsEmulator(user=args.user, password=password, host=args.host, port=args.port)
    try:
        emu.add_database(args.database, args.pg_dsn)
    except Exception as e:  # noqa: BLE001 - report any backend failure as one line
        print("tds_emulator: cannot prepare database %s: %s" % (args.database, e), file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    emu.start()
    print(json.dumps({"host": emu.host, "port": emu.port}), flush=True)
    while not stop.wait(0.5):
        pass
    emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

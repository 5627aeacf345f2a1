"""The isolation proof: what one tenant's roles try against another tenant, and the SQLSTATE each must get.

Used by the tests (which assert every SQLSTATE) and by the demo (`python -m tests.support.isolation`, which prints
each attempt and its denial).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import psycopg
from psycopg import sql

# (who, description, SQL or special action, expected SQLSTATE); {other} = the other tenant's schema.
ATTEMPTS = [
    ("app", "read another tenant's table", "SELECT * FROM {other}.items", "42501"),
    ("app", "write another tenant's table", "INSERT INTO {other}.items (label) VALUES ('x')", "42501"),
    ("app", "create a table in another tenant's schema", "CREATE TABLE {other}.intruder (id int)", "42501"),
    ("app", "drop another tenant's table", "DROP TABLE {other}.items", "42501"),
    ("app", "become another tenant's owner role", "SET ROLE {other}_owner", "42501"),
    ("app", "become another tenant's login role", "SET ROLE {other}_app", "42501"),
    ("app", "create a table in public", "CREATE TABLE public.intruder (id int)", "42501"),
    ("ro", "read another tenant's table", "SELECT * FROM {other}.items", "42501"),
    ("ro", "become its own owner role", "SET ROLE {self}_owner", "42501"),
    ("ro", "write its own tenant's table", "INSERT INTO {self}.items (label) VALUES ('x')", "25006"),
    ("ro", "write its own table with read-only turned off",
     "SET default_transaction_read_only = off; INSERT INTO {self}.items (label) VALUES ('x')", "42501"),
    ("ro", "create a table in its own schema",
     "SET default_transaction_read_only = off; CREATE TABLE {self}.intruder (id int)", "42501"),
    ("app", "connect to database postgres", "CONNECT postgres", "28000"),
    ("ro", "connect to database template1", "CONNECT template1", "28000"),
]

OWN_SCHEMA_SQL = [
    "CREATE TABLE IF NOT EXISTS items (id serial PRIMARY KEY, label text NOT NULL)",
    "INSERT INTO items (label) VALUES ('hello')",
]


def connect(host, port, dbname, creds):
    return psycopg.connect(host=host, port=port, dbname=dbname, user=creds["user"], password=creds["password"],
                           connect_timeout=5, autocommit=True)


def prepare_own_schema(host, port, dbname, tenant, creds):
    """As the tenant's app role: create a table in its own schema, write and read it. Returns facts to assert."""
    with connect(host, port, dbname, creds["app"]) as c:
        for stmt in OWN_SCHEMA_SQL:
            c.execute(stmt)
        count = c.execute("SELECT count(*) FROM items").fetchone()[0]
        owner = c.execute("SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = 'items'",
                          (tenant,)).fetchone()[0]
    with connect(host, port, dbname, creds["ro"]) as c:
        ro_count = c.execute(sql.SQL("SELECT count(*) FROM {}.items").format(sql.Identifier(tenant))).fetchone()[0]
    return {"rows": count, "owner": owner, "ro_rows": ro_count}


UNPROVEN = "unproven"


def startup_sqlstate(host, port, user, dbname, timeout=3.0):
    """The SQLSTATE the server itself answers a startup packet for (user, dbname) with, or None.

    libpq keeps no SQLSTATE for a connection the server refuses before authentication (pg_hba.conf ``reject``):
    this sends the same protocol-3.0 startup message and reads the 'C' field of the server's ErrorResponse. None
    when the server answers anything else (an authentication request: it did not refuse at startup).
    Self-contained (stdlib only): the gateway tests run its source inside their machines.
    """
    import socket
    import struct

    body = struct.pack("!I", 196608) + b"user\0" + user.encode() + b"\0database\0" + dbname.encode() + b"\0\0"
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(struct.pack("!I", len(body) + 4) + body)
        head = b""
        while len(head) < 5:
            chunk = s.recv(5 - len(head))
            if not chunk:
                return None
            head += chunk
        kind, length = head[:1], struct.unpack("!I", head[1:])[0]
        if kind != b"E":
            return None
        data = b""
        while len(data) < length - 4:
            chunk = s.recv(length - 4 - len(data))
            if not chunk:
                break
            data += chunk
    fields = dict((f[:1], f[1:]) for f in data.split(b"\0") if f)
    code = fields.get(b"C")
    return code.decode() if code else None


def attempt(host, port, dbname, tenant, other, creds, who, sql_text):
    """Run one attempt; return the SQLSTATE the server failed it with, None if it succeeded, or UNPROVEN when
    it failed and the server's own reply carries no SQLSTATE (never one guessed from a message text)."""
    c_ = creds[who]
    target = sql_text.split()[1] if sql_text.startswith("CONNECT ") else dbname
    try:
        if sql_text.startswith("CONNECT "):
            with connect(host, port, target, c_):
                return None
        with connect(host, port, dbname, c_) as c:
            for stmt in sql_text.format(other=other, self=tenant).split("; "):
                c.execute(stmt)
        return None
    except psycopg.OperationalError as exc:
        if exc.sqlstate:
            return exc.sqlstate
        # refused at connection time: ask the server itself
        try:
            return startup_sqlstate(host, port, c_["user"], target) or UNPROVEN
        except OSError:
            return UNPROVEN
    except psycopg.Error as exc:
        return exc.sqlstate or UNPROVEN


def prove(host, port, dbname, tenants: dict) -> list[dict]:
    """tenants: {name: {"app": {"user","password"}, "ro": {...}}}. Every ordered pair is tried."""
    names = sorted(tenants)
    out = []
    for name in names:
        prepare_own_schema(host, port, dbname, name, tenants[name])
    for name in names:
        for other in names:
            if other == name:
                continue
            for who, what, sql_text, expected in ATTEMPTS:
                got = attempt(host, port, dbname, name, other, tenants[name], who, sql_text)
                out.append({"tenant": name, "role": f"{name}_{who}", "other": other, "attempt": what,
                            "expected": expected, "sqlstate": got, "denied": got == expected})
    return out


def _cli_json(*args):
    res = subprocess.run([sys.executable, "-m", "berqenas_orchestrator", *args, "--json"], check=True,
                         capture_output=True, text=True)
    return json.loads(res.stdout)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Print the tenant isolation proof of the local platform.")
    ap.add_argument("tenants", nargs="+")
    ns = ap.parse_args(argv)
    status = _cli_json("local", "status")
    creds = {}
    for t in ns.tenants:
        shown = _cli_json("tenant", "show", t, "--credentials")
        creds[t] = shown["credentials"]
    for t in ns.tenants:
        f = prepare_own_schema("127.0.0.1", status["port"], status["database"], t, creds[t])
        print(f"{t + '_app':<20} create table, insert, select in own schema {t:<15} -> ALLOWED ({f['rows']} rows, "
              f"table owned by {f['owner']}); {t}_ro reads it -> ALLOWED ({f['ro_rows']} rows)")
    rows = prove("127.0.0.1", status["port"], status["database"], creds)
    for r in rows:
        mark = "DENIED" if r["denied"] else "NOT DENIED"
        print(f"{r['role']:<20} {r['attempt']:<50} -> {mark} (SQLSTATE {r['sqlstate']}, expected {r['expected']})"
              + (f" [{r['other']}]" if "another" in r["attempt"] else ""))
    ok = all(r["denied"] for r in rows)
    print(f"isolation proof: {sum(r['denied'] for r in rows)}/{len(rows)} attempts denied as expected")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

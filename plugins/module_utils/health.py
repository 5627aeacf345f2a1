# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health checks of the platform's components, run concurrently with a per-probe timeout.

A *probe* is one unit of work (read one WireGuard dump, log in as one tenant, ping one remote database)
returning one or more *results*: ``{kind, name, healthy, status, detail, since, metrics}``. ``run_probes``
runs probes on daemon threads, at most ``workers`` at a time; a probe still running after its timeout is
abandoned (its thread is left to finish on its own) and reported as ``status: timeout``, so one dead remote
database cannot stall the report. The checks reuse the collection's own code: wireguard.parse_dump and
peer_status, the gateway's rendered rules, tenants.CredentialStore, mssql_sync's pymssql source and ping,
mssql_sync.read_states, hasura.Client.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import queue
import re
import threading
import time

KINDS = ("wireguard", "gateway", "postgres", "remotedb", "sync", "hasura")


class HealthError(ValueError):
    """Bad input to a health check (raised before anything is probed)."""


def result(kind, name, healthy, status=None, detail="", since=None, metrics=None):
    return {"kind": kind, "name": name, "healthy": bool(healthy), "status": status or ("ok" if healthy else
                                                                                       "unhealthy"),
            "detail": detail, "since": since, "metrics": metrics or {}}


class Probe(object):
    def __init__(self, kind, name, fn, timeout):
        self.kind, self.name, self.fn, self.timeout = kind, name, fn, float(timeout)


def run_probes(probes, workers=8, clock=time.monotonic):
    """Run ``probes`` concurrently; returns the results in probe order, each with ``duration_s``."""
    probes = list(probes)
    done = queue.Queue()
    pending = list(range(len(probes)))
    running = {}
    outcomes = {}

    def work(i):
        t0 = clock()
        try:
            out = probes[i].fn()
            out = out if isinstance(out, list) else [out]
        except Exception as e:  # a probe's failure is its report, never the runner's
            out = [result(probes[i].kind, probes[i].name, False, "error", "%s: %s" % (type(e).__name__, e))]
        done.put((i, out, clock() - t0))

    while pending or running:
        while pending and len(running) < workers:
            i = pending.pop(0)
            t = threading.Thread(target=work, args=(i,), name="health-%s" % probes[i].name)
            t.daemon = True
            running[i] = clock()
            t.start()
        deadline = min(running[i] + probes[i].timeout for i in running)
        try:
            i, out, took = done.get(timeout=max(0.0, deadline - clock()))
            if i in running:
                del running[i]
                for r in out:
                    r["duration_s"] = round(took, 4)
                outcomes[i] = out
        except queue.Empty:
            pass
        now = clock()
        for i in [i for i in running if now - running[i] >= probes[i].timeout]:
            del running[i]
            p = probes[i]
            outcomes[i] = [dict(result(p.kind, p.name, False, "timeout", "no answer within %gs" % p.timeout),
                                duration_s=round(p.timeout, 4))]
    return [r for i in range(len(probes)) for r in outcomes[i]]


def _iso(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def apply_since(results, previous, now_ts):
    """Give every unhealthy result a ``since`` (what the check knows, else when it was first seen unhealthy,
    from ``previous``: {"kind/name": iso}); returns the new map of unhealthy keys to record."""
    keep = {}
    for r in results:
        key = "%s/%s" % (r["kind"], r["name"])
        if r["healthy"]:
            r["since"] = None
            continue
        r["since"] = r.get("since") or previous.get(key) or _iso(now_ts)
        keep[key] = r["since"]
    return keep


def load_since(path):
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (IOError, OSError, ValueError):
        return {}


def save_since(path, data):
    d = os.path.dirname(path)
    if d and not os.path.isdir(d):
        os.makedirs(d, mode=0o700)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ wireguard
def wireguard_results(interface, running, listen_port, dump_iface, status, now_ts, stale_after):
    """Results from wireguard.peer_status() output (``status``, each with enabled/expired/public_key) and the
    parsed dump: the interface (up, listen port), each enabled unexpired peer (stale above ``stale_after``),
    expired peers whose key is still on the live interface."""
    out = []
    if not running or dump_iface is None:
        return [result("wireguard", interface, False, "down", "interface %s is not up" % interface)]
    port = dump_iface.get("listen_port")
    if listen_port and port != int(listen_port):
        out.append(result("wireguard", interface, False, "unhealthy",
                          "listens on port %s, expected %s" % (port, listen_port), metrics={"listen_port": port}))
    else:
        out.append(result("wireguard", interface, True, detail="up, port %s" % port, metrics={"listen_port": port}))
    for p in status:
        name = "%s/peer/%s" % (interface, p["name"])
        age = p.get("latest_handshake_age_s")
        m = {"latest_handshake_age_seconds": age, "rx_bytes": p.get("rx_bytes", 0),
             "tx_bytes": p.get("tx_bytes", 0), "tenant": p.get("tenant"), "addresses": p.get("addresses") or []}
        if p["state"] == "expired":
            if p.get("live"):
                out.append(result("wireguard", name, False, "expired",
                                  "expired %s but still on the interface" % p.get("expires"), since=p.get("expires"),
                                  metrics=m))
            continue
        if p["state"] == "disabled":
            continue
        if p["state"] == "stale":
            out.append(result("wireguard", name, False, "stale",
                              "latest handshake %ds ago (stale after %ds)" % (age, stale_after),
                              since=_iso(now_ts - age), metrics=m))
        elif p["state"] == "never":
            out.append(result("wireguard", name, True, "never", "no handshake yet", metrics=m))
        else:
            out.append(result("wireguard", name, True, "ok", "latest handshake %ds ago" % age, metrics=m))
    return out


# -------------------------------------------------------------------------------------------------- gateway
_WS = re.compile(r"\s+")


_ADDR_OPTS = ("-s", "-d", "--source", "--destination")


def _norm(rule):
    """A rule as ``iptables -S`` prints it: no quotes, single spaces, and a host address with its prefix
    (``-d 203.0.113.2`` is listed as ``-d 203.0.113.2/32``, an IPv6 one with ``/128``)."""
    words = _WS.sub(" ", rule.replace('"', "").strip()).split(" ")
    for i in range(1, len(words)):
        if words[i - 1] in _ADDR_OPTS and "/" not in words[i]:
            words[i] += "/128" if ":" in words[i] else "/32"
    return " ".join(words)


def rendered_chain_rules(block):
    """{(table, chain): [rule, ...]} of a rendered before.rules block: the rules of the BQ-* chains and the
    jumps into them (keyed by the chain they are appended to)."""
    table = None
    out = {}
    for ln in (block or "").splitlines():
        ln = ln.strip()
        if ln.startswith("*"):
            table = ln[1:]
        elif ln.startswith(":BQ-"):
            out.setdefault((table, ln[1:].split()[0]), [])
        elif ln.startswith("-A "):
            chain = ln.split()[1]
            out.setdefault((table, chain), []).append(_norm(ln))
    return out


def chain_drift(expected, live_lines, chain):
    """(missing, extra) rules of one chain: ``live_lines`` is ``iptables -S CHAIN`` output. For a chain that
    is not the platform's own (a jump from ufw's chains), only missing rules count."""
    live = [_norm(ln) for ln in live_lines if ln.startswith("-A ")]
    missing = [r for r in expected if r not in live]
    extra = [r for r in live if r not in expected] if chain.startswith("BQ-") else []
    return missing, extra


def gateway_results(ufw_status_text, chains):
    """``chains``: [(table, chain, expected_rules, rc, live_lines, family)]."""
    out = []
    text = ufw_status_text or ""
    active = "Status: active" in text
    m = re.search(r"^Default:\s*(.*)$", text, re.M)
    default = m.group(1) if m else ""
    deny_in = "deny (incoming)" in default or "reject (incoming)" in default
    if not active:
        out.append(result("gateway", "ufw", False, "inactive", "ufw is not active"))
    elif not deny_in:
        out.append(result("gateway", "ufw", False, "unhealthy", "default incoming policy is not deny: %s" % default))
    else:
        out.append(result("gateway", "ufw", True, detail="active, %s" % default))
    for table, chain, expected, rc, live, family in chains:
        name = "%s/%s/%s" % (family, table, chain)
        if rc != 0:
            out.append(result("gateway", name, False, "missing", "chain %s is missing" % chain))
            continue
        missing, extra = chain_drift(expected, live, chain)
        metrics = {"missing_rules": len(missing), "extra_rules": len(extra)}
        if missing or extra:
            detail = "drift: %d missing, %d extra" % (len(missing), len(extra))
            first = (missing or extra)[0]
            out.append(result("gateway", name, False, "drift", "%s (%s: %s)" % (
                detail, "missing" if missing else "extra", first), metrics=metrics))
        else:
            out.append(result("gateway", name, True, detail="%d rules as rendered" % len(expected), metrics=metrics))
    return out


# ------------------------------------------------------------------------------------------------- postgres
HBA_MARKER = "# BEGIN berqenas.platform postgres_tenant (managed, do not edit)"
_SCHEMAS = ("SELECT session_user, coalesce(array_agg(nspname::text ORDER BY nspname), '{}') FROM pg_namespace "
            "WHERE has_schema_privilege(oid, 'USAGE') AND nspname NOT LIKE 'pg\\_%%' "
            "AND nspname NOT IN ('information_schema', 'public')")


def postgres_server_check(connect, hba_file=None, timeout=5):
    """The platform database answers, and the pg_hba managed block is in its hba file."""
    t0 = time.monotonic()
    with connect() as conn:
        row = conn.execute("SELECT current_setting('server_version'), current_setting('hba_file')").fetchone()
    took = time.monotonic() - t0
    out = [result("postgres", "server", True, detail="PostgreSQL %s" % row[0], metrics={"latency_seconds": took})]
    path = hba_file or row[1]
    try:
        with open(path) as f:
            present = HBA_MARKER in f.read()
        out.append(result("postgres", "pg_hba", present, "ok" if present else "missing",
                          "managed block %s in %s" % ("present" if present else "missing", path)))
    except (IOError, OSError) as e:
        out.append(result("postgres", "pg_hba", False, "error", "cannot read %s: %s" % (path, e)))
    return out


def tenant_check(name, credentials, connect_as):
    """Tenant NAME's login role logs in (credentials from its 0600 file) and sees only its own schema."""
    if not credentials:
        return result("postgres", "tenant/%s" % name, False, "missing", "no credentials file")
    app = credentials.get("app") or {}
    t0 = time.monotonic()
    try:
        with connect_as(app.get("user"), app.get("password"), credentials.get("host"),
                        credentials.get("port")) as conn:
            user, schemas = conn.execute(_SCHEMAS).fetchone()
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return result("postgres", "tenant/%s" % name, False, "login_failed", "%s: %s" % (app.get("user"), msg))
    took = time.monotonic() - t0
    metrics = {"login_seconds": took}
    if list(schemas) != [name]:
        return result("postgres", "tenant/%s" % name, False, "isolation",
                      "%s sees schemas %s, expected only %s" % (user, ", ".join(schemas) or "none", name),
                      metrics=metrics)
    return result("postgres", "tenant/%s" % name, True, detail="%s logs in, sees only %s" % (user, name),
                  metrics=metrics)


# ------------------------------------------------------------------------------------------------- remotedb
_NUMBER = re.compile(r"\b(\d{3,5})\b")


def sqlserver_error_number(exc):
    """The SQL Server error number of a pymssql failure (18456 login failed, 4060 cannot open database,
    20009/20002 unreachable), looking through the sync's SourceError at the driver's exception."""
    seen = set()
    e = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        args = getattr(e, "args", ())
        if args and isinstance(args[0], int):
            return args[0]
        if args and isinstance(args[0], tuple) and args[0] and isinstance(args[0][0], int):
            return args[0][0]
        e = e.__cause__ or e.__context__
    m = _NUMBER.search(str(exc))
    return int(m.group(1)) if m else None


def remotedb_check(name, tenant, make_source, ping):
    """Connect and run one query (mssql_sync.ping: login, then the server version). ``make_source`` None: the run
    knows no password for it (an AWX job's credential holds one remote database's), reported, never tried."""
    if make_source is None:
        return result("remotedb", name, False, "no_password", "no password in this run (a vaulted "
                      "berqenas_remotedb_passwords entry or the remote database's password_file)",
                      metrics={"tenant": tenant})
    source = make_source()
    try:
        v = ping(source)
    except Exception as e:
        number = sqlserver_error_number(e)
        status = "login_failed" if number in (18456, 4060, 18452, 18470, 18486, 18487, 18488) else "unreachable"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return result("remotedb", name, False, status, "%s (error %s)" % (msg, number) if number else msg,
                      metrics={"tenant": tenant, "error_number": number})
    return result("remotedb", name, True, detail="%s, %.1f ms" % (v.get("product_version"), v["latency_ms"]),
                  metrics={"tenant": tenant, "latency_seconds": v["latency_ms"] / 1000.0,
                           "login_seconds": v["login_ms"] / 1000.0})


# ----------------------------------------------------------------------------------------------------- sync
def sync_results(states, max_lag):
    """Per synced table: healthy when the last run succeeded and the last success is within ``max_lag``."""
    out = []
    for s in states:
        name = "%s/%s.%s" % (s["job"], s["source_schema"], s["source_table"])
        lag = s.get("lag_s")
        m = {"remotedb": s["job"], "source": "%s.%s" % (s["source_schema"], s["source_table"]),
             "target": "%s.%s" % (s["target_schema"], s["target_table"]), "lag_seconds": lag,
             "rows_total": s.get("rows_total") or 0, "last_run_at": s.get("last_run_at")}
        if "pending" in s:
            m["pending_rows"] = s["pending"]
        if s.get("last_result") not in (None, "ok"):
            out.append(result("sync", name, False, "failed", "last run %s: %s" % (
                s.get("last_result"), (s.get("last_error") or "").splitlines()[0] if s.get("last_error") else ""),
                since=s.get("last_ok_at") or s.get("last_run_at"), metrics=m))
        elif lag is None:
            out.append(result("sync", name, False, "never", "never synced", metrics=m))
        elif max_lag and lag > max_lag:
            out.append(result("sync", name, False, "lagging", "last success %ds ago (max %ds)" % (lag, max_lag),
                              since=s.get("last_ok_at"), metrics=m))
        else:
            out.append(result("sync", name, True, detail="last success %ds ago, %s rows%s" % (
                lag, m["rows_total"], ", %s pending" % s["pending"] if s.get("pending") is not None else ""),
                metrics=m))
    return out


def pending_rows(source, state):
    """Rows a sync run would read now (the check-mode count of `sync run --check`): the source table's rows in the
    window [stored watermark, MIN_ACTIVE_ROWVERSION()) of its rowversion column; every row when the table has no
    rowversion column or no watermark yet. ``source``: a module_utils.mssql.PymssqlSource; ``state``: a row of
    sync_state.read_states (watermark as hex)."""
    from ansible_collections.berqenas.platform.plugins.module_utils import sync_types

    schema, table = state["source_schema"], state["source_table"]
    rv = [c["COLUMN_NAME"] for c in source.columns(schema, table) if sync_types.is_rowversion_type(c["DATA_TYPE"])]
    if not rv or not state.get("hwm"):
        return source.count(schema, table)
    hi = source.watermarks()[0]
    lo = int(state["hwm"], 16)
    return 0 if lo >= hi else source.count(schema, table, rv[0], lo, hi)


# --------------------------------------------------------------------------------------------------- hasura
def hasura_check(client):
    """The engine answers /healthz with OK and its metadata has no inconsistent objects (``client``: a
    module_utils.hasura.Client; a failure to answer raises HasuraError, which the probe reports as ``error``)."""
    t0 = time.monotonic()
    h = client.health()
    objs = client.inconsistent() if h["status"] == 200 else []
    metrics = {"latency_seconds": time.monotonic() - t0, "inconsistent_objects": len(objs)}
    if objs:
        names = ", ".join(str(o.get("name") or o.get("type")) for o in objs[:3])
        return result("hasura", "engine", False, "inconsistent", "%d inconsistent objects: %s%s" % (
            len(objs), names, ", ..." if len(objs) > 3 else ""), metrics=metrics)
    if not h["ok"]:
        return result("hasura", "engine", False, "unhealthy", "/healthz: HTTP %s %s" % (h["status"], h["text"][:80]),
                      metrics=metrics)
    return result("hasura", "engine", True, detail="/healthz OK, metadata consistent", metrics=metrics)

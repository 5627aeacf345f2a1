#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: platform_health
short_description: Health checks of the platform's components on one host, run concurrently
version_added: 0.1.0
description:
  - "Runs the checks of the components given (WireGuard, gateway, PostgreSQL and its tenants, remote SQL Server
    databases, sync state) on daemon threads, at most O(workers) at a time, each probe with O(timeout) seconds;
    a probe still running then is reported as V(timeout) and abandoned, so one dead remote database cannot
    stall the report."
  - One module for every component rather than one per component, so that one task on a host runs all of its
    probes concurrently under one deadline; the checks themselves live in C(module_utils/health.py) and reuse
    the code of the modules that manage each component.
  - Never fails because something is unhealthy (the report says what); fails only on bad input.
  - "Checks: C(wireguard) interface up, listen port, each enabled peer's latest handshake (V(stale) after
    O(wireguard.stale_after) seconds), expired peers still on the interface; C(gateway) ufw active with a
    deny incoming default, the platform's chains present and equal to the rendered rules (drift);
    C(postgres) server reachable, the pg_hba managed block present, each tenant's login role logs in with
    its stored credentials and sees only its own schema; C(remotedb) login and one query with a timeout,
    latency, the SQL Server error number of a failure; C(sync) per table, the last result and the time
    since the last success; C(hasura) C(/healthz) answers OK and the metadata has no inconsistent objects."
options:
  kinds:
    description: Only these kinds of checks (of those whose options are given).
    type: list
    elements: str
    choices: [wireguard, gateway, postgres, remotedb, sync, hasura]
    default: [wireguard, gateway, postgres, remotedb, sync, hasura]
  timeout:
    description: Seconds each probe may take.
    type: float
    default: 10
  workers:
    description: Probes running at once.
    type: int
    default: 8
  state_file:
    description:
      - A 0600 JSON file recording when each check was first seen unhealthy (the C(since) of checks that
        cannot tell it themselves). Not written in check mode. Unset keeps no record.
    type: path
  wireguard:
    description: Check this WireGuard interface (managed by M(berqenas.platform.wireguard_server)).
    type: dict
    suboptions:
      interface:
        description: Interface name.
        type: str
        default: wg0
      state_dir:
        description: The server's state directory.
        type: path
        default: /etc/berqenas/wireguard
      listen_port:
        description: Expected listen port; V(0) does not check it.
        type: int
        default: 0
      stale_after:
        description: Seconds after the latest handshake when a peer is stale.
        type: int
        default: 180
  gateway:
    description: Check ufw and the platform's chains against the rendered blocks (M(berqenas.platform.gateway_plan)).
    type: dict
    suboptions:
      before_rules:
        description: The rendered block of C(before.rules).
        type: str
        required: true
      before6_rules:
        description: The rendered block of C(before6.rules).
        type: str
        default: ''
  postgres:
    description: Check the platform database and its tenants.
    type: dict
    suboptions:
      login_host:
        description: Host (empty for the socket).
        type: str
        default: ''
      login_unix_socket:
        description: Socket directory.
        type: str
        default: ''
      login_port:
        description: Port.
        type: int
        default: 5432
      login_user:
        description: Superuser of the checks.
        type: str
        default: postgres
      login_password:
        description: Its password.
        type: str
        default: ''
      database:
        description: The platform database.
        type: str
        default: berqenas
      tenants:
        description: Tenant names whose login roles are checked.
        type: list
        elements: str
        default: []
      credentials_dir:
        description: Where the tenants' 0600 credentials files are.
        type: path
        default: /etc/berqenas/tenants
      tenant_host:
        description: Host the tenants' login roles connect to when their credentials name none.
        type: str
        default: 127.0.0.1
      hba_file:
        description: The pg_hba file; default the server's C(hba_file).
        type: path
  remotedbs:
    description: Remote SQL Server databases to log in to.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Remote database name.
        type: str
        required: true
      tenant:
        description: Its tenant.
        type: str
        default: ''
      host:
        description: Host.
        type: str
        required: true
      port:
        description: Port.
        type: int
        default: 1433
      user:
        description: Login.
        type: str
        required: true
      password:
        description:
          - Password.
          - Unset (null) when the run knows none (an AWX job whose credential holds another remote database's
            password). The check then reports C(no_password) and does not try to log in.
        type: str
      database:
        description: Database.
        type: str
        required: true
      tds_version:
        description: TDS version.
        type: str
        default: '7.4'
  sync:
    description: Check the sync state table (C(berqenas.sync_state)) of the O(postgres) database.
    type: dict
    suboptions:
      max_lag:
        description: Seconds since a table's last successful run above which it is unhealthy; V(0) never.
        type: int
        default: 3600
      pending:
        description:
          - Also count each table's rows pending on its source (the check-mode count of a sync run, the window
            from the stored watermark to C(MIN_ACTIVE_ROWVERSION())), through the O(remotedbs) entry named by
            the table's job; one login per remote database.
        type: bool
        default: false
  hasura:
    description: Check this Hasura engine (C(/healthz), C(get_inconsistent_metadata)).
    type: dict
    suboptions:
      url:
        description: Base URL of the engine, e.g. C(http://127.0.0.1:8080).
        type: str
        required: true
      admin_secret:
        description: Its admin secret (sent only in the request header).
        type: str
        default: ''
      validate_certs:
        description: Verify the engine's TLS certificate.
        type: bool
        default: true
attributes:
  check_mode:
    support: full
    description: Reads only; in check mode O(state_file) is not updated either.
  diff_mode:
    support: none
    description: Nothing changes.
  idempotent:
    support: full
    description: Reads only (O(state_file) records what was seen).
requirements:
  - psycopg >= 3.1 (postgres, sync)
  - pymssql (remotedb)
author:
  - berqenas platform team (@berqenas)
"""

EXAMPLES = r"""
- name: Check the database host
  berqenas.platform.platform_health:
    timeout: 5
    postgres:
      login_unix_socket: /var/run/postgresql
      tenants: [acme, globex]
    sync: {}
  register: health
"""

RETURN = r"""
healthy:
  description: Whether every check is healthy.
  returned: success
  type: bool
checks:
  description: One entry per check.
  returned: success
  type: list
  elements: dict
  contains:
    kind:
      description: V(wireguard), V(gateway), V(postgres), V(remotedb) or V(sync).
      type: str
    name:
      description: What was checked (C(wg0/peer/laptop), C(tenant/acme), C(erp), C(erp/dbo.Orders), ...).
      type: str
    healthy:
      description: The verdict.
      type: bool
    status:
      description: V(ok), or why not (V(down), V(stale), V(drift), V(login_failed), V(timeout), ...).
      type: str
    detail:
      description: One line for a person.
      type: str
    since:
      description: When it became unhealthy (UTC ISO 8601), when known; null when healthy.
      type: str
    duration_s:
      description: Seconds the probe took.
      type: float
    metrics:
      description: Figures of the check (handshake age, latency, lag, ...).
      type: dict
"""

import contextlib
import os
import sys
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.berqenas.platform.plugins.module_utils import health as H
from ansible_collections.berqenas.platform.plugins.module_utils import wireguard as wgu

try:
    import psycopg

    HAS_PSYCOPG = True
except ImportError:
    HAS_PSYCOPG = False


def _wireguard_probes(module, wg, timeout):
    from ansible_collections.berqenas.platform.plugins.module_utils import validation as V

    name = wg["interface"]
    try:
        V.interface_name(name, "interface")
    except V.ValidationError as e:
        module.fail_json(msg="check wireguard: %s" % e)

    def probe():
        running, dump_iface, status = wgu.interface_status(wg["state_dir"], name, module.run_command,
                                                           wg["stale_after"])
        return H.wireguard_results(name, running, wg["listen_port"], dump_iface, status, int(time.time()),
                                   wg["stale_after"])
    return [H.Probe("wireguard", name, probe, timeout)]


def _gateway_probes(module, gw, timeout):
    def probe():
        rc, ufw_out, err = module.run_command(["ufw", "status", "verbose"])
        chains = []
        for family, block, exe in (("ipv4", gw["before_rules"], "iptables"),
                                   ("ipv6", gw["before6_rules"], "ip6tables")):
            for (table, chain), rules in sorted(H.rendered_chain_rules(block).items()):
                rc, out, err = module.run_command([exe, "-w", "-t", table, "-S", chain])
                chains.append((table, chain, rules, rc, out.splitlines(), family))
        return H.gateway_results(ufw_out, chains)
    return [H.Probe("gateway", "firewall", probe, timeout)]


def _pg_connect(pg, timeout, user=None, password=None, host=None, port=None):
    kw = dict(dbname=pg["database"], connect_timeout=max(1, int(timeout)), application_name="berqenas-health",
              autocommit=True)
    if user is None:
        kw.update(user=pg["login_user"], port=pg["login_port"])
        h = pg["login_unix_socket"] or pg["login_host"]
        if h:
            kw["host"] = h
        if pg["login_password"]:
            kw["password"] = pg["login_password"]
    else:
        kw.update(user=user, password=password, host=host or pg["tenant_host"], port=port or pg["login_port"])
    return psycopg.connect(**kw)


def _postgres_probes(module, pg, timeout):
    from ansible_collections.berqenas.platform.plugins.module_utils import tenants as T

    store = T.CredentialStore(pg["credentials_dir"])
    probes = [H.Probe("postgres", "server", lambda: H.postgres_server_check(
        lambda: _pg_connect(pg, timeout), pg["hba_file"]), timeout)]
    for name in pg["tenants"]:
        def probe(name=name):
            return H.tenant_check(name, store.load(name), lambda u, p, h, port: _pg_connect(
                pg, timeout, u, p, h, port))
        probes.append(H.Probe("postgres", "tenant/%s" % name, probe, timeout))
    return probes


def _remotedb_probes(module, dbs, timeout):
    from ansible_collections.berqenas.platform.plugins.module_utils import mssql as S

    probes = []
    for db in dbs:
        def make(db=db):
            return _source(db, timeout)
        probes.append(H.Probe("remotedb", db["name"], lambda db=db, make=make: H.remotedb_check(
            db["name"], db["tenant"], make if db["password"] is not None else None, S.ping), timeout))
    return probes


def _source(db, timeout):
    from ansible_collections.berqenas.platform.plugins.module_utils import mssql as S

    return S.PymssqlSource(host=db["host"], port=db["port"], user=db["user"], password=db["password"],
                           database=db["database"], login_timeout=max(1, int(timeout)), timeout=max(1, int(timeout)),
                           tds_version=db["tds_version"], appname="berqenas-health")


def _sync_probes(module, pg, sync, dbs, timeout):
    from ansible_collections.berqenas.platform.plugins.module_utils import sync_state as S

    by_name = dict((db["name"], db) for db in dbs)

    def probe():
        with contextlib.closing(_pg_connect(pg, timeout)) as conn:
            states = S.read_states(conn)
        if sync["pending"]:
            sources = {}
            try:
                for s in states:
                    db = by_name.get(s["job"])
                    if db is None or db["password"] is None:
                        continue
                    if s["job"] not in sources:
                        sources[s["job"]] = _source(db, timeout)
                    try:
                        s["pending"] = H.pending_rows(sources[s["job"]], s)
                    except Exception:  # the remotedb check reports why the source cannot be read
                        s["pending"] = None
            finally:
                for src in sources.values():
                    src.close()
        return H.sync_results(states, sync["max_lag"])
    return [H.Probe("sync", "state", probe, timeout)]


def _hasura_probes(module, hs, timeout):
    from ansible_collections.berqenas.platform.plugins.module_utils import hasura as HS

    try:
        client = HS.Client(hs["url"], hs["admin_secret"], HS.open_url_transport(hs["validate_certs"]),
                           timeout=timeout)
    except HS.HasuraError as e:
        module.fail_json(msg="check hasura: %s" % e)
    return [H.Probe("hasura", "engine", lambda: H.hasura_check(client), timeout)]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            kinds=dict(type="list", elements="str", choices=list(H.KINDS), default=list(H.KINDS)),
            timeout=dict(type="float", default=10),
            workers=dict(type="int", default=8),
            state_file=dict(type="path"),
            wireguard=dict(type="dict", options=dict(
                interface=dict(type="str", default="wg0"),
                state_dir=dict(type="path", default="/etc/berqenas/wireguard"),
                listen_port=dict(type="int", default=0),
                stale_after=dict(type="int", default=180),
            )),
            gateway=dict(type="dict", options=dict(
                before_rules=dict(type="str", required=True),
                before6_rules=dict(type="str", default=""),
            )),
            postgres=dict(type="dict", options=dict(
                login_host=dict(type="str", default=""),
                login_unix_socket=dict(type="str", default=""),
                login_port=dict(type="int", default=5432),
                login_user=dict(type="str", default="postgres"),
                login_password=dict(type="str", default="", no_log=True),
                database=dict(type="str", default="berqenas"),
                tenants=dict(type="list", elements="str", default=[]),
                credentials_dir=dict(type="path", default="/etc/berqenas/tenants"),
                tenant_host=dict(type="str", default="127.0.0.1"),
                hba_file=dict(type="path"),
            )),
            remotedbs=dict(type="list", elements="dict", default=[], options=dict(
                name=dict(type="str", required=True),
                tenant=dict(type="str", default=""),
                host=dict(type="str", required=True),
                port=dict(type="int", default=1433),
                user=dict(type="str", required=True),
                password=dict(type="str", no_log=True),
                database=dict(type="str", required=True),
                tds_version=dict(type="str", default="7.4"),
            )),
            sync=dict(type="dict", options=dict(max_lag=dict(type="int", default=3600),
                                                pending=dict(type="bool", default=False))),
            hasura=dict(type="dict", options=dict(
                url=dict(type="str", required=True),
                admin_secret=dict(type="str", default="", no_log=True),
                validate_certs=dict(type="bool", default=True),
            )),
        ),
        supports_check_mode=True,
    )
    p = module.params
    kinds = set(p["kinds"])
    timeout = p["timeout"]
    if not 0 < timeout <= 3600:
        module.fail_json(msg="check health: timeout must be in (0, 3600] seconds, got %s" % timeout)
    if p["workers"] < 1:
        module.fail_json(msg="check health: workers must be at least 1")
    if (p["postgres"] or p["sync"]) and kinds & {"postgres", "sync"} and not HAS_PSYCOPG:
        module.fail_json(msg=missing_required_lib("psycopg"))
    if p["sync"] and not p["postgres"]:
        module.fail_json(msg="check health: sync needs the postgres connection options")
    from ansible_collections.berqenas.platform.plugins.module_utils import validation as V

    for name in (p["postgres"] or {}).get("tenants", []):
        try:
            V.tenant_name(name)
        except V.ValidationError as e:
            module.fail_json(msg="check health: %s" % e)
    probes = []
    if "wireguard" in kinds and p["wireguard"]:
        probes += _wireguard_probes(module, p["wireguard"], timeout)
    if "gateway" in kinds and p["gateway"]:
        probes += _gateway_probes(module, p["gateway"], timeout)
    if "postgres" in kinds and p["postgres"]:
        probes += _postgres_probes(module, p["postgres"], timeout)
    if "remotedb" in kinds and p["remotedbs"]:
        probes += _remotedb_probes(module, p["remotedbs"], timeout)
    if "sync" in kinds and p["sync"]:
        probes += _sync_probes(module, p["postgres"], p["sync"], p["remotedbs"], timeout)
    if "hasura" in kinds and p["hasura"]:
        probes += _hasura_probes(module, p["hasura"], timeout)
    checks = H.run_probes(probes, workers=p["workers"])
    if p["state_file"]:
        keep = H.apply_since(checks, H.load_since(p["state_file"]), time.time())
        if not module.check_mode:
            H.save_since(p["state_file"], keep)
    else:
        H.apply_since(checks, {}, time.time())
    abandoned = any(c["status"] == "timeout" for c in checks)
    try:
        module.exit_json(changed=False, healthy=all(c["healthy"] for c in checks), checks=checks)
    except SystemExit:
        if abandoned:
            # a probe that timed out is still blocked in its driver (pymssql's exit handlers would wait for
            # it): the report is written, so leave without waiting
            sys.stdout.flush()
            os._exit(0)
        raise


if __name__ == "__main__":
    main()

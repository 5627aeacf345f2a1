"""`berqenas local up` with its default network, end to end in ONE test (one `local up`, shared by every claim, for
the CI budget): a fresh home, the local VPN + gateway host in its network namespace (bq-<hash of the home>), what
`make demo` shows. Two tenants, one VPN peer each in a client namespace of its own
(tests/support/local_clients.py), acme's database exposed: acme's peer connects through the local gateway and
runs SQL on acme's database; globex's peer (its tunnel up) is dropped by the gateway; with globex exposed too
(the firewall then admits it) globex's peer with acme's password gets SQLSTATE 28000 from pg_hba; `remotedb add`
+ `sync run` against the SQL Server fixture land rows acme's peer reads over the VPN; the host's firewall,
routes and /etc are the same before, during and after; `local down --purge` leaves no namespace, interface,
process or file of that home."""

import hashlib
import json
import os
import subprocess

import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import localnet
from psycopg import sql as pgsql

from tests.integration.gateway.conftest import host_firewall_state
from tests.support.cli import Cli
from tests.support.env import PYTHON
from tests.support.local_clients import Client, sql

pytestmark = pytest.mark.local


def _out(argv):
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout


def host_state():
    """The host's firewall (as the gateway tests record it), routes and the /etc directories the roles write."""
    state = host_firewall_state()
    state["ip route"] = _out(["ip", "route", "show", "table", "all"])
    state["ip -6 route"] = _out(["ip", "-6", "route", "show", "table", "all"])
    for top in ("/etc/wireguard", "/etc/berqenas", "/etc/netns"):
        for root, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    state[path] = hashlib.sha256(f.read()).hexdigest()
    return state


def _changed(before, now):
    return sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))


def _cmdlines():
    """{pid: argv joined by spaces} of every process on the host (read from /proc, no `ps`)."""
    procs = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    procs[int(pid)] = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            except OSError:
                pass  # gone meanwhile
    return procs


def test_local_platform_two_tenants_vpn_gateway_pg_hba_sync_and_down_purge_leaves_nothing(test_home, ansible_env,
                                                                                          mssql_server, tmp_path):
    home = os.path.join(test_home, "local-net")
    lay = localnet.layout(home)
    cli = Cli(ansible_env, home)
    before = host_state()
    assert lay["netns"] not in _out(["ip", "netns", "list"])
    clients, purged, src = {}, False, None
    try:
        status = cli("local", "up", "--json").json  # the default: --network
        assert status["netns"] == lay["netns"] and status["endpoint"] == "203.0.113.1", status
        addrs = _out(["ip", "-n", lay["netns"], "-br", "addr"])
        assert "198.51.100.1/24" in addrs and "203.0.113.1/24" in addrs, addrs
        # what runs for this instance: the processes inside its namespace and its PostgreSQL
        instance_pids = {int(p) for p in _out(["ip", "netns", "pids", lay["netns"]]).split()}
        data_dir = status.get("data_dir") or os.path.join(os.path.dirname(status["socket_dir"]), "data")
        with open(os.path.join(data_dir, "postmaster.pid")) as f:  # the cluster may live outside the home
            instance_pids.add(int(f.readline()))
        procs = _cmdlines()
        assert any("wireguard-go" in procs.get(p, "") for p in instance_pids), {p: procs.get(p) for p in instance_pids}
        instance_procs = {p: procs[p] for p in instance_pids if p in procs}

        creds, added = {}, {}
        for tenant, peer in (("acme", "alice"), ("globex", "bob")):
            created = cli("tenant", "create", tenant, "--json").json
            # the local host is this machine: its credentials file (0600, under the home) is what `tenant show
            # --credentials` fetches, read directly to save that command's two playbook runs
            with open(created["credentials_file"]) as f:
                creds[tenant] = json.load(f)["app"]
            added[tenant] = cli("vpn", "peer", "add", peer, "--tenant", tenant, "--json").json
            assert oct(os.stat(added[tenant]["config_file"]).st_mode & 0o777) == "0o600"
        addr = {t: added[t]["addresses"][0].split("/")[0] for t in added}
        assert addr == {"acme": "198.51.100.2", "globex": "198.51.100.3"}, added
        cli("gateway", "expose", "acme", "--json")
        for n, tenant in enumerate(("acme", "globex"), start=1):
            clients[tenant] = Client(home, n, added[tenant]["config_file"])
        for tenant, c in clients.items():  # both tunnels are up: what stops globex below is the gateway
            assert c.wait_handshake(timeout=90), f"{tenant}: no WireGuard handshake with the local host within 90 s"

        def run_sql(tenant, who, query, timeout=10):
            return sql(clients[tenant], PYTHON, status["port"], creds[who], status["database"], query, timeout=timeout)

        res = run_sql("acme", "acme", "SELECT session_user, current_database(), host(inet_client_addr())")
        # acme's own role on the instance's database, and pg sees the peer's own VPN address (through the gateway)
        assert res == {"ok": True, "rows": [[creds["acme"]["user"], status["database"], addr["acme"]]]}, res
        res = run_sql("globex", "globex", "SELECT 1", timeout=3)
        assert not res["ok"] and res["sqlstate"] is None and "timeout" in res["error"], res  # dropped, no answer

        cli("gateway", "expose", "globex", "--json")  # the firewall now admits globex's peer: pg_hba is the next wall
        res = run_sql("globex", "globex", "SELECT session_user, host(inet_client_addr())")
        assert res == {"ok": True, "rows": [[creds["globex"]["user"], addr["globex"]]]}, res
        res = run_sql("globex", "acme", "SELECT 1")
        assert not res["ok"] and res["sqlstate"] == "28000" and "pg_hba.conf" in res["error"], res
        # the gateway's read-only views render the rules its apply wrote: the local cluster's own port, not 5432
        listed = cli("gateway", "list", "--json").json
        assert sorted(r["tenant"] for r in listed) == ["acme", "globex"], listed
        assert all(r["target"] == f"127.0.0.1:{status['port']}" for r in listed), listed
        health = cli("health", "--only", "gateway", "--json", check=False)
        assert health.rc == 0, health.stdout[-3000:]  # no drift: the health check renders the same rules
        assert _changed(before, host_state()) == []  # while up, too

        # remotedb add + sync run on the local instance, and the synced rows read by acme's peer over the VPN
        src = mssql_server.new_database()
        src.execute("CREATE TABLE dbo.Orders (id int NOT NULL PRIMARY KEY, note nvarchar(20) NULL, rv rowversion)")
        src.execute("INSERT INTO dbo.Orders (id, note) VALUES (1, N'one')")
        src.execute("INSERT INTO dbo.Orders (id, note) VALUES (2, N'two')")
        pw = tmp_path / "pw"
        pw.write_text(mssql_server.password + "\n")
        os.chmod(pw, 0o600)
        cli("remotedb", "add", "erp", "--tenant", "acme", "--host", mssql_server.host, "--port",
            str(mssql_server.port), "--user", mssql_server.user, "--password-file", str(pw), "--database", src.name,
            "--table", "[dbo].[Orders]", "--json")
        ran = cli("sync", "run", "erp", "--json").json
        [table] = ran["tables"]
        assert ran["status"] == "ok" and table["inserted"] == 2, ran
        schema, name = table["target"].split(".", 1)
        query = pgsql.SQL("SELECT id, note FROM {}.{} ORDER BY id").format(pgsql.Identifier(schema),
                                                                           pgsql.Identifier(name))
        res = run_sql("acme", "acme", query.as_string(None))
        assert res == {"ok": True, "rows": [[1, "one"], [2, "two"]]}, res

        for c in clients.values():
            c.close()
        clients = {}
        cli("local", "down", "--purge", "--json")
        purged = True
        assert lay["netns"] not in _out(["ip", "netns", "list"])
        assert lay["id"][:6] not in _out(["ip", "-br", "link"])  # no client veth end left on the host
        assert not os.path.exists(home)
        assert not os.path.exists(os.path.dirname(status["socket_dir"])) and not os.path.exists(data_dir)
        now = _cmdlines()
        left = {p: c for p, c in instance_procs.items() if now.get(p) == c}
        assert left == {}, left  # wireguard-go, the anchor, the forwarder and postgres are gone
        assert [c for c in now.values() if home in c or lay["netns"] in c] == []
        assert _changed(before, host_state()) == []
    finally:
        for c in clients.values():
            c.close()
        if src is not None:
            mssql_server.drop_database(src)
        if not purged:
            cli("local", "down", "--purge", "--json", check=False, timeout=300)

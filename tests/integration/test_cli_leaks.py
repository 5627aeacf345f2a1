"""Nothing leaks: the CLI runs with known secrets (tenant passwords, a remote database password, API keys, the
vault password, WireGuard private keys of the hub and of a peer, the Hasura admin secret, JWT signing keys) and
none of them appears in stdout/stderr (except where a command exists to print one), runner files (the private
data dirs in the CLI's TMPDIR, sampled while they exist: command, env/, extravars, artifacts, stdout), the audit
log, any file under the instance, the CLI's TMPDIR or ~/.ansible (outside the 0600 files that are meant to hold
it), or the argv and environment of any process while the commands run (sampled from /proc).

A secret generated during the run (a WireGuard key, a JWT key) is only known after its command, so every distinct
/proc and file content the sampler saw is kept and scanned again at the end against every secret."""

import json
import os
import shutil
import stat
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from berqenas_orchestrator import apikeys, vault

from tests.support.cli import Cli
from tests.support.fixtures_tds import _emulated_server

pytestmark = pytest.mark.cli
KEEP_MAX = 256 << 10


class Sampler(threading.Thread):
    """Every few ms: every process's cmdline and environ, and every file under the watched dirs."""

    def __init__(self, dirs):
        super().__init__(daemon=True)
        self.dirs, self.secrets, self.hits, self.samples = dirs, {}, [], 0
        self.seen: dict[bytes, set] = {}  # every distinct content seen -> where (scanned again at the end)
        self.stop_flag = threading.Event()

    def scan(self, where, data: bytes, keep=True):
        if keep:  # files over KEEP_MAX (PostgreSQL's WAL and relations) are scanned live and at the end only
            wheres = self.seen.setdefault(data, set())
            if where in wheres:
                return
            wheres.add(where)
        for name, value in list(self.secrets.items()):
            if value in data:
                self.hits.append((name, where))

    def rescan(self):
        """Every content seen, against every secret known now (including those learned after their command)."""
        for data, wheres in self.seen.items():
            for name, value in list(self.secrets.items()):
                if value in data:
                    self.hits.extend((name, w) for w in wheres)

    def run(self):
        me = os.getpid()
        while not self.stop_flag.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or int(pid) == me:
                    continue
                for what in ("cmdline", "environ"):
                    try:
                        with open(f"/proc/{pid}/{what}", "rb") as f:
                            data = f.read()
                    except OSError:
                        continue
                    self.scan(f"/proc/{pid}/{what} {self._comm(pid)}", data)
            for d in self.dirs:
                for base, _, files in os.walk(d):
                    for fn in files:
                        p = os.path.join(base, fn)
                        try:
                            with open(p, "rb") as f:
                                data = f.read(1 << 20)
                                mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
                            keep = len(data) <= KEEP_MAX
                            self.scan(p, data, keep)
                            if mode & 0o077:
                                self.scan(f"{p} (mode {oct(mode)})", data, keep)
                        except OSError:
                            continue
            self.samples += 1
            time.sleep(0.02)

    @staticmethod
    def _comm(pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read(200).replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            return "?"


def _wg_keys(text: str) -> list[bytes]:
    return [ln.split("=", 1)[1].strip().encode() for ln in text.splitlines() if ln.startswith("PrivateKey")]


def test_no_secret_leaks(test_home, ansible_env, tds_emulator, pg_cluster, hasura, tmp_path):
    server = _emulated_server(tds_emulator, pg_cluster)
    src = server.new_database()
    src.execute("CREATE TABLE dbo.Orders (id int NOT NULL PRIMARY KEY, note nvarchar(20) NULL, rv rowversion)")
    src.execute("INSERT INTO dbo.Orders (id, note) VALUES (1, N'one')")
    home = os.path.join(test_home, "leaks")
    tmpdir = tempfile.mkdtemp(prefix="bq-leaks-tmp-")  # the CLI's TMPDIR: runner private data dirs are made here
    env = dict(ansible_env, TMPDIR=tmpdir)
    env.pop(apikeys.ENV_KEY, None)
    cli = Cli(env, home)
    sampler = Sampler([home, tmpdir, os.path.join(test_home, ".ansible")])
    known = sampler.secrets
    known["admin api key"] = apikeys.read_key_file(env[apikeys.ENV_KEY_FILE]).encode()
    known["remote db password"] = server.password.encode()
    pw_file = tmp_path / "pw"
    pw_file.write_text(server.password + "\n")
    os.chmod(pw_file, 0o600)
    outputs = []

    def run(*args, may_print=(), check=True):
        r = cli(*args, check=check)
        outputs.append((args, r, set(may_print)))
        return r

    sampler.start()
    try:
        run("local", "up", "--json")  # with the local WireGuard + gateway host (a network namespace)
        run("tenant", "create", "acme", "--json")
        run("tenant", "create", "globex")
        creds = run("tenant", "show", "acme", "--credentials", "--json", may_print={"acme app password",
                                                                                   "acme ro password"}).json
        known["acme app password"] = creds["credentials"]["app"]["password"].encode()
        known["acme ro password"] = creds["credentials"]["ro"]["password"].encode()
        key_file = os.path.join(tmp_path, "tenant.key")
        run("apikey", "create", "--name", "acme-admin", "--scope", "tenant:acme", "--save", key_file)
        known["tenant api key"] = apikeys.read_key_file(key_file).encode()
        run("remotedb", "add", "erp", "--tenant", "acme", "--host", server.host, "--port", str(server.port),
            "--user", server.user, "--password-file", str(pw_file), "--database", src.name,
            "--table", "[dbo].[Orders]", "--json")
        vault_pass = os.path.join(home, "vault", "pass")
        known["vault password"] = open(vault_pass, "rb").read().strip()
        # WireGuard: the peer's private key is generated on the hub and fetched into a 0600 client config; no
        # command prints it (`vpn peer add` prints the config's path), so no stream is excused for it
        peer = run("vpn", "peer", "add", "laptop1", "--tenant", "acme", "--json").json
        with open(peer["config_file"]) as f:
            (known["wireguard peer private key"],) = _wg_keys(f.read())
        with open(os.path.join(home, "network", "etc", "wireguard", "wg0.conf")) as f:  # the hub's /etc (overlay)
            (known["wireguard hub private key"],) = _wg_keys(f.read())
        # Hasura: the admin secret is vaulted in the inventory and reaches the engine (the double) in a playbook
        secret_file = tmp_path / "hasura_admin_secret"
        secret_file.write_text(hasura.double.admin_secret + "\n")
        os.chmod(secret_file, 0o600)
        run("hasura", "configure", "--url", hasura.url, "--admin-secret-file", str(secret_file), "--json")
        app = SimpleNamespace(home=Path(home), inventory=Path(home) / "inventory", is_local=True)
        known["hasura admin secret"] = vault.entries(app, "hasura_secrets.yml",
                                                     "berqenas_hasura_admin_secrets")["default"].encode()
        assert known["hasura admin secret"] == hasura.double.admin_secret.encode()
        run("hasura", "status", "--json")
        # JWT signing keys: an HS256 shared secret and an EdDSA private key, read back from the vault
        run("token", "key", "add", "--json")
        run("token", "key", "add", "--alg", "EdDSA", "--json")
        jwt = {json.loads(v)["alg"]: json.loads(v) for v in
               vault.entries(app, "hasura_jwt_keys.yml", "berqenas_hasura_jwt_keys").values()}
        known["jwt hs256 secret"] = jwt["HS256"]["secret"].encode()
        # the PEM's base64 body (one line for Ed25519): found however the PEM is wrapped or escaped
        known["jwt eddsa private key"] = max(jwt["EdDSA"]["private_pem"].splitlines(), key=len).encode()
        jwt_env = os.path.join(home, "hasura-jwt.env")
        run("token", "config", "--out", jwt_env, "--json")
        run("token", "issue", "--tenant", "acme", "--json")
        run("remotedb", "list", "--json")
        run("remotedb", "test", "erp", "--json", check=False)
        run("sync", "run", "erp", "--json", check=False)
        run("sync", "status", "--json", check=False)
        run("--api-key-file", key_file, "tenant", "list", "--json")
        run("--api-key-file", key_file, "tenant", "show", "acme", "--credentials", "--json",
            may_print={"acme app password", "acme ro password"})
        run("tenant", "list", "--json")
        run("apikey", "list", "--json")
        run("audit", "show", "--json")
        run("audit", "verify")
        time.sleep(0.2)
    finally:
        sampler.stop_flag.set()
        sampler.join(timeout=30)
    try:
        assert sampler.samples > 20, sampler.samples
        assert len(known) == 11
        sampler.rescan()
        leaks = list(sampler.hits)
        for args, r, allowed in outputs:
            for name, value in known.items():
                if value in r.stderr.encode():
                    leaks.append((name, f"stderr of berqenas {' '.join(args)}"))
                if value in r.stdout.encode() and name not in allowed:
                    leaks.append((name, f"stdout of berqenas {' '.join(args)}"))
        audit_log = env["BERQENAS_AUDIT_LOG"]
        for path in [audit_log, *(os.path.join(b, f) for b, _, fs in os.walk(home) for f in fs)]:
            with open(path, "rb") as f:
                data = f.read()
            for name, value in known.items():
                if value in data:
                    leaks.append((name, path))
        # a secret is allowed only in the 0600 file that exists to hold it
        holders = {"vault password": {vault_pass},
                   "acme app password": {os.path.join(home, "credentials", "acme.json")},
                   "acme ro password": {os.path.join(home, "credentials", "acme.json")},
                   "jwt hs256 secret": {jwt_env}}  # HASURA_GRAPHQL_JWT_SECRET(S) for the engine: its purpose
        holders["wireguard peer private key"] = {peer["config_file"]}
        # the hub's own /etc (the namespace's overlay): wg0.conf, server.key, state.json, clients/, and the
        # temporary 0600 files of their atomic writes and of `wg syncconf`, gone by the end (so not stat-able):
        # a copy there with a wider mode is reported as "PATH (mode 0o6..)", never excused
        hub_dirs = {os.path.join(home, "network", "etc", "wireguard"),
                    os.path.join(home, "network", "etc", "berqenas", "wireguard", "wg0"),
                    os.path.join(home, "network", "etc", "berqenas", "wireguard", "wg0", "clients")}
        bad = []
        for name, where in leaks:
            if where in holders.get(name, set()) and stat.S_IMODE(os.stat(where).st_mode) == 0o600:
                continue
            if " (mode 0o" in where:  # a copy readable by more than its owner: never excused
                bad.append((name, where))
                continue
            if name.startswith("wireguard ") and os.path.dirname(where) in hub_dirs:
                continue
            # a file gone by the end beside a holder: its atomic write's temporary (acme.json.tmp,
            # hasura-jwt.env.tmp, made 0600); a wider mode would be reported as "PATH (mode ..)", never excused
            if not os.path.exists(where) and os.path.dirname(where) in {os.path.dirname(h)
                                                                           for h in holders.get(name, ())}:
                continue
            # `tenant show --credentials` fetches the file into a 0700 berqenas-fetch-* dir, removed afterwards
            # (a copy with a wider mode is reported with its mode, so it is never excused here)
            if name.startswith("acme ") and os.path.basename(os.path.dirname(where)).startswith("berqenas-fetch-") \
                    and where.startswith(tmpdir) and where.endswith("/acme.json"):
                continue
            bad.append((name, where))
        assert sorted(set(bad)) == [], f"secrets found: {sorted(set(bad))}"
        # and the holders really hold them (so the scan could find them)
        assert ("vault password", vault_pass) in leaks
        assert ("acme app password", os.path.join(home, "credentials", "acme.json")) in leaks
        assert ("wireguard peer private key", peer["config_file"]) in leaks
        assert ("wireguard hub private key", os.path.join(home, "network", "etc", "wireguard", "wg0.conf")) in leaks
        assert ("jwt hs256 secret", jwt_env) in leaks
        assert os.listdir(tmpdir) == [] or all(not n.startswith("berqenas-run-") for n in os.listdir(tmpdir))
    finally:
        cli("local", "down", "--purge", check=False)
        server.drop_database(src)
        shutil.rmtree(tmpdir, ignore_errors=True)

"""Nothing leaks: the CLI runs with known secrets (tenant passwords, a remote database password, API keys, the
vault password, WireGuard private keys of the hub and of a peer, the peer's QR codes, the Hasura admin secret, JWT
signing keys) and none of them appears in stdout/stderr (except where a command exists to print one), runner files
(the private data dirs in the CLI's TMPDIR, sampled while they exist, and every file of every run read whole from
the copies `--keep-artifacts` makes: extra vars, command with its env, stdout, job events; plain and base64), the
audit log, any file under the instance, the CLI's TMPDIR or ~/.ansible (outside the 0600 files that are meant to
hold it), or the argv and environment of any process while the commands run (sampled from /proc).

The vault password reaches ansible-runner as a file's path only (ANSIBLE_VAULT_PASSWORD_FILE in each kept
run's command env), never as its value. QR codes (they encode the peer's private key by design) exist only as 0600
files in 0700 directories of the instance: the hub's clients/ and the operator's vpn/NAME/.

A secret generated during the run (a WireGuard key, a JWT key) is only known after its command, so every distinct
/proc and file content the sampler saw is kept and scanned again at the end against every secret.

Every command of the CLI runs (the set of commands run is checked against the Click tree, so a new command fails
this test until it is added here), each ending with 0 (`health` too: every check healthy) and no traceback;
read-only ones run several at once to keep the test's time down. The cleanup's `local down --purge` has its
streams scanned too."""

import base64
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import localnet
from berqenas_orchestrator import apikeys, vault
from berqenas_orchestrator.cli import root as cli_root

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
                        if fn.endswith(".json") and not fn.endswith("-partial.json") and base.endswith("/job_events"):
                            continue  # a run's final events: read whole from its --keep-artifacts copy at the end
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


def _forms(value: bytes) -> list[bytes]:
    """VALUE and its base64 encodings at the three byte alignments (what a slurp or a b64encode would carry),
    each cut to the characters that VALUE's bytes alone determine."""
    out = [value]
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + value)
        part = enc[-(-4 * k // 3):4 * (k + len(value)) // 3]
        if len(part) >= 16:
            out.append(part)
    return out


def _scan_kept(root: str, known: dict) -> tuple[list, list, int]:
    """Every file under ROOT (the --keep-artifacts directory) read whole: (hits, wrong modes, files read)."""
    hits, modes, n = [], [], 0
    forms = {name: _forms(v) for name, v in known.items()}
    for base, dirs, files in os.walk(root):
        for d in dirs:
            if stat.S_IMODE(os.lstat(os.path.join(base, d)).st_mode) != 0o700:
                modes.append(os.path.join(base, d))
        for fn in files:
            p = os.path.join(base, fn)
            if stat.S_IMODE(os.lstat(p).st_mode) != 0o600:
                modes.append(p)
            with open(p, "rb") as f:
                data = f.read()
            n += 1
            hits.extend((name, p) for name, fs in forms.items() if any(x in data for x in fs))
    return hits, modes, n


# berqenas ARGS in a private mount namespace whose /dev is an overlay of the host's (upper dir: $1) with the
# capture's socket ($3) bound on /dev/log; the host's /dev submounts (pts, shm, ...: $4...) are bound back in
SYSLOG_NS = r"""set -e
up=$1 work=$2 sock=$3 old=$1.old; shift 3
mkdir "$old"; mount --rbind /dev "$old"
mount -t overlay overlay -o "lowerdir=/dev,upperdir=$up,workdir=$work" /dev
while [ "$1" != -- ]; do mount --rbind "$old/$1" "/dev/$1"; shift; done; shift
umount -l "$old"
: >/dev/log; mount --bind "$sock" /dev/log
exec "$@"
"""


class SyslogCapture(threading.Thread):
    """The journal of the run: there is no journald on a CI box, so this stands in for its /dev/log. Every CLI
    call runs in its own private mount namespace (SYSLOG_NS) whose /dev/log is this socket; everything below it
    inherits that, the local network host's anchor too (its namespaces are made from the `local up` call's), so
    each syslog(3) message of the run arrives here: Ansible modules log every invocation (their arguments, no_log
    ones masked) on the controller and on the hub. Nothing on the host's /dev changes."""

    def __init__(self, base: str):
        super().__init__(daemon=True)
        self.base, self.messages, self.calls, self.lock = base, [], 0, threading.Lock()
        os.makedirs(base, mode=0o700)
        self.path = os.path.join(base, "log.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o666)  # every user's messages (the base dir itself stays 0700)
        self.sock.settimeout(0.2)
        self.stop_flag = threading.Event()
        with open("/proc/self/mountinfo") as f:  # the host's mounts below /dev (fields: id parent maj:min root PATH)
            self.submounts = sorted({ln.split()[4][5:] for ln in f if ln.split()[4].startswith("/dev/")})

    def prefix(self) -> list[str]:
        with self.lock:  # (commands run at once too)
            self.calls += 1
            up, work = (os.path.join(self.base, f"{n}{self.calls}") for n in ("up", "work"))
        os.mkdir(up)
        os.chmod(up, 0o755)  # the overlay's root takes the upper dir's mode: /dev must stay traversable
        os.mkdir(work, 0o700)
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", SYSLOG_NS, "sh", up, work, self.path,
                *self.submounts, "--"]

    def run(self):
        while not self.stop_flag.is_set():
            try:
                self.messages.append(self.sock.recv(1 << 16))
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self):
        self.stop_flag.set()
        self.join(timeout=30)
        self.sock.close()


def _all_commands(group: click.Group, path=()) -> set[tuple[str, ...]]:
    """Every leaf command of the CLI's Click tree, as its path ("tenant", "create")."""
    out = set()
    for name, cmd in group.commands.items():
        out |= _all_commands(cmd, (*path, name)) if isinstance(cmd, click.Group) else {(*path, name)}
    return out


def _command_path(args) -> tuple[str, ...]:
    """The command ARGS runs, walked down the Click tree past the groups' options (--api-key-file FILE...)."""
    cmd, path, i = cli_root, [], 0
    while isinstance(cmd, click.Group):
        if args[i].startswith("-"):
            (opt,) = (p for p in cmd.params if args[i] in p.opts)
            i += 1 if opt.is_flag or getattr(opt, "count", False) else 2
            continue
        cmd = cmd.commands[args[i]]
        path.append(args[i])
        i += 1
    return tuple(path)


def _publish_netns(home: str) -> None:
    """`ip netns add` in the `local up` call mounts the instance's network namespace on /run/netns/NAME inside that
    call's private mount namespace (SYSLOG_NS) only: the host keeps an empty file there, so a later call (a fresh
    copy of the host's mounts) cannot reach the namespace by name and `local down` fails ("setting the network
    namespace failed"), leaving the namespace, its anchor, wireguard-go and the forwarder behind. Mount it on the
    host from the anchor's, as `ip netns add` run on the host would have."""
    lay = localnet.layout(home)
    path = os.path.join("/run/netns", lay["netns"])
    try:
        with open(lay["anchor_pidfile"]) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return  # no anchor (`local up` failed early): nothing to reach
    if os.path.exists(path) and not os.path.ismount(path):
        subprocess.run(["mount", "--bind", f"/proc/{pid}/ns/net", path], check=False)  # else: `local down` fails


def _wg_keys(text: str) -> list[bytes]:
    return [ln.split("=", 1)[1].strip().encode() for ln in text.splitlines() if ln.startswith("PrivateKey")]


def test_no_secret_leaks(test_home, ansible_env, tds_emulator, pg_cluster, hasura, tmp_path):
    server = _emulated_server(tds_emulator, pg_cluster)
    src = server.new_database()
    src.execute("CREATE TABLE dbo.Orders (id int NOT NULL PRIMARY KEY, note nvarchar(20) NULL, rv rowversion)")
    src.execute("INSERT INTO dbo.Orders (id, note) VALUES (1, N'one')")
    home = os.path.join(test_home, "leaks")
    tmpdir = tempfile.mkdtemp(prefix="bq-leaks-tmp-")  # the CLI's TMPDIR: runner private data dirs are made here
    kept = os.path.join(tmp_path, "kept")  # --keep-artifacts: every run's runner files, read whole at the end
    env = dict(ansible_env, TMPDIR=tmpdir, BERQENAS_KEEP_ARTIFACTS=kept)
    env.pop(apikeys.ENV_KEY, None)
    journal = SyslogCapture(os.path.join(tmp_path, "syslog"))
    cli = Cli(env, home, prefix=journal.prefix)
    sampler = Sampler([home, tmpdir, os.path.join(test_home, ".ansible")])
    known = sampler.secrets
    known["admin api key"] = apikeys.read_key_file(env[apikeys.ENV_KEY_FILE]).encode()
    known["remote db password"] = server.password.encode()
    pw_file = tmp_path / "pw"
    pw_file.write_text(server.password + "\n")
    os.chmod(pw_file, 0o600)
    outputs = []

    def run(*args, may_print=(), check=True, via=cli):
        r = via(*args, check=check)
        outputs.append((args, r, set(may_print)))
        return r

    def together(*calls):
        """Read-only commands at once (they take no lock; several operators may run them so), to keep the test's
        time down: each is sampled and scanned like the others."""
        with ThreadPoolExecutor(len(calls)) as pool:
            return [f.result() for f in [pool.submit(c) for c in calls]]

    sampler.start()
    journal.start()
    try:
        run("local", "up", "--json")  # with the local WireGuard + gateway host (a network namespace)
        _publish_netns(home)
        run("tenant", "create", "acme", "--json")
        run("tenant", "create", "globex")
        creds = run("tenant", "show", "acme", "--credentials", "--json", may_print={"acme app password",
                                                                                   "acme ro password"}).json
        known["acme app password"] = creds["credentials"]["app"]["password"].encode()
        known["acme ro password"] = creds["credentials"]["ro"]["password"].encode()
        key_file = os.path.join(tmp_path, "tenant.key")
        tenant_key_id = run("apikey", "create", "--name", "acme-admin", "--scope", "tenant:acme", "--save", key_file,
                            "--json").json["id"]
        known["tenant api key"] = apikeys.read_key_file(key_file).encode()
        run("remotedb", "add", "erp", "--tenant", "acme", "--host", server.host, "--port", str(server.port),
            "--user", server.user, "--password-file", str(pw_file), "--database", src.name,
            "--table", "[dbo].[Orders]", "--json")
        vault_pass = os.path.join(home, "vault", "pass")
        known["vault password"] = open(vault_pass, "rb").read().strip()
        # WireGuard: the peer's private key is generated on the hub and fetched into a 0600 client config; no
        # command prints it (`vpn peer add` prints the config's path), so no stream is excused for it
        peer = run("vpn", "peer", "add", "laptop1", "--tenant", "acme", "--qr", "--json").json
        with open(peer["config_file"]) as f:
            (known["wireguard peer private key"],) = _wg_keys(f.read())
        # its QR codes encode that key: their bytes are secrets too (found wherever a copy lands, decode-free)
        qr_txt = os.path.join(os.path.dirname(peer["qr_file"]), "laptop1.qr.txt")
        for what, path in (("png", peer["qr_file"]), ("text", qr_txt)):
            with open(path, "rb") as f:
                known[f"wireguard peer qr {what}"] = f.read()
        with open(os.path.join(home, "network", "etc", "wireguard", "wg0.conf")) as f:  # the hub's /etc (overlay)
            (known["wireguard hub private key"],) = _wg_keys(f.read())
        run("gateway", "expose", "acme", "--json")
        local = together(lambda: run("local", "status", "--json"), lambda: run("vpn", "peer", "list", "--json"),
                         lambda: run("vpn", "status", "--json"), lambda: run("gateway", "list", "--json"),
                         lambda: run("gateway", "status", "--json"))[0].json
        # Hasura: the admin secret is vaulted in the inventory and reaches the engine (the double) in a playbook
        secret_file = tmp_path / "hasura_admin_secret"
        secret_file.write_text(hasura.double.admin_secret + "\n")
        os.chmod(secret_file, 0o600)
        run("hasura", "configure", "--url", hasura.url, "--admin-secret-file", str(secret_file), "--json")
        app = SimpleNamespace(home=Path(home), inventory=Path(home) / "inventory", is_local=True)
        known["hasura admin secret"] = vault.entries(app, "hasura_secrets.yml",
                                                     "berqenas_hasura_admin_secrets")["default"].encode()
        assert known["hasura admin secret"] == hasura.double.admin_secret.encode()
        # the engine (the double) reaches acme's database with the DSN in its own process environment, as Hasura
        # does (here a dict in this process: never in a file or an environ); `sync run` tracks what it loads
        acme = creds["credentials"]["app"]
        hasura.double.environment["BERQENAS_ACME_DATABASE_URL"] = (
            f"host={local['host']} port={local['port']} dbname={local['database']} user={acme['user']} "
            f"password={acme['password']}")
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
        run("remotedb", "test", "erp", "--json")
        run("sync", "run", "erp", "--json")
        # Hasura metadata of acme's schema: every table, then one table out and back in
        tracked = run("hasura", "mirror", "acme", "--json").json["tracked"]
        table = tracked[0].split(".", 1)[1]
        run("hasura", "untrack", "acme", "--table", table, "--json")
        run("hasura", "track", "acme", "--table", table, "--json")
        together(lambda: run("health", "--json"), lambda: run("status", "--all", "--json"),
                 lambda: run("sync", "status", "--json"), lambda: run("remotedb", "list", "--json"))
        together(lambda: run("--api-key-file", key_file, "tenant", "list", "--json"),
                 lambda: run("--api-key-file", key_file, "tenant", "show", "acme", "--credentials", "--json",
                             may_print={"acme app password", "acme ro password"}),
                 lambda: run("tenant", "list", "--json"), lambda: run("apikey", "list", "--json"),
                 lambda: run("token", "key", "list", "--json"))
        # `apikey init` needs a new install: a keystore of its own (the session's one exists), in a watched dir
        init_cli = Cli(dict(env, **{apikeys.ENV_KEYSTORE: os.path.join(home, "init-check", "apikeys.json")}), home,
                       prefix=journal.prefix)
        init = run("apikey", "init", "--name", "first-admin", "--json", via=init_cli, may_print={"init api key"})
        known["init api key"] = init.json["key"].encode()
        run("apikey", "revoke", tenant_key_id, "--json")
        run("token", "key", "retire", jwt["HS256"]["kid"], "--json")  # the EdDSA key, added last, signs on
        run("gateway", "unexpose", "acme", "--json")
        _check_qr_modes(home, peer, qr_txt)  # (while they exist: `vpn peer remove` deletes the peer's files)
        run("vpn", "peer", "remove", "laptop1", "--json")
        assert not os.path.exists(os.path.dirname(peer["config_file"])), peer
        run("remotedb", "remove", "erp", "--json")
        run("tenant", "delete", "globex", "--yes", "--json")
        run("audit", "show", "--json")
        run("audit", "verify")
        run("local", "down", "--json")  # stopped, not purged (the purge below is the cleanup, its output scanned too)
        time.sleep(0.2)
    finally:
        sampler.stop_flag.set()
        sampler.join(timeout=30)
    try:
        assert sampler.samples > 20, sampler.samples
        assert len(known) == 14
        sampler.rescan()
        leaks = list(sampler.hits)
        journal_hits = _check_journal(journal, known)
        kept_hits, kept_modes, kept_files = _scan_kept(kept, known)
        # every command of the CLI ran above (a new command fails this until it is added to the run)
        missing = sorted(_all_commands(cli_root) - {_command_path(args) for args, _, _ in outputs})
        assert missing == [], f"commands the leak test does not run: {missing}"
        # and each one ended cleanly (0), never with a traceback
        unclean = [(args, r.rc) for args, r, _ in outputs if r.rc != 0 or "Traceback" in r.stderr]
        assert unclean == [], unclean
        leaks += _output_leaks(outputs, known)
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
        holders["wireguard peer qr png"] = {peer["qr_file"]}
        holders["wireguard peer qr text"] = {qr_txt}
        # the hub's own /etc (the namespace's overlay): wg0.conf, server.key, state.json, clients/, and the
        # temporary 0600 files of their atomic writes and of `wg syncconf`, gone by the end (so not stat-able):
        # a copy there with a wider mode is reported as "PATH (mode 0o6..)", never excused
        hub_dirs = {os.path.join(home, "network", "etc", "wireguard"),
                    os.path.join(home, "network", "etc", "berqenas", "wireguard", "wg0"),
                    os.path.join(home, "network", "etc", "berqenas", "wireguard", "wg0", "clients")}
        ansible_tmp = os.path.join(test_home, ".ansible", "tmp") + os.sep
        bad = []
        for name, where in leaks:
            if where in holders.get(name, set()) and os.path.exists(where) \
                    and stat.S_IMODE(os.stat(where).st_mode) == 0o600:
                continue
            if " (mode 0o" in where:  # a copy readable by more than its owner: never excused
                bad.append((name, where))
                continue
            if name.startswith("wireguard ") and os.path.dirname(where) in hub_dirs:
                continue
            # Ansible's own module payloads (AnsiballZ, the module's arguments inside) while a task runs: a 0600
            # temporary in its 0700 ansible-local-* dir, copied to a 0700 ansible-tmp-* dir, both removed when the
            # task ends (a wider mode is reported as "PATH (mode ..)" above, never excused)
            if where.startswith((ansible_tmp + "ansible-local-", ansible_tmp + "ansible-tmp-")):
                continue
            # a file gone by the end beside a holder: its atomic write's temporary (acme.json.tmp,
            # hasura-jwt.env.tmp, made 0600), or the holder itself (the peer's files, which `vpn peer remove`
            # deletes; their modes checked while they existed); a wider mode would be reported as "PATH (mode ..)",
            # never excused
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
        assert sorted(set(kept_hits)) == [], f"secrets in kept runner files: {sorted(set(kept_hits))}"
        assert journal_hits == [], f"secrets in the journal (syslog): {journal_hits}"
        assert kept_modes == [], f"kept runner files wider than 0700/0600: {kept_modes}"
        _check_kept_runs(kept, vault_pass)
        _check_qr_files(home, sampler)
        # and the holders really hold them (so the scan could find them)
        assert ("vault password", vault_pass) in leaks
        assert ("acme app password", os.path.join(home, "credentials", "acme.json")) in leaks
        assert ("wireguard peer private key", peer["config_file"]) in leaks
        assert ("wireguard hub private key", os.path.join(home, "network", "etc", "wireguard", "wg0.conf")) in leaks
        assert ("jwt hs256 secret", jwt_env) in leaks
        assert ("wireguard peer qr png", peer["qr_file"]) in leaks and ("wireguard peer qr text", qr_txt) in leaks
        hub_clients = os.path.join(home, "network", "etc", "berqenas", "wireguard", "wg0", "clients")
        assert ("wireguard peer qr png", os.path.join(hub_clients, "laptop1.png")) in leaks
        assert os.listdir(tmpdir) == [] or all(not n.startswith("berqenas-run-") for n in os.listdir(tmpdir))
    finally:
        _publish_netns(home)  # (again, if `local up` failed before it was)
        purge = ("local", "down", "--purge", "--json")
        purged = cli(*purge, check=False)
        journal.close()
        hasura.double.environment.pop("BERQENAS_ACME_DATABASE_URL", None)
        server.drop_database(src)
        shutil.rmtree(tmpdir, ignore_errors=True)
    # the cleanup's own output (after the sampler stopped: its streams only)
    assert purged.rc == 0, purged
    assert _output_leaks([(purge, purged, set())], known) == []


def _output_leaks(outputs, known: dict) -> list:
    """(secret, stream) for each known secret in a command's stderr, or in its stdout unless it may print it."""
    leaks = []
    for args, r, allowed in outputs:
        for name, value in known.items():
            if value in r.stderr.encode():
                leaks.append((name, f"stderr of berqenas {' '.join(args)}"))
            if value in r.stdout.encode() and name not in allowed:
                leaks.append((name, f"stdout of berqenas {' '.join(args)}"))
    return leaks


def _check_kept_runs(kept: str, vault_pass: str) -> None:
    """The kept copies are whole runs (so the scan above read what runner wrote): each has its command, stdout and
    job events; the vault password reached every run that needed it as ANSIBLE_VAULT_PASSWORD_FILE, a path."""
    # in the order the runs ended (each copy is made and filled when its run ends; names have a 1 s resolution)
    runs = sorted(os.listdir(kept), key=lambda r: os.stat(os.path.join(kept, r)).st_mtime_ns)
    stems = {r.split("-")[1] for r in runs}  # <UTC time>-<playbook>-<random>
    assert {"local_up", "tenant_create", "tenant_show", "vpn_apply", "hasura_status",
            "remotedb_test", "sync_run", "sync_status", "tenant_list"} <= stems, runs
    vaulted = {}
    for run_dir in runs:
        (ident,) = os.listdir(os.path.join(kept, run_dir, "artifacts"))
        art = os.path.join(kept, run_dir, "artifacts", ident)
        events = [e for e in os.listdir(os.path.join(art, "job_events")) if e.endswith(".json")]
        assert events and not any(e.endswith("-partial.json") for e in events), (run_dir, events)
        assert os.path.getsize(os.path.join(art, "stdout")) > 0, run_dir
        with open(os.path.join(art, "command")) as f:
            command = json.load(f)
        assert "ansible-playbook" in command["command"][0], command["command"]
        vaulted[run_dir] = command["env"].get("ANSIBLE_VAULT_PASSWORD_FILE") == vault_pass
    # the vault is made on first need (`remotedb add`); from then on every run is handed the password file's path,
    # the runs that decrypt (Hasura's admin secret, the remote password) too
    first = [vaulted[r] for r in runs].index(True)
    assert all(vaulted[r] for r in runs[first:]), vaulted
    assert all(v for r, v in vaulted.items() if r.split("-")[1] in ("hasura_status", "remotedb_test", "sync_run"))


def _check_qr_modes(home: str, peer: dict, qr_txt: str) -> None:
    """QR codes exist only as 0600 files in 0700 directories of the instance (the hub's clients/ and vpn/NAME/):
    a copy of their bytes anywhere else the sampler looked is a hit; here the modes (_check_qr_files: no PNG or
    .qr.txt file ever seen outside the instance)."""
    hub_clients = os.path.join(home, "network", "etc", "berqenas", "wireguard", "wg0", "clients")
    for path in (peer["qr_file"], qr_txt, os.path.join(hub_clients, "laptop1.png"),
                 os.path.join(hub_clients, "laptop1.qr.txt")):
        assert path.startswith(home + os.sep), path
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, (path, oct(os.stat(path).st_mode))
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700, path
    with open(peer["qr_file"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _check_qr_files(home: str, sampler) -> None:
    outside = sorted({w for data, wheres in sampler.seen.items() for w in wheres
                      if not w.startswith(("/proc/", home + os.sep))
                      and (data.startswith(b"\x89PNG") or w.endswith((".png", ".qr.txt")))})
    assert outside == [], f"QR files outside the instance: {outside}"


def _check_journal(journal: SyslogCapture, known: dict) -> list:
    """The secrets (plain and base64) in the run's syslog messages; and the capture really heard the run: module
    invocations logged on the controller (the tenant, remote database and Hasura modules, which take secrets) and
    on the hub (wireguard_server, in the anchor's namespaces)."""
    modules = {m.decode() for m in re.findall(rb"ansible-([\w.]+): Invoked", b"\n".join(journal.messages))}
    # these take secrets (remote password, admin secret) as no_log arguments: logged masked, so no hit
    assert {"berqenas.platform.wireguard_server", "berqenas.platform.postgres_tenants", "berqenas.platform.mssql_ping",
            "berqenas.platform.hasura_table_info"} <= modules, (modules, len(journal.messages))
    return sorted({(name, f"syslog message {i}") for name, v in known.items() for i, m in enumerate(journal.messages)
                   if any(x in m for x in _forms(v))})

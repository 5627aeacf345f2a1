"""`berqenas local` as an unprivileged user (nobody, through setpriv: no capabilities left).

- `local up` (the default network) fails with exit code 1 before anything is touched, naming what it needs (root,
  CAP_NET_ADMIN, CAP_SYS_ADMIN) and the way out (--no-network): no home, no namespace, no cluster directory.
- `local up --no-network` works: PostgreSQL runs as that user under the home; `local down --purge` removes it.

The user needs to read the checkout's venv (tests/support/env.VENV_BIN); when it cannot (a checkout under a 0700
directory), both tests run the same product code in a child process that dropped to that user instead:
module_utils/localnet.privilege_problem for the refusal, module_utils/pgcluster for the cluster."""

import json
import os
import pwd
import shutil
import subprocess
import tempfile

import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import localnet, pgcluster

from tests.support import env as support_env
from tests.support import local_instances as li

pytestmark = pytest.mark.local

USER = pwd.getpwnam("nobody")
DROP = [f"--reuid={USER.pw_uid}", f"--regid={USER.pw_gid}", "--clear-groups", "--"]


@pytest.fixture(scope="module")
def nobody():
    """A directory of the user's own (its HOME, TMPDIR, API key, audit log, ansible.cfg) and its CLI environment;
    None when the user cannot run the venv's python."""
    from berqenas_orchestrator import apikeys

    d = tempfile.mkdtemp(prefix="bq-nonroot-", dir="/tmp")
    try:
        os.chmod(d, 0o700)
        ks, kf = os.path.join(d, "security", "apikeys.json"), os.path.join(d, "security", "admin.key")
        _, text = apikeys.Keystore(ks).init("nonroot")
        apikeys.write_key_file(kf, text)
        for sub in (".ansible/tmp", "tmp"):
            os.makedirs(os.path.join(d, sub))
        with open(os.path.join(d, "ansible.cfg"), "w") as f:  # nobody's passwd home is /nonexistent
            f.write("[defaults]\nremote_tmp = %s\n" % os.path.join(d, ".ansible", "tmp"))
        for root, _dirs, files in os.walk(d):
            for path in [root, *(os.path.join(root, n) for n in files)]:
                os.chown(path, USER.pw_uid, USER.pw_gid)
        env = dict(support_env.ansible_env(d), BERQENAS_HOME=os.path.join(d, "home"), TMPDIR=os.path.join(d, "tmp"),
                   ANSIBLE_CONFIG=os.path.join(d, "ansible.cfg"), USER="nobody", LOGNAME="nobody",
                   **{apikeys.ENV_KEYSTORE: ks, apikeys.ENV_KEY_FILE: kf,
                      "BERQENAS_AUDIT_LOG": os.path.join(d, "security", "audit.log")})
        probe = subprocess.run(["setpriv", *DROP, support_env.PYTHON, "-c", "import berqenas_orchestrator, ansible"],
                               env=env, capture_output=True, text=True, timeout=120, cwd="/")
        yield {"dir": d, "home": env["BERQENAS_HOME"], "env": env if probe.returncode == 0 else None}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _cli(nobody, *args, timeout=300):
    res = subprocess.run(["setpriv", *DROP, os.path.join(support_env.VENV_BIN, "berqenas"), *args], env=nobody["env"],
                         capture_output=True, text=True, timeout=timeout, cwd="/")
    return res.returncode, res.stdout, res.stderr


def _as_nobody(fn, timeout=120):
    """FN() in a child of this process that dropped to nobody (the collection is imported already); its result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(USER.pw_gid, USER.pw_gid, USER.pw_gid)
            os.setresuid(USER.pw_uid, USER.pw_uid, USER.pw_uid)
            os.write(w, json.dumps(fn()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and out, status
    return json.loads(out)


def _cluster_as_nobody(base):
    c = pgcluster.Cluster(base)
    c.init()
    c.start()
    c.wait_ready()
    with open(os.path.join(c.data_dir, "postmaster.pid")) as f:
        pid = int(f.readline())
    result = {"uid": os.stat(f"/proc/{pid}").st_uid, "running": c.running()}
    c.purge()
    return result


def test_local_up_as_non_root_is_refused_naming_what_it_needs_and_touches_nothing(nobody):
    lay = localnet.layout(nobody["home"])
    if nobody["env"] is None:  # the venv is out of reach: the check the CLI and the module make, as that user
        msg = _as_nobody(lambda: localnet.privilege_problem(localnet.effective_capabilities()))
    else:
        rc, stdout, stderr = _cli(nobody, "local", "up", "--json")
        assert rc == 1, (rc, stdout, stderr)
        msg = json.loads(stdout)["error"]
        with open(os.path.join(nobody["dir"], "security", "audit.log")) as f:
            assert json.loads(f.read().splitlines()[-1])["outcome"] == "failed"
    assert "needs root" in msg and "CAP_NET_ADMIN" in msg and "CAP_SYS_ADMIN" in msg and "--no-network" in msg, msg
    assert not os.path.exists(nobody["home"])
    assert lay["netns"] not in li.namespaces() and li.cluster_dirs(nobody["home"]) == []


def test_local_up_no_network_as_non_root_runs_postgres_as_that_user_and_down_purge_removes_it(nobody):
    home = nobody["home"]
    if nobody["env"] is None:  # the same cluster code local_postgres runs, as that user
        res = _as_nobody(lambda: _cluster_as_nobody(os.path.join(home, "pg")))
        assert res == {"uid": USER.pw_uid, "running": True}, res
        assert not os.path.exists(os.path.join(home, "pg"))
        return
    purged = False
    try:
        rc, stdout, stderr = _cli(nobody, "local", "up", "--no-network", "--json")
        assert rc == 0, (rc, stdout, stderr)
        status = json.loads(stdout)
        assert status["netns"] is None and status["socket_dir"].startswith(home + os.sep), status
        with open(os.path.join(os.path.dirname(status["socket_dir"]), "data", "postmaster.pid")) as f:
            pid = int(f.readline())
        assert os.stat(f"/proc/{pid}").st_uid == USER.pw_uid  # the server runs as nobody, not as root or postgres
        assert li.postgres_answers(status["port"])
        rc, stdout, stderr = _cli(nobody, "local", "down", "--purge", "--json")
        assert rc == 0, (rc, stdout, stderr)
        purged = True
        assert not os.path.exists(home) and not li.postgres_answers(status["port"], timeout=5)
        li.wait_gone(pid)
    finally:
        if not purged:
            _cli(nobody, "local", "down", "--purge", "--json")

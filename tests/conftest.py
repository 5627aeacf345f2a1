"""Session fixtures: every real component a test needs starts here, so `pytest -m <marker>` works alone.

- ``pg_cluster``: a throwaway PostgreSQL 15 cluster (initdb + pg_ctl as ``postgres``), superuser over a
  0700 socket directory, scram-sha-256 on 127.0.0.1.
- ``test_home``: a throwaway HOME / ANSIBLE_HOME so nothing is written under /root.
- ``ansible_env``: environment for child ansible-playbook / berqenas processes.
"""

import os
import shutil
import signal
import tempfile

import pytest

from tests.support import env as support_env

support_env.setup_import_path()

# Tests press Ctrl-C (SIGINT) on the commands they start, as a user at a terminal would. A suite started in the
# background by a shell without job control (`nohup ... &`, some CI runners) inherits SIGINT ignored, and an
# ignored signal stays ignored across exec: every child would shrug the Ctrl-C off. A handler (reset to the
# default on exec) gives the children a terminal's SIGINT.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Each capability's harness registers its fixtures as tests/support/fixtures_<area>.py (loaded here).
pytest_plugins = sorted(
    "tests.support." + f[:-3]
    for f in os.listdir(os.path.join(os.path.dirname(__file__), "support"))
    if f.startswith("fixtures_") and f.endswith(".py")
)


@pytest.fixture(scope="session")
def test_home():
    home = tempfile.mkdtemp(prefix="bq-home-")
    os.chmod(home, 0o700)  # like a real home; the harness must cope with a 0700 parent
    os.makedirs(os.path.join(home, ".ansible", "tmp"), exist_ok=True)
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def ansible_env(test_home):
    """... with the session's admin API key (tests/support/cli.py session_key_env), so every CLI run is allowed."""
    from tests.support.cli import session_key_env

    return dict(support_env.ansible_env(test_home), **session_key_env(test_home))


@pytest.fixture(scope="session")
def pg_cluster():
    from tests.support.pg import TestCluster

    cluster = TestCluster()
    yield cluster
    cluster.stop()

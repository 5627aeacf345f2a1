"""The Prometheus file of `berqenas health` stays whole when its writer is killed -9 mid-write."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from berqenas_orchestrator.cli import health as cli_health
from prometheus_client.parser import text_string_to_metric_families

from tests.support import env as support_env
from tests.unit.test_health import _checks

pytestmark = pytest.mark.health


WRITER = textwrap.dedent("""
    import sys
    from berqenas_orchestrator.cli import health
    from tests.unit.test_health import _checks
    checks = _checks(int(sys.argv[2]))
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        health.write_prometheus(sys.argv[1], checks, now=n)
""")


def test_prometheus_file_is_whole_after_kill_9_mid_write(tmp_path):
    """A writer rewriting a big file in a loop is killed -9 at arbitrary moments: the file always parses
    whole (the old one or the new one: temp file + rename)."""
    path = tmp_path / "berqenas.prom"
    n = 1000
    cli_health.write_prometheus(str(path), _checks(n), now=0)
    expected = len(path.read_text().splitlines())
    for i in range(4):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n)], stdout=subprocess.PIPE,
                             cwd=support_env.REPO)
        assert p.stdout.readline().strip() == b"ready"
        time.sleep(0.05 + 0.037 * i)
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        text = path.read_text()
        assert len(text.splitlines()) == expected
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        assert len(fams["berqenas_wireguard_peer_latest_handshake_age_seconds"].samples) == n
    # kill -9 leaves the writer's temporary file behind; its name does not end in .prom, which the textfile
    # collector reads
    assert all(not f.endswith(".prom") or f == "berqenas.prom" for f in os.listdir(tmp_path))

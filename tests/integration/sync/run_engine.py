"""Run one sync job in a child process (for crash and concurrency tests).

Reads a JSON document from stdin (so the passwords never appear in argv):
{"source": {PymssqlSource kwargs}, "pg": {psycopg.connect kwargs}, "job", "tenant", "tables", "engine": {...},
 "kill_at": N (optional), "reverse_batch": N (optional: change-log entries per reverse batch)}
Prints the result as JSON on stdout; exit 0 ok, 3 locked, 1 other failure.
With ``kill_at``, the process SIGKILLs its own process group just before its N-th PostgreSQL statement
(execute or COPY, counted from 1): a crash point that a seed reproduces, unlike a timer.
"""

import json
import os
import signal
import sys

from tests.support.env import setup_import_path

setup_import_path()

import psycopg  # noqa: E402
from ansible_collections.berqenas.platform.plugins.module_utils import mssql as M  # noqa: E402
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S  # noqa: E402


class KillingCursor(psycopg.Cursor):
    kill_at = None
    count = 0

    @classmethod
    def _tick(cls):
        cls.count += 1
        if cls.kill_at is not None and cls.count >= cls.kill_at:
            os.killpg(os.getpgid(0), signal.SIGKILL)

    def execute(self, *a, **kw):
        self._tick()
        return super().execute(*a, **kw)

    def copy(self, *a, **kw):
        self._tick()
        return super().copy(*a, **kw)


def main():
    cfg = json.load(sys.stdin)
    KillingCursor.kill_at = cfg.get("kill_at")
    source = M.PymssqlSource(**cfg["source"])
    conn = psycopg.connect(autocommit=False, cursor_factory=KillingCursor, **cfg["pg"])
    specs = S.table_specs(cfg["tables"], cfg["tenant"])
    eng = S.SyncEngine(source, conn, job=cfg["job"], owner_role=cfg["tenant"] + "_owner",
                       log=lambda m: print(m, file=sys.stderr, flush=True), **cfg.get("engine", {}))
    if cfg.get("reverse_batch"):
        eng.reverse_batch = int(cfg["reverse_batch"])
    try:
        out = eng.run(specs)
    except S.LockedError as e:
        print(json.dumps({"status": "locked", "msg": str(e)}))
        return 3
    except (S.SyncError, M.SourceError) as e:
        print(json.dumps({"status": "failed", "msg": str(e)}))
        return 1
    print(json.dumps({"status": "ok", **out}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

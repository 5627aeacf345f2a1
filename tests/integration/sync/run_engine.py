"""Run one sync job in a child process (for crash and concurrency tests).

Reads a JSON document from stdin (so the passwords never appear in argv):
{"source": {PymssqlSource kwargs}, "pg": {psycopg.connect kwargs}, "job", "tenant", "tables", "engine": {...}}
Prints the result as JSON on stdout; exit 0 ok, 3 locked, 1 other failure.
"""

import json
import sys

from tests.support.env import setup_import_path

setup_import_path()

import psycopg  # noqa: E402
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S  # noqa: E402


def main():
    cfg = json.load(sys.stdin)
    source = S.PymssqlSource(**cfg["source"])
    conn = psycopg.connect(autocommit=False, **cfg["pg"])
    specs = S.table_specs(cfg["tables"], cfg["tenant"])
    eng = S.SyncEngine(source, conn, job=cfg["job"], owner_role=cfg["tenant"] + "_owner",
                       log=lambda m: print(m, file=sys.stderr, flush=True), **cfg.get("engine", {}))
    try:
        out = eng.run(specs)
    except S.LockedError as e:
        print(json.dumps({"status": "locked", "msg": str(e)}))
        return 3
    except S.SyncError as e:
        print(json.dumps({"status": "failed", "msg": str(e)}))
        return 1
    print(json.dumps({"status": "ok", **out}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The harness's throwaway PostgreSQL: one cluster per test session (module_utils.pgcluster)."""

import contextlib
import os
import tempfile

import psycopg

from tests.support.env import setup_import_path

setup_import_path()
from ansible_collections.berqenas.platform.plugins.module_utils.pgcluster import Cluster  # noqa: E402


class TestCluster:
    """A started cluster: ``conninfo(db)`` for the superuser, ``connect(db, **kw)`` for psycopg."""

    def __init__(self, base=None):
        # short path under /tmp: reachable by the postgres user and far below the 107-byte socket limit
        self.root = tempfile.mkdtemp(prefix="bq-pg-", dir=base or "/tmp")
        os.chmod(self.root, 0o711)
        self.cluster = Cluster(os.path.join(self.root, "c"))
        self.cluster.init()
        self.cluster.start()
        self.cluster.wait_ready()

    @property
    def host(self):
        return self.cluster.socket_dir

    @property
    def port(self):
        return int(self.cluster.port)

    @property
    def superuser(self):
        return self.cluster.superuser

    def conninfo(self, dbname="postgres", **kw):
        d = self.cluster.conninfo(dbname)
        d.update(kw)
        return d

    def dsn(self, dbname="postgres"):
        return psycopg.conninfo.make_conninfo(**self.conninfo(dbname))

    def connect(self, dbname="postgres", autocommit=True, **kw):
        return psycopg.connect(**self.conninfo(dbname, **kw), autocommit=autocommit)

    def tcp_connect(self, dbname, user, password, **kw):
        """A client connection over TCP 127.0.0.1 (scram-sha-256), as a tenant would connect."""
        return psycopg.connect(host="127.0.0.1", port=self.port, dbname=dbname, user=user, password=password,
                               connect_timeout=5, autocommit=True, **kw)

    def create_database(self, name):
        with self.connect() as c:
            c.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(name)))
            c.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        return name

    def stop(self):
        with contextlib.suppress(Exception):
            self.cluster.purge()
        import shutil

        shutil.rmtree(self.root, ignore_errors=True)

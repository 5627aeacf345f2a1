"""What a refused command must leave as it was: a PostgreSQL catalog snapshot (roles, memberships, schemas and
their ACLs, databases, default ACLs, the relations outside the system schemas) and a snapshot of files."""

import os

CATALOG = {
    "roles": "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, rolconnlimit, rolconfig::text "
             "FROM pg_roles ORDER BY 1",
    "members": "SELECT roleid::regrole::text, member::regrole::text, admin_option FROM pg_auth_members ORDER BY 1, 2",
    "schemas": "SELECT nspname, nspowner::regrole::text, nspacl::text FROM pg_namespace ORDER BY 1",
    "databases": "SELECT datname, datacl::text FROM pg_database ORDER BY 1",
    "default_acl": "SELECT defaclrole::regrole::text, defaclnamespace, defaclobjtype::text, defaclacl::text "
                   "FROM pg_default_acl ORDER BY 1, 2, 3",
    "relations": "SELECT relnamespace::regnamespace::text, relname, relkind::text, relacl::text FROM pg_class "
                 "WHERE relnamespace::regnamespace::text NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
                 "ORDER BY 1, 2",
}


def catalog(pg_cluster, db):
    """The catalog of the cluster (roles, databases) and of database DB (schemas, ACLs, relations)."""
    with pg_cluster.connect(db, connect_timeout=10) as c:
        return {k: c.execute(q).fetchall() for k, q in CATALOG.items()}


def files(*dirs, skip=()):
    """{path: bytes} of every file under DIRS, dot files too (names in SKIP left out)."""
    out = {}
    for d in dirs:
        for base, subdirs, names in os.walk(d):
            subdirs[:] = [s for s in subdirs if s not in skip]
            for f in names:
                if f not in skip:
                    with open(os.path.join(base, f), "rb") as fh:
                        out[os.path.join(base, f)] = fh.read()
    return out

"""Tenants cannot see each other: every cross-tenant attempt is denied with its exact SQLSTATE (real server)."""

import pytest

from tests.support import isolation

pytestmark = pytest.mark.tenants


def test_own_schema_works_and_belongs_to_the_owner(three_tenants):
    cli, status, creds = three_tenants
    facts = isolation.prepare_own_schema("127.0.0.1", status["port"], status["database"], "acme", creds["acme"])
    assert facts["rows"] >= 1
    assert facts["owner"] == "acme_owner"  # created by acme_app, owned by the tenant's owner role
    assert facts["ro_rows"] == facts["rows"]  # the read-only role reads it through default privileges


@pytest.mark.parametrize("who,what,sql_text,expected", isolation.ATTEMPTS,
                         ids=[f"{a[0]}-{a[1].replace(' ', '_')}" for a in isolation.ATTEMPTS])
def test_cross_tenant_attempt_is_denied(three_tenants, who, what, sql_text, expected):
    cli, status, creds = three_tenants
    for name in creds:
        isolation.prepare_own_schema("127.0.0.1", status["port"], status["database"], name, creds[name])
    for name in sorted(creds):
        for other in sorted(creds):
            if other == name:
                continue
            got = isolation.attempt("127.0.0.1", status["port"], status["database"], name, other, creds[name], who,
                                    sql_text)
            assert got == expected, f"{name}_{who}: {what} against {other}: SQLSTATE {got}, expected {expected}"


def test_wrong_password_is_refused(three_tenants):
    cli, status, creds = three_tenants
    bad = {"user": creds["acme"]["app"]["user"], "password": creds["globex"]["app"]["password"]}
    with pytest.raises(isolation.psycopg.OperationalError, match="password authentication failed"):
        isolation.connect("127.0.0.1", status["port"], status["database"], bad)


def test_refused_connection_sqlstate_is_the_servers_own_reply(three_tenants):
    """The 28000 of a refused CONNECT is read from the server's ErrorResponse, never inferred from a message."""
    cli, status, creds = three_tenants
    user = creds["acme"]["app"]["user"]
    assert isolation.startup_sqlstate("127.0.0.1", status["port"], user, "postgres") == "28000"
    # its own database: the server asks for the password instead of refusing (no SQLSTATE to read)
    assert isolation.startup_sqlstate("127.0.0.1", status["port"], user, status["database"]) is None

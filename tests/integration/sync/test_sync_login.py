"""Source errors are classified by the server's error number, not by message text (issue 10)."""

import socket

import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import mssql as M

from .emu import source_kwargs

pytestmark = pytest.mark.sync


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_login_failure_by_number_then_network_error_is_transient(emulated_mssql_db):
    db = emulated_mssql_db
    db.faults.refuse_logins = True
    try:
        with pytest.raises(M.SourceError) as e:
            M.PymssqlSource(**source_kwargs(db)).connect()
    finally:
        db.faults.refuse_logins = False
    assert not e.value.transient and "login failed" in str(e.value), str(e.value)
    # pymssql keeps the last server message process-wide: the next network error's text still carries
    # "Login failed"; it must be classified (and retried) as the network error it is
    with pytest.raises(M.SourceError) as e:
        M.PymssqlSource(**source_kwargs(db, port=closed_port(), login_timeout=2)).connect()
    assert e.value.transient, str(e.value)
    assert "login failed" not in str(e.value).lower()

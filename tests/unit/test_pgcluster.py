import psycopg
import pytest

pytestmark = pytest.mark.unit


def test_cluster_accepts_superuser_over_socket_and_scram_over_tcp(pg_cluster):
    with pg_cluster.connect() as c:
        c.execute("CREATE ROLE harness_probe LOGIN PASSWORD 'probe-pw'")
        try:
            assert c.execute("SHOW password_encryption").fetchone()[0] == "scram-sha-256"
            with pg_cluster.tcp_connect("postgres", "harness_probe", "probe-pw") as t:
                assert t.execute("SELECT current_user").fetchone()[0] == "harness_probe"
            with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
                pg_cluster.tcp_connect("postgres", "harness_probe", "wrong")
        finally:
            c.execute("DROP ROLE harness_probe")


def test_port_free_sees_a_listener():
    import socket

    from ansible_collections.berqenas.platform.plugins.module_utils import pgcluster

    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert not pgcluster.port_free(port)  # what local_postgres asks before it reuses a saved port
    finally:
        s.close()
    assert pgcluster.port_free(port)

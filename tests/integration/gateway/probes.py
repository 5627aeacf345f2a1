"""TCP listeners and probes for the gateway tests (argv lists for any namespace or machine runner).

The listener answers every connection with the client address it saw (``"<ip>\\n"``), so a probe proves
both reachability and whether NAT rewrote the source.
"""

LISTENER = r"""
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print("listening", flush=True)
while True:
    c, addr = s.accept()
    try:
        c.sendall((addr[0] + "\n").encode())
    finally:
        c.close()
"""

PROBE = r"""
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
except OSError as e:
    print("BLOCKED %s" % type(e).__name__)
    sys.exit(0)
c.settimeout(0.5)
try:
    print("OPEN " + (c.recv(100).decode().strip() or "-"))
except OSError:  # connected; the service does not speak first (PostgreSQL)
    print("OPEN -")
"""


def listener_argv(addr, port, python="python3"):
    return [python, "-c", LISTENER, addr, str(port)]


def probe_argv(addr, port, timeout=1.5, python="python3"):
    return [python, "-c", PROBE, addr, str(port), str(timeout)]


def probe_result(stdout):
    """("OPEN", seen_client_address) or ("BLOCKED", error name)."""
    word, _, rest = stdout.strip().partition(" ")
    assert word in ("OPEN", "BLOCKED"), stdout
    return word, rest

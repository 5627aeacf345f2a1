"""Pure WireGuard logic: validation, allocation (no renumbering, tenant ranges, full ranges), rendering, dumps."""

import base64
import datetime
import ipaddress
import os
import subprocess

import pytest

from tests.support import env as support_env

support_env.setup_import_path()

from ansible_collections.berqenas.platform.plugins.module_utils import wireguard as wg  # noqa: E402

pytestmark = pytest.mark.unit

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)


def iface(**kw):
    args = dict(name="wg0", addresses=["198.51.100.1/24", "fd00:b::1/64"], listen_port=51820, endpoint="192.0.2.1")
    args.update(kw)
    return wg.validate_interface(**args)


def peers(specs, i=None):
    return wg.validate_peers(specs, i or iface())


def key():
    return wg.public_key(wg.generate_private_key())


def test_keys_match_wg_tool():
    priv = wg.generate_private_key()
    out = subprocess.run(["wg", "pubkey"], input=priv + "\n", capture_output=True, text=True, check=True).stdout
    assert out.strip() == wg.public_key(priv)
    assert len(base64.b64decode(wg.generate_psk())) == 32


def test_keypairs_match_wg_tool_and_rfc7748():
    # public keys are computed as X25519(private, 9): the RFC 7748 section 6.1 vectors and wg(8) agree
    vectors = [
        ("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
         "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"),
        ("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
         "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"),
    ]  # fmt: skip
    for priv_hex, pub_hex in vectors:
        priv = base64.b64encode(bytes.fromhex(priv_hex)).decode()
        assert base64.b64decode(wg.public_key(priv)).hex() == pub_hex
    pairs = [wg.generate_keypair() for _ in range(5)]
    assert len({priv for priv, _pub in pairs}) == 5
    for priv, pub in pairs:
        out = subprocess.run(["wg", "pubkey"], input=priv + "\n", capture_output=True, text=True, check=True).stdout
        assert out.strip() == pub == wg.public_key(priv)


@pytest.mark.parametrize(
    "value, msg",
    [
        ("no-pe!", "not base64"),
        ("A" * 43 + "=", "all-zero"),
        (base64.b64encode(b"x" * 31).decode(), "32 bytes"),
        (3, "base64"),
    ],
)
def test_bad_keys(value, msg):
    with pytest.raises(wg.WireGuardError, match=msg):
        wg.check_key(value, "public_key")


@pytest.mark.parametrize(
    "spec, msg",
    [
        ([{"name": "Bad", "tenant": "acme"}], "invalid peer name"),
        ([{"name": "a" * 33, "tenant": "acme"}], "invalid peer name"),
        ([{"name": "-a", "tenant": "acme"}], "invalid peer name"),
        ([{"name": "a", "tenant": "acme"}, {"name": "a", "tenant": "globex"}], "duplicate peer name"),
        ([{"name": "{{ 6*7 }}", "tenant": "acme"}], "template syntax"),
        ([{"name": "a", "tenant": "{% if 1 %}x{% endif %}"}], "template syntax"),
        ([{"name": "a", "tenant": "acme", "expires": "2026-12-31"}], "timezone"),
        ([{"name": "a", "tenant": "acme", "expires": "2026-02-30T00:00:00Z"}], "not a valid date"),
        ([{"name": "a", "tenant": "acme", "addresses": ["203.0.113.9"]}], "outside the VPN networks"),
        ([{"name": "a", "tenant": "acme", "allowed_ips": ["203.0.113.9/24"]}], "host bits zero"),
        ([{"name": "a", "tenant": "acme", "enabled": "yes"}], "enabled must be"),
        ([{"name": "a", "tenant": "acme", "colour": "red"}], "unknown keys"),
        ([{"name": "a", "tenant": "acme", "persistent_keepalive": 70000}], "persistent_keepalive"),
        ([{"name": "a\nb", "tenant": "acme"}], "invalid peer name|line breaks"),
    ],
)
def test_bad_peers(spec, msg):
    with pytest.raises(wg.WireGuardError, match=msg):
        peers(spec)


def test_same_public_key_twice():
    k = key()
    with pytest.raises(wg.WireGuardError, match="already used by peer a"):
        peers([{"name": "a", "tenant": "acme", "public_key": k}, {"name": "b", "tenant": "acme", "public_key": k}])


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"name": "wg-this-is-too-long"}, "interface name"),
        ({"listen_port": 0}, "listen_port"),
        ({"listen_port": 65536}, "listen_port"),
        ({"addresses": []}, "at least one address"),
        ({"addresses": ["198.51.100.1/24", "192.0.2.1/24"]}, "at most one IPv4"),
        ({"addresses": ["198.51.100.1/31"]}, "too small"),
        ({"mtu": 100}, "mtu"),
        ({"mtu": 9001}, "mtu"),
        ({"client_keepalive": 65536}, "persistent_keepalive"),
        ({"client_keepalive": "25s"}, "persistent_keepalive"),
        ({"endpoint": "bad host!"}, "endpoint"),
        ({"endpoint": "vpn.example.org:99999"}, "endpoint port"),
        ({"post_up": ["echo {{ x }}"]}, "template syntax"),
        ({"post_up": ["a\nb"]}, "line breaks"),
        ({"tenant_ranges": {"acme": ["192.0.2.0/28"]}}, "outside the VPN networks"),
        ({"tenant_ranges": {"acme": ["198.51.100.0/28"], "globex": ["198.51.100.8/29"]}}, "overlap"),
    ],
)
def test_bad_interface(kw, msg):
    with pytest.raises(wg.WireGuardError, match=msg):
        iface(**kw)


def test_expiry_parsing():
    assert wg.parse_expiry("2026-12-31T00:00:00Z") == datetime.datetime(2026, 12, 31, tzinfo=datetime.UTC)
    assert wg.parse_expiry("2026-12-31T02:00:00+02:00").hour == 0
    assert wg.parse_expiry(None) is None
    assert wg.format_expiry(wg.parse_expiry("2026-12-31 00:00:00+00:00")) == "2026-12-31T00:00:00Z"


def test_allocation_is_stable_across_reorder_insert_and_removal():
    i = iface()
    p1 = peers([{"name": n, "tenant": "acme"} for n in ("a", "b", "c")], i)
    alloc = wg.allocate(i, p1, {})
    state = wg.build_state(i, p1, {}, alloc)
    assert state["peers"]["a"]["addresses"] == ["198.51.100.2", "fd00:b::2"]
    assert state["peers"]["c"]["addresses"] == ["198.51.100.4", "fd00:b::4"]
    # b removed, z inserted first, order reversed: nobody renumbered, z takes the lowest free
    p2 = peers([{"name": n, "tenant": "acme"} for n in ("z", "c", "a")], i)
    state2 = wg.build_state(i, p2, state, wg.allocate(i, p2, state))
    assert state2["peers"]["a"]["addresses"] == state["peers"]["a"]["addresses"]
    assert state2["peers"]["c"]["addresses"] == state["peers"]["c"]["addresses"]
    assert state2["peers"]["z"]["addresses"] == ["198.51.100.3", "fd00:b::3"]
    assert "b" not in state2["peers"]
    # keys survive
    assert state2["peers"]["a"]["private_key"] == state["peers"]["a"]["private_key"]
    assert state2["peers"]["a"]["preshared_key"] == state["peers"]["a"]["preshared_key"]


def test_tenant_ranges_and_fixed_addresses():
    i = iface(addresses=["198.51.100.1/24"], tenant_ranges={"acme": ["198.51.100.64/30"]})
    p = peers([
        {"name": "g1", "tenant": "globex"},
        {"name": "a1", "tenant": "acme"},
        {"name": "a2", "tenant": "acme"},
        {"name": "f", "tenant": "globex", "addresses": ["198.51.100.200"]},
    ], i)  # fmt: skip
    alloc = wg.allocate(i, p, {})
    assert [str(x) for x in alloc["a1"]] == ["198.51.100.65"]
    assert [str(x) for x in alloc["a2"]] == ["198.51.100.66"]
    assert [str(x) for x in alloc["g1"]] == ["198.51.100.2"]
    assert [str(x) for x in alloc["f"]] == ["198.51.100.200"]
    p3 = peers([{"name": n, "tenant": "acme"} for n in ("a1", "a2", "a3")], i)
    with pytest.raises(wg.WireGuardError, match=r"198.51.100.64/30 \(tenant acme\) is full"):
        wg.allocate(i, p3, {})
    with pytest.raises(wg.WireGuardError, match="outside its range"):
        wg.allocate(i, peers([{"name": "x", "tenant": "globex", "addresses": ["198.51.100.65"]}], i), {})
    with pytest.raises(wg.WireGuardError, match="server's own address"):
        wg.allocate(i, peers([{"name": "x", "tenant": "globex", "addresses": ["198.51.100.1"]}], i), {})


def test_full_range():
    i = iface(addresses=["198.51.100.1/29"])  # .2 - .6 free
    ok = peers([{"name": "p%d" % n, "tenant": "acme"} for n in range(5)], i)
    assert len(wg.allocate(i, ok, {})) == 5
    with pytest.raises(wg.WireGuardError, match="198.51.100.0/29 is full"):
        wg.allocate(i, peers([{"name": "p%d" % n, "tenant": "acme"} for n in range(6)], i), {})


def test_render_server_and_clients_and_redaction():
    i = iface()
    ck = key()
    p = peers([
        {"name": "a", "tenant": "acme"},
        {"name": "b", "tenant": "globex", "public_key": ck, "allowed_ips": ["203.0.113.0/24"]},
        {"name": "off", "tenant": "acme", "enabled": False},
        {"name": "old", "tenant": "acme", "expires": "2026-01-01T00:00:00Z"},
    ], i)  # fmt: skip
    st = wg.build_state(i, p, {}, wg.allocate(i, p, {}))
    spriv = wg.generate_private_key()
    conf, native = wg.render_server(i, spriv, p, st, NOW)
    assert conf.count("[Peer]") == 2 and native.count("[Peer]") == 2
    assert "AllowedIPs = 198.51.100.3/32, fd00:b::3/128, 203.0.113.0/24" in conf
    assert "Address = 198.51.100.1/24, fd00:b::1/64" in conf and "Address" not in native
    red = wg.redact(conf)
    assert spriv not in red and st["peers"]["a"]["preshared_key"] not in red and "<redacted>" in red
    ca = wg.render_client(i, wg.public_key(spriv), p[0], st["peers"]["a"])
    assert "PrivateKey = " + st["peers"]["a"]["private_key"] in ca
    assert "Endpoint = 192.0.2.1:51820" in ca and "AllowedIPs = 198.51.100.0/24, fd00:b::/64" in ca
    cb = wg.render_client(i, wg.public_key(spriv), p[1], st["peers"]["b"])
    assert "\nPrivateKey" not in cb and "PresharedKey = " in cb
    pub = wg.published(p, st, NOW)
    assert [(x["name"], x["enabled"], x["expired"]) for x in pub] == [
        ("a", True, False), ("b", True, False), ("off", False, False), ("old", True, True)]  # fmt: skip
    assert all("private_key" not in x and "preshared_key" not in x for x in pub)


def test_live_matches_and_dump_parsing():
    i = iface()
    p = peers([{"name": "a", "tenant": "acme"}], i)
    st = wg.build_state(i, p, {}, wg.allocate(i, p, {}))
    spriv = wg.generate_private_key()
    e = st["peers"]["a"]
    dump = "\t".join([spriv, wg.public_key(spriv), "51820", "off"]) + "\n" + "\t".join(
        [e["public_key"], e["preshared_key"], "192.0.2.11:4000", "fd00:b::2/128,198.51.100.2/32", "1700000000",
         "10", "20", "off"])  # fmt: skip
    di, dp = wg.parse_dump(dump)
    assert wg.live_matches(di, dp, i, wg.public_key(spriv), p, st, NOW)
    dp[e["public_key"]]["preshared_key"] = wg.generate_psk()
    assert not wg.live_matches(di, dp, i, wg.public_key(spriv), p, st, NOW)
    pub = [dict(x, public_key=st["peers"][x["name"]]["public_key"]) for x in wg.published(p, st, NOW)]
    status = wg.peer_status(pub, wg.parse_dump(dump)[1], 1700000100)
    assert status[0]["state"] == "active" and status[0]["latest_handshake_age_s"] == 100
    assert wg.peer_status(pub, {}, 1700000100)[0]["state"] == "never"


def test_interface_status_reads_the_persisted_state(tmp_path):
    """wireguard_status and the health check share interface_status: the persisted allocations, through
    peer_status, with the client files; an interface that is not up is never asked for a dump."""
    i = iface(name="wgnotup9")
    p = peers([{"name": "a", "tenant": "acme"}, {"name": "old", "tenant": "acme", "expires": "2026-01-01T00:00:00Z"}],
              i)
    st = wg.build_state(i, p, {}, wg.allocate(i, p, {}))
    base = tmp_path / "wgnotup9"
    (base / "clients").mkdir(parents=True)
    (base / "state.json").write_text(wg.dump_state(st))
    (base / "clients" / "a.png").write_bytes(b"png")
    calls = []
    running, dump_iface, status = wg.interface_status(str(tmp_path), "wgnotup9",
                                                      lambda argv: calls.append(argv) or (1, "", ""))
    assert (running, dump_iface, calls) == (False, None, [])
    assert [(s["name"], s["state"], s["live"]) for s in status] == [("a", "never", False), ("old", "expired", False)]
    assert status[0]["qr_file"] == str(base / "clients" / "a.png") and status[1]["qr_file"] is None
    assert status[1]["config_file"] == str(base / "clients" / "old.conf")
    assert all("private_key" not in s and "preshared_key" not in s and "public_key" not in s for s in status)
    assert wg.read_state(str(tmp_path), "absent") == {"peers": {}}
    (base / "state.json").write_text("{broken")
    with pytest.raises(wg.WireGuardError, match="not valid JSON"):
        wg.interface_status(str(tmp_path), "wgnotup9", lambda argv: (1, "", ""))


def test_site_routes_are_boot_postup_lines_that_never_restart():
    i = iface()
    p = peers([{"name": "s", "tenant": "acme", "allowed_ips": ["203.0.113.0/24", "198.51.100.128/25"]}], i)
    st = wg.build_state(i, p, {}, wg.allocate(i, p, {}))
    assert wg.peer_routes(i, p, NOW) == {"203.0.113.0/24"}  # inside the VPN network: on-link already
    spriv = wg.generate_private_key()
    conf, _ = wg.render_server(i, spriv, p, st, NOW)
    assert "PostUp = ip route replace 203.0.113.0/24 dev %i proto static" in conf and "Table = off" in conf
    bare, _ = wg.render_server(i, spriv, [], {"peers": {}}, NOW)
    assert wg.parse_conf_interface(conf) == wg.parse_conf_interface(bare)


def test_parse_conf_interface_ignores_private_key():
    a = "[Interface]\nAddress = 1\nPrivateKey = x\n[Peer]\nPublicKey = y\n"
    b = "[Interface]\nAddress = 1\nPrivateKey = z\n"
    assert wg.parse_conf_interface(a) == wg.parse_conf_interface(b) == [("Address", "1")]
    assert ipaddress.ip_address("fd00:b::2") in ipaddress.ip_network("fd00:b::/64")


def test_allocation_of_5000_gives_5000_distinct_addresses():
    # how fast: bench/bench_vpn.py (a timed assertion here would only measure how loaded the machine is)
    i = iface(addresses=["fd00:b::1/64"])
    p = peers([{"name": "p%d" % n, "tenant": "acme"} for n in range(5000)], i)
    st = wg.build_state(i, p, {}, wg.allocate(i, p, {}))
    quick, native = wg.render_server(i, wg.generate_private_key(), p, st, NOW)
    assert len({tuple(e["addresses"]) for e in st["peers"].values()}) == 5000
    assert quick.count("[Peer]") == native.count("[Peer]") == 5000


def test_expiry_units_are_role_templates():
    """The expiry timer's units are the wireguard role's templates (rendered as the template module does)."""
    import jinja2

    tdir = os.path.join(support_env.REPO, "roles", "wireguard", "templates")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(tdir), keep_trailing_newline=True)
    ctx = dict(wireguard__expiry_helper="/usr/local/lib/berqenas-wg-expire.py",
               wireguard_state_dir="/etc/berqenas/wireguard", wireguard_config_dir="/etc/wireguard",
               wireguard_expiry_interval=7)
    service = env.get_template("berqenas-wg-expire@.service.j2").render(ctx)
    timer = env.get_template("berqenas-wg-expire@.timer.j2").render(ctx)
    assert (
        "ExecStart=/usr/bin/python3 /usr/local/lib/berqenas-wg-expire.py --state-dir /etc/berqenas/wireguard "
        "--config-dir /etc/wireguard %i\n" in service
    )
    assert "OnActiveSec=7\nOnUnitActiveSec=7\n" in timer and "WantedBy=timers.target" in timer


class DictFiles:
    """The host's files for wg.plan, in a dict (path -> text)."""

    def __init__(self, files=None):
        self.files = dict(files or {})

    def read(self, path):
        return self.files.get(path)

    def exists(self, path):
        return path in self.files

    def listdir(self, path):
        rest = [p[len(path) + 1:] for p in self.files if p.startswith(path + "/")]
        return sorted(r for r in rest if "/" not in r)

    def apply(self, the_plan):
        for path, content in the_plan.writes:
            self.files[path] = content
        for _text, png, txt in the_plan.qr_jobs:
            self.files[png] = self.files[txt] = "qr"
        for path in the_plan.stale:
            del self.files[path]


class FakeLive:
    def __init__(self, exists=True, dump=(None, {}), routes=()):
        self._exists, self._dump, self._routes = exists, dump, set(routes)

    def exists(self):
        return self._exists

    def dump(self):
        return self._dump

    def routes(self):
        return self._routes


def _dump_of(the_plan, i, p):
    """What `wg show dump` says when the interface runs exactly the plan."""
    d_iface = {"private_key": the_plan.server_key, "public_key": the_plan.server_public_key,
               "listen_port": i.listen_port}
    d_peers = {}
    for x in p:
        if wg.is_live(x, NOW):
            e = the_plan.state["peers"][x.name]
            d_peers[e["public_key"]] = {"preshared_key": e["preshared_key"], "persistent_keepalive": 0,
                                        "allowed_ips": set(wg.peer_allowed_ips(x, e))}
    return d_iface, d_peers


def test_plan_writes_then_nothing_then_only_what_changed():
    i = iface()
    paths = wg.Paths("/s", "/c", "wg0")
    files = DictFiles()
    p = peers([{"name": "a", "tenant": "acme", "qr": True}, {"name": "b", "tenant": "acme", "qr": False}], i)
    first = wg.plan(i, p, NOW, wg.InProcessKeys, files, paths)
    assert first.new_server_key and first.counts == dict(total=2, live=2, added=2, removed=0)
    assert {w[0] for w in first.writes} == {"/s/wg0/server.key", "/c/wg0.conf", "/s/wg0/state.json",
                                            "/s/wg0/clients/a.conf", "/s/wg0/clients/b.conf"}
    assert [j[1:] for j in first.qr_jobs] == [("/s/wg0/clients/a.png", "/s/wg0/clients/a.qr.txt")]
    assert wg.plan_action(first, i, p, NOW, None) == "none"  # no service manager
    assert wg.plan_action(first, i, p, NOW, FakeLive(exists=False)) == "start"
    files.apply(first)
    again = wg.plan(i, p, NOW, wg.InProcessKeys, files, paths)
    assert again.changed_files == [] and not again.new_server_key
    assert again.server_public_key == first.server_public_key
    assert wg.plan_action(again, i, p, NOW, FakeLive(dump=_dump_of(again, i, p))) == "none"
    assert wg.plan_action(again, i, p, NOW, FakeLive(dump=(None, {}))) == "syncconf"
    # b removed: its client file is stale, a new peer c gets the released address; nothing else rewritten
    p2 = peers([{"name": "a", "tenant": "acme", "qr": True}, {"name": "c", "tenant": "acme", "qr": False}], i)
    third = wg.plan(i, p2, NOW, wg.InProcessKeys, files, paths)
    assert third.stale == ["/s/wg0/clients/b.conf"] and third.qr_jobs == []
    assert {w[0] for w in third.writes} == {"/c/wg0.conf", "/s/wg0/state.json", "/s/wg0/clients/c.conf"}
    assert third.state["peers"]["c"]["addresses"] == first.state["peers"]["b"]["addresses"]
    assert third.counts == dict(total=2, live=2, added=1, removed=1)
    assert wg.plan_action(third, i, p2, NOW, FakeLive(dump=_dump_of(again, i, p))) == "syncconf"
    # an interface setting restarts; a site route missing on the live interface is a syncconf
    files.apply(third)
    i2 = iface(mtu=1380)
    fourth = wg.plan(i2, p2, NOW, wg.InProcessKeys, files, paths)
    assert wg.plan_action(fourth, i2, p2, NOW, FakeLive(dump=_dump_of(fourth, i2, p2))) == "restart"
    p3 = peers([{"name": "a", "tenant": "acme", "qr": True, "allowed_ips": ["203.0.113.0/24"]},
                {"name": "c", "tenant": "acme", "qr": False}], i)  # fmt: skip
    fifth = wg.plan(i, p3, NOW, wg.InProcessKeys, files, paths)
    assert fifth.routes == {"203.0.113.0/24"}
    assert wg.plan_action(fifth, i, p3, NOW, FakeLive(dump=_dump_of(fifth, i, p3))) == "syncconf"
    assert wg.plan_action(fifth, i, p3, NOW, FakeLive(dump=_dump_of(fifth, i, p3), routes=fifth.routes)) == "none"


def test_plan_refuses_corrupt_state_and_server_key():
    i = iface()
    paths = wg.Paths("/s", "/c", "wg0")
    with pytest.raises(wg.WireGuardError, match="not valid JSON"):
        wg.plan(i, [], NOW, wg.InProcessKeys, DictFiles({"/s/wg0/state.json": "{"}), paths)
    with pytest.raises(wg.WireGuardError, match="server key"):
        wg.plan(i, [], NOW, wg.InProcessKeys, DictFiles({"/s/wg0/server.key": "nope\n"}), paths)


def test_published_entry_is_the_one_shape_from_state():
    i = iface()
    p = peers([{"name": "a", "tenant": "acme", "expires": "2026-01-01T00:00:00Z"},
               {"name": "b", "tenant": "acme", "public_key": key(), "enabled": False}], i)  # fmt: skip
    st = wg.build_state(i, p, {}, wg.allocate(i, p, {}))
    pub = wg.published(p, st, NOW)
    assert pub == [wg.published_entry(n, st["peers"][n], NOW) for n in ("a", "b")]
    assert pub[0] == {"name": "a", "tenant": "acme", "addresses": ["198.51.100.2", "fd00:b::2"], "enabled": True,
                      "expired": True, "expires": "2026-01-01T00:00:00Z", "key_source": "generated"}
    assert pub[1]["key_source"] == "client" and pub[1]["enabled"] is False and pub[1]["expires"] is None

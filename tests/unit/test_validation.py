import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import validation as v

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["a", "acme", "acme_2", "a" * 40, "t0001"])
def test_valid_tenant_names(name):
    assert v.tenant_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "9a", "_a", "a" * 41, "a-b", "a b", "a.b", "ä", "acme\n", "acme\x00",
                                  "pg_anything", "berqenas", "berqenas_x", "public", "all", "replication", "null",
                                  "on", "select", None, 5, ["acme"]])
def test_invalid_tenant_names(name):
    with pytest.raises(v.ValidationError):
        v.tenant_name(name)


def test_error_names_the_rule():
    with pytest.raises(v.ValidationError, match=r"\^\[a-z\]"):
        v.tenant_name("Bad")
    with pytest.raises(v.ValidationError, match="reserved"):
        v.tenant_name("postgres")


@pytest.mark.parametrize("good,expected", [("1", 1), (65535, 65535), ("5432", 5432)])
def test_ports(good, expected):
    assert v.port(good) == expected


@pytest.mark.parametrize("bad", [0, 65536, "-1", "5432 ", "54x", "", None, "0x10"])
def test_bad_ports(bad):
    with pytest.raises(v.ValidationError):
        v.port(bad)


@pytest.mark.parametrize("rule,good,bad", [
    (v.mtu, [1280, "1420", 9000], [1279, 9001, "1420.0", True, None, "{{ x }}"]),
    (v.keepalive, [0, "25", 65535], [-1, 65536, "25s", False, None]),
])
def test_mtu_and_keepalive_ranges(rule, good, bad):
    assert [rule(g) for g in good] == [int(g) for g in good]
    for b in bad:
        with pytest.raises(v.ValidationError):
            rule(b)


@pytest.mark.parametrize("bad", ["{{ x }}", "a{% if %}", "{# c #}", "x}}"])
def test_template_syntax_rejected(bad):
    with pytest.raises(v.ValidationError, match="template"):
        v.no_template(bad)


@pytest.mark.parametrize("good", ["30s", "0", "500ms", "5min", "2h"])
def test_durations(good):
    assert v.pg_duration(good) == good


@pytest.mark.parametrize("bad", ["30 s", "-1s", "1d", "s", "1s;", "01s"])
def test_bad_durations(bad):
    with pytest.raises(v.ValidationError):
        v.pg_duration(bad)


@pytest.mark.parametrize("good", ["erp", "legacy_erp", "a" * 40])
def test_remotedb_names(good):
    assert v.remotedb_name(good) == good


@pytest.mark.parametrize("bad", ["null", "true", "pg_catalog", "acme-corp", "Erp", "9erp", "a" * 41, "", None])
def test_bad_remotedb_names(bad):
    with pytest.raises(v.ValidationError):
        v.remotedb_name(bad)


@pytest.mark.parametrize("good,expected", [
    ("db.example.com", "db.example.com"), ("sql-01", "sql-01"), ("127.0.0.1", "127.0.0.1"),
    ("2001:db8::1", "2001:db8::1"), ("2001:DB8::1", "2001:db8::1"), ("host.", "host.")])
def test_hosts(good, expected):
    assert v.host(good) == expected


@pytest.mark.parametrize("bad", ["$(id)", "-oProxyCommand=id", "-x", "a b", " a", "a;b", "a|b", "a`id`", "a'b",
                                 'a"b', "a/b", "a\\b", "{{ x }}", "", "1234", "1.2.3", "a..b", "a-.b", "x" * 254,
                                 "fe80::1%eth0", "a\nb", None, 5])
def test_bad_hosts(bad):
    with pytest.raises(v.ValidationError):
        v.host(bad)


@pytest.mark.parametrize("good", ["sa", "erp_reader", "ERP", "sync.user", "@x#1$", "DOMAIN\\svc_sync", "a" * 128])
def test_sql_server_logins(good):
    assert v.login_text(good, "user") == good


@pytest.mark.parametrize("bad", ["", "a'b", 'a"b', "a;b", "a b", "\u202eemca", "\u0430cme", "a\tb", "-x", ".x",
                                 "a" * 129, "{{ x }}", "a\\b\\c"])
def test_bad_sql_server_logins(bad):
    with pytest.raises(v.ValidationError):
        v.login_text(bad, "user")


def test_a_database_name_has_no_domain():
    with pytest.raises(v.ValidationError):
        v.login_text("DOMAIN\\db", "database")


@pytest.mark.parametrize("good", ["[dbo].[Orders]", "[dbo].[Order's; x]", "Orders", "[Продажи]"])
def test_table_text(good):
    assert v.table_text(good) == good


@pytest.mark.parametrize("bad", ["", " ", "a\x00b", "a\nb", "a\x1bb", "acme\u200b", "\u202eemca", "\ufeffa",
                                 "[dbo].[{{ x }}]", "x" * 301])
def test_bad_table_text(bad):
    with pytest.raises(v.ValidationError):
        v.table_text(bad)


@pytest.mark.parametrize("good, expected", [("30", 30.0), (0, 0.0), ("0.5", 0.5), (3600, 3600.0)])
def test_seconds(good, expected):
    assert v.seconds(good, "lock timeout", 0, 3600) == expected


@pytest.mark.parametrize("bad", ["NaN", float("nan"), "inf", float("inf"), "-inf", "1e400", "-1", "3601", True, "x",
                                 ""])
def test_bad_seconds(bad):
    with pytest.raises(v.ValidationError):
        v.seconds(bad, "lock timeout", 0, 3600)


def test_expiry_required_refuses_empty():
    assert v.expiry("") is None
    with pytest.raises(v.ValidationError):
        v.expiry("", "expires", True)


def test_expiry_accepts_a_yaml_timestamp_with_a_zone_only():
    import datetime
    utc = datetime.UTC
    aware = datetime.datetime(2030, 1, 1, 2, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert v.expiry(aware) == datetime.datetime(2030, 1, 1, 0, 0, tzinfo=utc)
    assert v.expiry(aware) == v.expiry("2030-01-01T00:00:00Z")
    with pytest.raises(v.ValidationError, match="no timezone"):
        v.expiry(datetime.datetime(2030, 1, 1))
    with pytest.raises(v.ValidationError):
        v.expiry(datetime.date(2030, 1, 1))


@pytest.mark.parametrize("good", ["https://hasura.io/jwt/claims", "http://198.51.100.7:8080/claims", "claims",
                                  "x-hasura"])
def test_claims_namespaces(good):
    assert v.claims_namespace(good) == good


@pytest.mark.parametrize("bad", ["", "a b", "https://x/a?b=1", "https://user@x/", "https://x/#f", "ftp://x/",
                                 "https://-x/", "https://x:99999/", "$(id)", "{{ x }}", "a'b", "https://x/a//b",
                                 "https://x/../y", "\u202eclaims", "x" * 201])
def test_bad_claims_namespaces(bad):
    with pytest.raises(v.ValidationError):
        v.claims_namespace(bad)


@pytest.mark.parametrize("bad", ["", "a\x00b", "a\nb", None])
def test_bad_file_paths(bad):
    with pytest.raises(v.ValidationError):
        v.file_path(bad)


def test_api_key_name_and_scope():
    assert v.api_key_name("ci-deploy.1") == "ci-deploy.1"
    assert v.api_key_scope("tenant:acme") == ("tenant", "acme")
    assert v.api_key_scope("read") == ("read", None)
    for bad in ("", "-x", "a b", "a" * 65):
        with pytest.raises(v.ValidationError):
            v.api_key_name(bad)
    for bad in ("", "admin ", "tenant:", "tenant:Acme", "tenant:null", "root", "tenant:acme:x"):
        with pytest.raises(v.ValidationError):
            v.api_key_scope(bad)

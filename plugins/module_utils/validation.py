# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every value rule of the platform, once: modules, filters, playbooks and the orchestrator call these.

One copy of each rule: names of every kind (tenant, remote database, exposure, VPN peer, API key), API key
scopes, SQL identifiers, SQL Server logins and table names, hosts, ports, host:port pairs, CIDRs and addresses,
interface names, WireGuard keys, expiry timestamps, seconds, PostgreSQL durations and connection limits, JWT
claims namespaces, paths of files to read, template syntax. Each function returns the (normalised) value or
raises ValidationError with a message ``invalid <what> <value>: <rule>``. Domain errors (GatewayError,
WireGuardError) subclass ValidationError; ``checked()`` re-raises a rule's error as a domain error.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import datetime
import ipaddress
import math
import re
import unicodedata


class ValidationError(ValueError):
    """An input broke a rule; the message says which input and which rule."""


def checked(error_class, rule, *args, **kwargs):
    """Apply RULE; a ValidationError it raises becomes ERROR_CLASS (a domain error) with the same message."""
    try:
        return rule(*args, **kwargs)
    except ValidationError as exc:
        if isinstance(exc, error_class):
            raise
        raise error_class(str(exc)) from None


# ------------------------------------------------------------------------------------------ text

_TEMPLATE_RE = re.compile(r"\{\{|\{%|\{#|\}\}|%\}|#\}")


def no_template(value, what="value"):
    """Reject strings that carry template syntax where no template could be meant (inputs are data)."""
    if isinstance(value, str) and _TEMPLATE_RE.search(value):
        raise ValidationError("invalid %s: template syntax ({{ }}, {%% %%}, {# #}) is not allowed in inputs" % what)
    return value


def one_line(value, what="value"):
    """No template syntax, no line breaks, no NUL (a value written into a config file line)."""
    no_template(value, what)
    if isinstance(value, str) and ("\n" in value or "\r" in value or "\0" in value):
        raise ValidationError("invalid %s: line breaks are not allowed" % what)
    return value


def text(value, what="value"):
    """A non-empty one-line string without surrounding whitespace."""
    if not isinstance(value, str):
        raise ValidationError("invalid %s %r: expected a string" % (what, value))
    one_line(value, what)
    if value != value.strip() or not value:
        raise ValidationError("invalid %s %r: empty or surrounded by whitespace" % (what, value))
    return value


_LOGIN_RE = re.compile(r"^[A-Za-z0-9_@#][A-Za-z0-9_@#$.-]{0,127}\Z")
_DOMAIN_LOGIN_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}\\[A-Za-z0-9_@#][A-Za-z0-9_@#$.-]{0,111}\Z")


def login_text(value, what="user"):
    """A SQL Server login (``what`` user: also ``DOMAIN\\login``) or database name: 1-128 ASCII characters of
    letters, digits, ``_ @ # $ . -``, starting with a letter, digit, ``_``, ``@`` or ``#``.

    Narrower than what SQL Server allows in a delimited name, on purpose: no quotes, ``;``, spaces, shell or
    template syntax, control or bidi characters, look-alike letters; such a name would reach connection
    strings and logs."""
    if not isinstance(value, str):
        raise ValidationError("invalid %s %r: expected a string" % (what, value))
    no_template(value, what)
    if not (_LOGIN_RE.match(value) or (what == "user" and _DOMAIN_LOGIN_RE.match(value))):
        raise ValidationError("invalid %s %r: 1-128 ASCII letters, digits, _ @ # $ . -%s, starting with a letter, "
                              "digit, _, @ or #" % (what, value, " (or DOMAIN\\login)" if what == "user" else ""))
    return value


def _bad_char(value):
    """The first control (Cc), format (Cf: bidi, zero-width, BOM) or unassigned/private character of VALUE."""
    for c in value:
        if unicodedata.category(c) in ("Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp"):
            return c
    return None


def table_text(value, what="table"):
    """A table name as the user writes it (``[schema].[table]``, ``schema.table``, ``table``), before the T-SQL
    parser reads it: 1-300 characters, no control, bidi, zero-width or BOM characters, no template syntax.
    Bracketed names may otherwise hold any character: they are quoted wherever they go."""
    if not isinstance(value, str):
        raise ValidationError("invalid %s %r: expected a string" % (what, value))
    no_template(value, what)
    bad = _bad_char(value)
    if bad is not None:
        raise ValidationError("invalid %s %r: control or invisible character U+%04X" % (what, value, ord(bad)))
    if not value.strip() or len(value) > 300:
        raise ValidationError("invalid %s %r: 1-300 characters" % (what, value[:60]))
    return value


def file_path(value, what="file"):
    """A path to read (any file the caller can read): a non-empty string without NUL or line breaks."""
    if not isinstance(value, str) or not value:
        raise ValidationError("invalid %s %r: expected a path" % (what, value))
    if "\0" in value or "\n" in value or "\r" in value:
        raise ValidationError("invalid %s %r: a path has no NUL or line break" % (what, value))
    return value


# An Ansible host pattern (a group or host name, ``all``, ``web*``, ``a:b``, ``a:&b``, ``a:!b``, ``a,b``,
# ``g[0:2]``): no spaces, quotes, shell or template syntax, control or look-alike characters.
_HOST_PATTERN_RE = re.compile(r"^[A-Za-z0-9_*][A-Za-z0-9_.*:!&,\[\]-]{0,254}\Z")


def host_pattern(value, what="host pattern"):
    """An Ansible host pattern: 1-255 ASCII letters, digits and ``_ . * : ! & , [ ] -``, starting with a
    letter, digit, ``_`` or ``*``."""
    if not isinstance(value, str) or not _HOST_PATTERN_RE.match(value):
        raise ValidationError("invalid %s %r: 1-255 ASCII letters, digits and _ . * : ! & , [ ] -, starting with a "
                              "letter, digit, _ or *" % (what, value))
    return value


def http_url(value, what="URL"):
    """An http(s) URL ``http(s)://host[:port][/path]``: one line, at most 2048 characters, no template syntax,
    whitespace, control or invisible characters."""
    text(value, what)
    bad = _bad_char(value)
    if bad is not None or len(value) > 2048 or not re.match(r"^https?://[^\s/?#]+", value) or re.search(r"\s", value):
        raise ValidationError("invalid %s %r: expected http(s)://host[:port]" % (what, value[:60]))
    return value


def path_text(value, what="path"):
    """A path (to read or to write): file_path's rule, and no template syntax."""
    return one_line(file_path(value, what), what)


# ------------------------------------------------------------------------------------------ names
# One family: a name is lower-case ASCII of a kind's pattern. Names that become PostgreSQL objects, pg_hba
# fields or sync-state keys (tenants, remote databases) must also not be a reserved word or prefix; exposure and
# peer names (firewall comments, file names) need not.

# PostgreSQL's own namespaces and roles, the platform's, and SQL, pg_hba or YAML words.
RESERVED_NAMES = frozenset([
    "public", "information_schema", "postgres", "template0", "template1", "berqenas", "pg_catalog", "pg_toast",
    "all", "any", "sameuser", "samerole", "samehost", "samenet", "replication", "current_user", "session_user",
    "current_role", "user", "role", "none", "null", "true", "false", "yes", "no", "on", "off", "y", "n",
    "default", "select", "insert", "update", "delete", "drop", "create", "alter", "grant", "revoke", "table",
    "schema", "database", "from", "where", "union", "and", "or", "not", "admin", "root", "superuser",
    "nologin", "login", "local", "host", "hostssl", "hostnossl", "reject", "trust", "unsafe", "vault",
])
RESERVED_PREFIXES = ("pg_", "berqenas")
# Words that read as null or a boolean in YAML 1.2, JSON, Python and Jinja (a name is written into YAML by hand and
# compared in templates): refused for every kind of name (tenants and remote databases refuse all of RESERVED_NAMES).
VALUE_WORDS = frozenset(["null", "none", "true", "false"])
RESERVED_TENANT_NAMES = RESERVED_NAMES  # the former name, kept for callers

_IDENT_RULE = ("^[a-z][a-z0-9_]{0,39}$ (lower-case letter first, then up to 39 lower-case letters, digits or "
               "underscores)")
# kind -> (regex, how the rule reads in a message, reserved words refused)
NAME_RULES = {
    "tenant name": (r"^[a-z][a-z0-9_]{0,39}\Z", _IDENT_RULE, True),
    "remote database name": (r"^[a-z][a-z0-9_]{0,39}\Z", _IDENT_RULE, True),
    "exposure name": (r"^[a-z][a-z0-9_-]{0,39}\Z", "^[a-z][a-z0-9_-]{0,39}$ (lower-case letter first, then up to "
                      "39 lower-case letters, digits, _ or -)", False),
    "peer name": (r"^[a-z0-9][a-z0-9_-]{0,31}\Z", "^[a-z0-9][a-z0-9_-]{0,31}$ (lower-case letter or digit first, "
                  "then up to 31 lower-case letters, digits, _ or -)", False),
}
_NAME_RES = dict((kind, re.compile(rule[0])) for kind, rule in NAME_RULES.items())
TENANT_NAME_RE = _NAME_RES["tenant name"]


def name(value, kind="tenant name"):
    """A name of KIND (a key of NAME_RULES): its pattern, and for tenants and remote databases no reserved word."""
    if not isinstance(value, str):
        raise ValidationError("%s must be a string, got %s" % (kind, type(value).__name__))
    if not _NAME_RES[kind].match(value):
        raise ValidationError("invalid %s %r: must match %s" % (kind, value, NAME_RULES[kind][1]))
    if value in VALUE_WORDS or (NAME_RULES[kind][2] and (value in RESERVED_NAMES
                                                         or value.startswith(RESERVED_PREFIXES))):
        raise ValidationError("invalid %s %r: reserved (see the reserved list in the docs)" % (kind, value))
    return value


def tenant_name(value):
    """Return ``value`` if it is a valid tenant name, else raise ValidationError."""
    return name(value, "tenant name")


def remotedb_name(value):
    """A remote database (sync job) name: it names files and keys the sync state."""
    return name(value, "remote database name")


def exposure_name(value):
    """A gateway exposure's name (unique per tenant)."""
    return name(value, "exposure name")


def peer_name(value):
    """A VPN peer's name (unique across tenants; names its client config files)."""
    return name(value, "peer name")


_SQL_IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")


def sql_identifier(value, what="identifier"):
    """A plain lower-case SQL identifier that needs no quoting (e.g. the platform database's name)."""
    if not isinstance(value, str) or not _SQL_IDENT_RE.match(value):
        raise ValidationError("invalid %s %r: use a-z, 0-9 and _, not starting with a digit, at most 63"
                              % (what, value))
    return value


# ------------------------------------------------------------------------------------------ numbers

_DURATION_RE = re.compile(r"^(0|[1-9][0-9]{0,8})(ms|s|min|h)?\Z")


def pg_duration(value, what="statement_timeout"):
    """A PostgreSQL duration setting like '30s', '500ms', '5min' or '0' (off)."""
    value = str(value)
    if not _DURATION_RE.match(value):
        raise ValidationError("invalid %s %r: expected a number with unit ms, s, min or h (e.g. 30s)" % (what, value))
    return value


def integer(value, what, low, high):
    """An integer LOW..HIGH given as an int or a decimal string (booleans are refused)."""
    if isinstance(value, bool):
        raise ValidationError("invalid %s %r: expected an integer %d-%d" % (what, value, low, high))
    try:
        n = int(str(value).strip(), 10)
    except (TypeError, ValueError):
        raise ValidationError("invalid %s %r: expected an integer %d-%d" % (what, value, low, high)) from None
    if not low <= n <= high:
        raise ValidationError("invalid %s %r: expected an integer %d-%d" % (what, value, low, high))
    return n


def seconds(value, what, low, high):
    """A number of seconds LOW..HIGH (an int, a float or a decimal string); NaN, infinities and booleans refused."""
    rule = "expected a number of seconds %g-%g" % (low, high)
    if isinstance(value, bool):
        raise ValidationError("invalid %s %r: %s" % (what, value, rule))
    try:
        n = float(value if isinstance(value, (int, float)) else str(value).strip())
    except (TypeError, ValueError):
        raise ValidationError("invalid %s %r: %s" % (what, value, rule)) from None
    if math.isnan(n) or math.isinf(n) or not low <= n <= high:
        raise ValidationError("invalid %s %r: %s" % (what, value, rule))
    return n


def mtu(value, what="mtu"):
    """An interface MTU 1280 (IPv6's minimum link MTU) to 9000 (a jumbo frame)."""
    return integer(value, what, 1280, 9000)


def keepalive(value, what="persistent_keepalive"):
    """A WireGuard PersistentKeepalive in seconds: 0 (off) to 65535."""
    return integer(value, what, 0, 65535)


def connection_limit(value):
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValidationError("invalid connection_limit %r: expected an integer" % (value,))
    if n < -1 or n > 10000:
        raise ValidationError("invalid connection_limit %r: expected -1 (no limit) to 10000" % (value,))
    return n


def port(value, what="port"):
    """A TCP/UDP port 1-65535 as an int or a plain decimal string (no sign, spaces or leading zeros)."""
    if isinstance(value, bool):
        raise ValidationError("invalid %s %r: expected an integer 1-65535" % (what, value))
    no_template(value, what)
    try:
        n = int(str(value), 10)
    except (TypeError, ValueError):
        raise ValidationError("invalid %s %r: expected an integer 1-65535" % (what, value))
    if not 1 <= n <= 65535 or str(value) != str(n):
        raise ValidationError("invalid %s %r: expected an integer 1-65535" % (what, value))
    return n


# ------------------------------------------------------------------------------------------ network

_HOST_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


def ip_address(value, what="address"):
    """An IPv4 or IPv6 address (no zone index); returned in its canonical spelling."""
    text(value, what)
    try:
        if "%" in value:
            raise ValueError("zone index")
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValidationError("invalid %s %r: expected an IP address" % (what, value)) from None


def host(value, what="host"):
    """An IP address or a DNS host name (RFC 1123 labels, at most 253 characters, not all digits).

    Nothing else: no spaces, quotes, shell metacharacters, ``$(...)``, option-like ``-x``, ports or paths.
    IP addresses come back in their canonical spelling, names as given.
    """
    text(value, what)
    try:
        return ip_address(value, what)
    except ValidationError:
        pass
    dns = value[:-1] if value.endswith(".") else value
    if (len(dns) > 253 or not all(_HOST_LABEL_RE.match(label) for label in dns.split("."))
            or re.match(r"^[0-9.]+\Z", dns)):
        raise ValidationError("invalid %s %r: not an IP address or host name" % (what, value))
    return value


def host_port(value, what="target", port_required=True):
    """``host:port`` (``[v6]:port`` for IPv6; the port optional unless PORT_REQUIRED) -> (host, port or None)."""
    text(value, what)
    m = (re.match(r"^\[([^\]]+)\](?::([^:]*))?\Z", value) or re.match(r"^([^:\[\]]+)(?::([^:]*))?\Z", value))
    if not m or (port_required and m.group(2) is None):
        raise ValidationError("invalid %s %r: expected %s" % (
            what, value, "HOST:PORT ([v6]:PORT)" if port_required else "HOST, HOST:PORT or [v6]:PORT"))
    h = host(m.group(1), what + " host")
    if value.startswith("[") and ":" not in h:
        raise ValidationError("invalid %s %r: brackets are for IPv6 addresses" % (what, value))
    return h, (None if m.group(2) is None else port(m.group(2), what + " port"))


def cidr(value, what="CIDR"):
    """An IPv4/IPv6 network (a bare address means /32 or /128); host bits must be zero. -> ip_network."""
    text(value, what)
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValidationError("invalid %s %r: %s (expected a network like 198.51.100.0/24, host bits zero)"
                              % (what, value, exc)) from None


def interface_address(value, what="interface address"):
    """An address with its prefix, like ``198.51.100.1/24``. -> ip_interface."""
    text(value, what)
    try:
        return ipaddress.ip_interface(value)
    except ValueError:
        raise ValidationError("invalid %s %r: expected an address with prefix, like 198.51.100.1/24"
                              % (what, value)) from None


def peer_network(value, what="address"):
    """A peer's address as the wireguard role publishes it (``198.51.100.2`` or ``198.51.100.2/32``) or a
    routed subnet strictly written (``203.0.113.0/24``). -> ip_network."""
    iface = interface_address(value, what)
    if "/" in value and iface.network.prefixlen != iface.max_prefixlen:
        return cidr(value, what)
    return iface.network


# Linux: at most 15 bytes, no '/', whitespace or ':' (and never '.' or '..'); wg-quick allows [a-zA-Z0-9_=+.-].
# A leading '-' or '.' is refused too: an interface name is an argument of ip, wg, ufw and iptables.
_IFACE_RE = re.compile(r"^[A-Za-z0-9_=+][A-Za-z0-9_=+.-]{0,14}\Z")


def interface_name(value, what="interface name"):
    """A network interface name: 1-15 characters of [A-Za-z0-9_=+.-], not starting with '-' or '.'."""
    if not isinstance(value, str) or not _IFACE_RE.match(value):
        raise ValidationError("invalid %s %r: 1-15 characters of [A-Za-z0-9_=+.-], not starting with - or ."
                              % (what, value))
    return value


# ------------------------------------------------------------------------------------------ keys and dates

def wireguard_key(value, what="public key"):
    """A WireGuard key: base64 of 32 bytes (44 characters), not all zero. Returned stripped."""
    if not isinstance(value, str):
        raise ValidationError("invalid %s: expected a base64 string" % what)
    one_line(value.strip(), what)
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("invalid %s %r: not base64" % (what, value)) from None
    if len(raw) != 32 or len(value.strip()) != 44:
        raise ValidationError("invalid %s %r: a WireGuard key is 32 bytes (44 base64 characters)" % (what, value))
    if raw == b"\0" * 32:
        raise ValidationError("invalid %s: the all-zero key is not a key" % what)
    return value.strip()


_EXPIRY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?[+-]\d{2}:\d{2}\Z")


def expiry(value, what="expires", required=False):
    """ISO-8601 with a timezone (``2026-12-31T00:00:00Z``) -> an aware UTC datetime; None or '' -> None (with
    REQUIRED, '' is refused: an option given as ``--expires=`` is not an absent one)."""
    if value is None or (value == "" and not required):
        return None
    if isinstance(value, datetime.datetime):
        # YAML reads an unquoted 2030-01-01T00:00:00Z in a vars file as a timestamp: the same instant, if it has
        # a timezone (a naive one is refused like a string without a zone)
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValidationError("invalid %s %s: the timestamp has no timezone (write it like "
                                  "2026-12-31T00:00:00Z)" % (what, value.isoformat()))
        return value.astimezone(datetime.timezone.utc)
    if not isinstance(value, str):
        raise ValidationError("invalid %s %r: expected an ISO-8601 timestamp like 2026-12-31T00:00:00Z"
                              % (what, value))
    one_line(value, what)
    stamp = value.strip()
    if stamp.endswith("Z") or stamp.endswith("z"):
        stamp = stamp[:-1] + "+00:00"
    if not _EXPIRY_RE.match(stamp):
        raise ValidationError("invalid %s %r: expected an ISO-8601 timestamp with a timezone, "
                              "like 2026-12-31T00:00:00Z" % (what, value))
    try:
        dt = datetime.datetime.fromisoformat(stamp)
    except ValueError:
        raise ValidationError("invalid %s %r: not a valid date/time" % (what, value)) from None
    return dt.astimezone(datetime.timezone.utc)


def format_expiry(dt):
    """The one spelling of an expiry the platform writes: ``2026-12-31T00:00:00Z``."""
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ") if dt else None


# ---- two-way sync (mssql_sync tables[]) -----------------------------------------------------------

SYNC_DIRECTIONS = ("forward", "both")
CONFLICT_POLICIES = ("source_wins", "target_wins", "latest_wins")


def one_of(value, choices, what):
    """``value`` if it is one of ``choices`` (strings), else a ValidationError naming them."""
    if not isinstance(value, str) or value not in choices:
        raise ValidationError("%s must be one of %s, got %r" % (what, ", ".join(choices), value))
    return value


def sync_direction_options(direction, conflict_policy, timestamp_column, delete_detection, what="table"):
    """The two-way options of one synced table, checked together; returns (direction, policy, column)."""
    direction = one_of(direction, SYNC_DIRECTIONS, "%s: direction" % what)
    if direction == "forward":
        if conflict_policy is not None or timestamp_column is not None:
            raise ValidationError("%s: conflict_policy and conflict_timestamp_column apply only to direction both"
                                  % what)
        return direction, None, None
    policy = one_of("source_wins" if conflict_policy is None else conflict_policy, CONFLICT_POLICIES,
                    "%s: conflict_policy" % what)
    if policy == "latest_wins":
        if not isinstance(timestamp_column, str) or not timestamp_column.strip():
            raise ValidationError("%s: conflict_policy latest_wins needs conflict_timestamp_column (the column "
                                  "holding each row's last change time)" % what)
    elif timestamp_column is not None:
        raise ValidationError("%s: conflict_timestamp_column is used only by conflict_policy latest_wins" % what)
    if delete_detection == "soft_delete":
        raise ValidationError("%s: direction both does not support delete_detection soft_delete (deletes flow both "
                              "ways as deletes)" % what)
    return direction, policy, timestamp_column


# ------------------------------------------------------------------------------------------ API keys, JWT

_API_KEY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def api_key_name(value, what="key name"):
    """An API key's name: 1-64 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit."""
    if not isinstance(value, str) or not _API_KEY_NAME_RE.match(value):
        raise ValidationError("invalid %s %r: 1-64 characters, letters, digits, '.', '_' or '-', starting with a "
                              "letter or digit" % (what, value))
    return value


def api_key_scope(value, what="scope"):
    """``admin``, ``read`` or ``tenant:NAME`` (NAME a tenant name) -> (kind, tenant or None)."""
    if not isinstance(value, str) or not value:
        raise ValidationError("invalid %s: expected admin, read or tenant:NAME" % what)
    if value in ("admin", "read"):
        return value, None
    kind, sep, tenant = value.partition(":")
    if kind != "tenant" or not sep:
        raise ValidationError("invalid %s %r: expected admin, read or tenant:NAME" % (what, value))
    try:
        return "tenant", tenant_name(tenant)
    except ValidationError as exc:
        raise ValidationError("invalid %s %r: %s" % (what, value, exc)) from None


_NS_WORD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}\Z")
_NS_URL_RE = re.compile(r"^https?://([^/?#@\[\]]+?)(?::([0-9]{1,5}))?(/[A-Za-z0-9._~/-]*)?\Z")


def claims_namespace(value, what="claims namespace"):
    """The JWT claim the x-hasura-* claims travel under: an http(s) URL (a host, an optional port, a path of
    letters, digits and ``. _ ~ / -``; no query, user or fragment), at most 200 characters, or a word of up to 64
    letters, digits, ``_`` or ``-`` starting with a letter."""
    rule = "an http(s) URL like https://hasura.io/jwt/claims (no query, user or fragment) or a word"
    if not isinstance(value, str) or not value or len(value) > 200:
        raise ValidationError("invalid %s %r: %s, at most 200 characters" % (what, value, rule))
    if _NS_WORD_RE.match(value):
        return value
    m = _NS_URL_RE.match(value)
    if not m:
        raise ValidationError("invalid %s %r: %s" % (what, value, rule))
    try:
        host(m.group(1), what + " host")
        if m.group(2) is not None:
            port(m.group(2), what + " port")
    except ValidationError as exc:
        raise ValidationError("invalid %s %r: %s" % (what, value, exc)) from None
    if "//" in (m.group(3) or "") or "/../" in (m.group(3) or "") + "/":
        raise ValidationError("invalid %s %r: %s" % (what, value, rule))
    return value

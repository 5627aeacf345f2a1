"""Who may run which command: ONE table, checked before any command body (and so any playbook) runs.

``TABLE`` maps every command path (``("tenant", "create")``) to a ``Rule``; ``guard`` wraps every leaf
command's callback when the root group is built (cli/__init__.py), so a command cannot run unchecked, and
tests/unit/test_authz.py fails for a command that has no entry here.

Kinds (what a key's scope must be):
- ``admin``: admin keys only (key management, audit, the platform itself, tenant create/delete).
- ``read``: admin and read keys; changes nothing; covers every tenant, so tenant keys are refused.
- ``list``: admin and read keys see everything; a ``tenant:T`` key sees T's rows only (the command filters
  its rows with ``visible``), never another tenant's.
- ``tenant``: changes something of ONE tenant: admin, or ``tenant:T`` when the command's target is T. The
  target is the argument named by ``tenant`` and/or the owner of the existing resource named by ``owner``
  (state file, variable, argument): both must be T. A resource that does not exist has no owner: a tenant key
  is then refused, so it can tell neither which names other tenants use nor whether they exist.
- ``tenant-read``: like ``tenant`` but changes nothing, so read keys may run it too, except with one of
  ``secret_flags`` set (``tenant show --credentials`` prints passwords: admin or the tenant itself).
- ``bootstrap``: ``apikey init``, the one command that needs no key (the keystore refuses it once it exists).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import click

from .apikeys import Scope

KINDS = ("admin", "read", "list", "tenant", "tenant-read", "bootstrap")


@dataclass(frozen=True)
class Rule:
    kind: str
    tenant: str | None = None  # the parameter naming the target tenant
    owner: tuple[str, str, str] | None = None  # (file under group_vars/all, variable, parameter naming the entry)
    secret_flags: tuple[str, ...] = ()


_PEER = ("vpn.yml", "berqenas_vpn_peers", "name")
_REMOTEDB = ("remotedbs.yml", "berqenas_remotedbs", "name")

TABLE: dict[tuple[str, ...], Rule] = {
    ("apikey", "init"): Rule("bootstrap"),
    ("apikey", "create"): Rule("admin"),
    ("apikey", "list"): Rule("admin"),
    ("apikey", "revoke"): Rule("admin"),
    ("audit", "show"): Rule("admin"),
    ("audit", "verify"): Rule("admin"),
    ("local", "up"): Rule("admin"),
    ("local", "down"): Rule("admin"),
    ("local", "status"): Rule("read"),
    ("tenant", "create"): Rule("admin"),
    ("tenant", "delete"): Rule("admin"),
    ("tenant", "list"): Rule("list"),
    ("tenant", "show"): Rule("tenant-read", tenant="name", secret_flags=("credentials",)),
    ("vpn", "peer", "add"): Rule("tenant", tenant="tenant", owner=_PEER),
    ("vpn", "peer", "remove"): Rule("tenant", owner=_PEER),
    ("vpn", "peer", "list"): Rule("list"),
    ("vpn", "status"): Rule("list"),
    ("gateway", "expose"): Rule("tenant", tenant="tenant"),
    ("gateway", "unexpose"): Rule("tenant", tenant="tenant"),
    ("gateway", "list"): Rule("list"),
    ("gateway", "status"): Rule("read"),
    ("remotedb", "add"): Rule("tenant", tenant="tenant", owner=_REMOTEDB),
    ("remotedb", "list"): Rule("list"),
    ("remotedb", "test"): Rule("tenant-read", owner=_REMOTEDB),
    ("remotedb", "remove"): Rule("tenant", owner=_REMOTEDB),
    ("sync", "run"): Rule("tenant", owner=("remotedbs.yml", "berqenas_remotedbs", "remotedb")),
    ("sync", "status"): Rule("list"),
    ("health",): Rule("read"),
    ("status",): Rule("list"),  # a tenant key sees its tenant's rows only (status.only_visible)
    ("hasura", "configure"): Rule("admin"),
    ("hasura", "status"): Rule("read"),
    ("hasura", "track"): Rule("tenant", tenant="tenant"),
    ("hasura", "untrack"): Rule("tenant", tenant="tenant"),
    ("hasura", "mirror"): Rule("tenant", tenant="tenant"),
    ("token", "config"): Rule("admin"),
    ("token", "key", "add"): Rule("admin"),
    ("token", "key", "list"): Rule("read"),
    ("token", "key", "retire"): Rule("admin"),
    ("token", "issue"): Rule("tenant", tenant="tenant"),
}


class Denied(click.ClickException):
    """Refused by the table (or no valid key): exit code 1, ``unauthorized``."""

    exit_code = 1

    def __init__(self, detail: str = ""):
        super().__init__("unauthorized" + (f": {detail}" if detail else ""))
        self.details: dict = {}


def owner_of(state, owner: tuple[str, str, str], params: dict) -> str | None:
    """The tenant of the existing entry the command names (None when there is none)."""
    fname, variable, param = owner
    name = params.get(param)
    store = state() if callable(state) else state  # read only when a rule needs it (not on a controller)
    for entry in store.load(fname).get(variable, []) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry.get("tenant")
    return None


def decide(rule: Rule, scope: Scope | None, params: dict, state) -> str | None:
    """None when ``scope`` may run a command under ``rule`` with ``params``, else why not (for the message)."""
    if rule.kind == "bootstrap":
        return None
    if scope is None:
        return "no API key"
    if scope.kind == "admin":
        return None
    if rule.kind == "admin":
        return f"scope {scope} may not run this command (admin only)"
    if rule.kind == "read":
        return None if scope.kind == "read" else f"scope {scope} may not run this command (it covers every tenant)"
    if rule.kind == "list":
        return None  # tenant keys get their own rows only (the command filters with ``visible``)
    if scope.kind == "read":
        if rule.kind == "tenant-read" and not any(params.get(f) for f in rule.secret_flags):
            return None
        return f"scope {scope} may not change anything" if rule.kind == "tenant" else \
            f"scope {scope} may not see secrets"
    # a tenant key: every target must be its tenant
    targets = []
    if rule.tenant:
        targets.append(params.get(rule.tenant))
    if rule.owner:
        found = owner_of(state, rule.owner, params)
        if found is not None or not rule.tenant:
            targets.append(found)
    if targets and all(t == scope.tenant for t in targets):
        return None
    return f"scope {scope} does not cover that target"


def command_path(ctx: click.Context) -> tuple[str, ...]:
    parts = []
    while ctx.parent is not None:
        parts.append(ctx.info_name)
        ctx = ctx.parent
    return tuple(reversed(parts))


def visible(app, rows: list[dict], key="tenant") -> list[dict]:
    """Rows a ``list`` command may show: all for admin/read keys, the key's tenant's only for tenant keys.

    ``key`` is the field naming a row's tenant, or a function of the row returning it."""
    scope = getattr(app, "scope", None)
    if scope is None or scope.kind != "tenant":
        return rows
    get = key if callable(key) else (lambda r: r.get(key))
    return [r for r in rows if get(r) == scope.tenant]


def guard(path: tuple[str, ...], callback, authorize):
    """Wrap a leaf command's callback: ``authorize(path, rule, ctx)`` runs first, with the parsed params."""
    rule = TABLE.get(path)

    @functools.wraps(callback)
    def checked(*args, **kwargs):
        ctx = click.get_current_context()
        if rule is None:  # a command nobody put in the table runs for nobody (and the unit test fails)
            raise Denied("this command has no entry in the authorization table")
        authorize(path, rule, ctx)
        return callback(*args, **kwargs)

    checked.__berqenas_guarded__ = path
    return checked


def leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    """(path, command) of every command that runs something (groups excluded), depth first."""
    for name, cmd in sorted(group.commands.items()):
        path = (*prefix, name)
        if isinstance(cmd, click.Group):
            yield from leaf_commands(cmd, path)
        else:
            yield path, cmd


def guard_tree(root: click.Group, authorize) -> None:
    for path, cmd in leaf_commands(root):
        if not hasattr(cmd.callback, "__berqenas_guarded__"):
            cmd.callback = guard(path, cmd.callback, authorize)

"""berqenas token: tenant JWTs for Hasura (keys vaulted in the inventory, the engine's JWT configuration)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from .. import jwt_keys as J
from .. import vault
from ..app import App, CommandError, json_option, pass_app
from ..validate import ValidationError, rule, tenant_name, validation

SECRETS_FILE = "hasura_jwt_keys.yml"
SECRETS_KEY = "berqenas_hasura_jwt_keys"


def load_keys(app: App) -> list[dict]:
    """Every stored key, decrypted (in this process only)."""
    return [json.loads(v) for v in vault.entries(app, SECRETS_FILE, SECRETS_KEY).values()]


def _tenant(ctx, param, value):
    try:
        return tenant_name(value)
    except ValidationError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group("token")
def group():
    """Tenant JWTs for Hasura: signing keys, the engine's configuration, tokens."""


@group.group("key")
def key():
    """Signing keys (vaulted in the inventory); several at once during a rotation."""


@key.command("add")
@click.option("--alg", type=click.Choice(J.ALGORITHMS), default="HS256", show_default=True,
              help="HS256 (shared secret) or RS256/EdDSA (the engine gets the public key only).")
@click.option("--claims-namespace", default=J.DEFAULT_NAMESPACE, show_default=True,
              callback=rule(validation.claims_namespace),
              help="Claim under which the x-hasura-* claims travel.")
@json_option
@pass_app
def key_add(app: App, alg, claims_namespace):
    """Generate a key; new tokens are signed with it (older keys still verify until retired)."""
    try:
        doc = J.generate(alg, claims_namespace)
    except J.KeyError_ as exc:
        raise click.BadParameter(str(exc), param_hint="--claims-namespace") from None
    vault.store(app, SECRETS_FILE, SECRETS_KEY, doc["kid"], json.dumps(doc))
    n = len(load_keys(app))
    app.emit(dict(J.public(doc), keys=n),
             f"added {alg} key {doc['kid']} ({n} key(s); run `berqenas token config` and restart Hasura)")


@key.command("list")
@json_option
@pass_app
def key_list(app: App):
    """Keys, oldest first (the last one signs); never their secret parts."""
    keys = [J.public(k) for k in J.ordered(load_keys(app))]
    app.emit(keys, "\n".join(f"{k['kid']}  {k['alg']}  {k['created']}  {k['claims_namespace']}" for k in keys))


@key.command("retire")
@click.argument("kid")
@json_option
@pass_app
def key_retire(app: App, kid):
    """Remove a key after the engine runs with its successor: its tokens stop verifying."""
    keys = load_keys(app)
    if kid not in {k["kid"] for k in keys}:
        raise CommandError(f"retire key {kid}: no such key")
    if len(keys) == 1:
        raise CommandError(f"retire key {kid}: it is the only key; add its successor first")
    vault.forget(app, SECRETS_FILE, SECRETS_KEY, kid)
    app.emit({"retired": kid, "keys": len(keys) - 1}, f"retired key {kid}")


@group.command("config")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Environment file for the engine (mode 0600), e.g. /etc/hasura/jwt.env.")
@json_option
@pass_app
def config(app: App, out):
    """Write HASURA_GRAPHQL_JWT_SECRET (one key) or HASURA_GRAPHQL_JWT_SECRETS (rotation) to a 0600 file."""
    try:
        path = J.write_environment_file(out, load_keys(app))
    except J.KeyError_ as exc:
        raise CommandError(f"token config: {exc}") from None
    env = J.engine_environment(load_keys(app))
    app.emit({"file": os.path.abspath(path), "variables": sorted(env), "keys": len(load_keys(app))},
             f"wrote {path} ({', '.join(sorted(env))})")


@group.command("issue")
@click.option("--tenant", required=True, callback=_tenant, help="The tenant the token acts for.")
@click.option("--role", help="Hasura role (default TENANT_user); must be one of the tenant's roles.")
@click.option("--ttl", default="1h", show_default=True, help="Lifetime: a number and s, m, h or d (at most 30d).")
@click.option("--subject", help="The token's sub claim (default tenant:TENANT).")
@json_option
@pass_app
def issue(app: App, tenant, role, ttl, subject):
    """Mint a token for TENANT's Hasura role (x-hasura-allowed-roles, default-role, tenant-id; iat, exp, jti)."""
    try:
        seconds = J.parse_ttl(ttl)
        res = J.issue(load_keys(app), tenant, role, seconds, subject=subject)
    except J.KeyError_ as exc:
        if "no JWT key" in str(exc):
            raise CommandError(f"token issue: {exc}") from None
        raise click.BadParameter(str(exc)) from None
    app.emit(res, res["token"])

"""The ``berqenas`` command. Each command group is a module of this package exporting ``group``, listed in GROUPS."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from .. import access, authz, controller, runner
from ..app import App, handle_error  # noqa: F401
from ..paths import default_home
from ..runner import EXIT_CANCEL, EXIT_USAGE
from . import apikey, audit, gateway, hasura, health, local, remotedb, status, sync, tenant, token, vpn

_CURRENT: dict = {}
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), envvar="BERQENAS_HOME",
              help="Instance directory of the embedded default [env BERQENAS_HOME; default ./.berqenas].")
@click.option("-i", "--inventory", type=click.Path(exists=True, path_type=Path),
              help="Act on the platform described by this inventory instead of the local instance.")
@click.option("-v", "--verbose", count=True, help="More Ansible verbosity (progress on stderr).")
@click.option("--timeout", type=click.IntRange(min=1), envvar="BERQENAS_TIMEOUT",
              help="Cancel a playbook run after this many seconds (exit code 124).")
@click.option("--controller", "controller_url", metavar="URL", envvar="BERQENAS_CONTROLLER",
              help="Launch the matching job template on this AWX / Automation Controller instead of running locally.")
@click.option("--controller-token-file", metavar="FILE", envvar="BERQENAS_CONTROLLER_TOKEN_FILE",
              help="File (0600) holding the controller's OAuth2 token.")
@click.option("--api-key-file", type=click.Path(dir_okay=False, path_type=Path), envvar="BERQENAS_API_KEY_FILE",
              help="Read the API key from this file (mode 0600) [env BERQENAS_API_KEY_FILE; else BERQENAS_API_KEY].")
@click.option("--keep-artifacts", "keep_artifacts", metavar="DIR", envvar="BERQENAS_KEEP_ARTIFACTS",
              type=click.Path(file_okay=False, path_type=Path),
              help="Debugging: copy each playbook run's ansible-runner files (extra vars, command, stdout, job events) "
                   "into a new 0700 directory under DIR (files 0600) [env BERQENAS_KEEP_ARTIFACTS].")
@click.version_option(package_name="berqenas-orchestrator", prog_name="berqenas")
@click.pass_context
def root(ctx, home, inventory, verbose, timeout, controller_url, controller_token_file, api_key_file,
         keep_artifacts):
    """berqenas: multi-tenant PostgreSQL, VPN, gateway and sync, reconciled by Ansible.

    Every command needs an API key (BERQENAS_API_KEY, or --api-key-file); a new install starts
    with `berqenas apikey init`. Data goes to stdout (JSON with --json), progress to stderr.
    Exit codes: 0 success, 1 failure, 2 usage, 124 timeout, 130 cancelled.
    """
    home = (home.expanduser().resolve() if home else default_home())
    try:
        ctrl = controller.from_options(controller_url, controller_token_file)
    except controller.ControllerError as exc:
        raise click.UsageError(str(exc)) from None
    ctx.obj = App(home=home, inventory=inventory.resolve() if inventory else None, verbose=verbose, timeout=timeout,
                  controller=ctrl, keep_artifacts=keep_artifacts.expanduser().resolve() if keep_artifacts else None)
    ctx.obj.api_key_file = api_key_file
    _CURRENT["app"] = ctx.obj
    if "inv" in _CURRENT:
        access.start(_CURRENT["inv"], home)


# Every command group, explicitly (a new group: add its module here, its commands to authz.TABLE and a section to
# the README).
GROUPS = (local.group, tenant.group, vpn.group, gateway.group, remotedb.group, sync.group, hasura.group, token.group,
          health.group, status.group, apikey.group, audit.group)
for _group in GROUPS:
    root.add_command(_group)
# every command is checked (key, then authz.TABLE) after its arguments parse and before its body runs
authz.guard_tree(root, lambda path, rule, ctx: access.authorize(
    _CURRENT.setdefault("inv", access.Invocation(argv=[])), path, rule, ctx))


class Terminated(click.exceptions.Abort):
    """SIGTERM outside a playbook run: the command stops like on Ctrl-C (exit code 130, audit outcome cancelled)."""


def _on_sigterm(signum, frame):
    inv = _CURRENT.get("inv")
    if inv is not None:
        inv.signal = "SIGTERM"
    if runner.cancel_runs():
        return  # ansible-runner stops ansible-playbook; the command then ends cancelled (130) on its own
    raise Terminated()


def _run(argv) -> int:
    try:
        root.main(args=argv, prog_name="berqenas", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Cancelled.", err=True)
        return EXIT_CANCEL
    except click.UsageError as exc:
        exc.show()
        return EXIT_USAGE
    except click.ClickException as exc:
        return handle_error(_CURRENT.get("app"), exc)
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    _CURRENT["inv"] = inv = access.Invocation(argv=argv)
    code = 1
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (an embedding caller): SIGTERM keeps its handler
        previous = None
    try:
        code = _run(argv)
    finally:  # the audit line, whatever happened (a failure, Ctrl-C, SIGTERM, a bug)
        if previous is not None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the line short
        try:
            code = access.finish(inv, root, code)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    sys.exit(code)

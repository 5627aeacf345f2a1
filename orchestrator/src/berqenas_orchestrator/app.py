"""The App object every command receives: where state lives, how to run playbooks, how to answer.

Conventions for command groups (cli/<group>.py exporting ``group``; see cli/tenant.py for a complete one):
- validate with the collection's code (``berqenas_orchestrator.validate`` re-exports module_utils.validation;
  import other module_utils the same way) BEFORE ``app.state.edit(...)`` writes desired state;
- desired state files under ``app.inventory/group_vars/all/``: tenants.yml ``berqenas_tenants``,
  vpn.yml ``berqenas_vpn_peers`` (dicts with name, tenant, ...), gateway.yml ``berqenas_exposures``
  (dicts with tenant, name, ...), remotedbs.yml ``berqenas_remotedbs`` (dicts with name, tenant, ...),
  platform.yml (connection: berqenas_db_socket/host/port/user/name, berqenas_credentials_dir);
  ``tenant delete`` checks and (with --cascade) removes entries whose ``tenant`` matches;
- ``app.run_or_fail(playbook, extravars)`` runs playbooks/<playbook>; the playbook publishes its answer with
  ``ansible.builtin.set_stats: data: {berqenas_result: ...}`` -> ``result.answer``;
- never put a secret in extravars: secrets go to vault/0600 files read inside the play
  (``vault.store(app, file, variable, key, value)`` writes a !vault value; ``App.run`` passes the vault
  password file's path to ansible-playbook);
- ``app.emit(obj, text=...)`` prints data (JSON with --json); raise ``CommandError`` to fail.
"""

from __future__ import annotations

import json
from functools import update_wrapper
from pathlib import Path
from typing import Any

import click

from . import runner, vault
from .state import StateStore


class CommandError(click.ClickException):
    """A failure reported to the user: text on stderr, or a JSON error object on stdout with --json."""

    def __init__(self, message: str, code: int = runner.EXIT_FAIL, details: dict | None = None):
        super().__init__(message)
        self.exit_code = code
        self.details = details or {}


class App:
    def __init__(self, home: Path, inventory: Path | None, verbose: int = 0, timeout: int | None = None,
                 controller=None):
        self.home = home
        self.timeout = timeout
        self.controller = controller  # controller.Controller: playbooks run as AWX job templates there
        self._inventory = inventory
        self.verbose = verbose
        self.json = False

    # -- state ---------------------------------------------------------------------------
    @property
    def inventory(self) -> Path:
        """The operator's inventory (--inventory), else the local instance's under $BERQENAS_HOME."""
        return self._inventory or (self.home / "inventory")

    @property
    def is_local(self) -> bool:
        return self._inventory is None

    @property
    def state(self) -> StateStore:
        if self.controller is not None:
            raise CommandError("this command edits desired state, which on a controller lives in its inventory "
                               "(the project's group_vars): change it there and launch the apply job template")
        return StateStore(self.inventory)

    def require_inventory(self):
        if self.controller is not None:
            return
        if not (self.inventory / "hosts.yml").exists() and not self.inventory.is_file() and self.is_local:
            raise CommandError(f"no local platform at {self.home}: run `berqenas local up` first "
                               "(or pass --inventory for another platform)")

    # -- running -------------------------------------------------------------------------
    def progress(self, line: str) -> None:
        click.echo(line, err=True)

    def run(self, playbook: str, extravars: dict | None = None, *, check: bool = False, diff: bool = False,
            limit: str | None = None, inventory: Path | str | None = None, timeout: int | None = None,
            quiet: bool = False) -> runner.RunResult:
        base = {"berqenas_home": str(self.home)}
        base.update(extravars or {})
        if self.controller is not None:
            from . import controller

            try:
                return controller.run_job_template(self.controller, playbook, extravars=base, check=check, diff=diff,
                                                   limit=limit, timeout=timeout or self.timeout,
                                                   progress=None if quiet else self.progress)
            except controller.ControllerError as exc:
                raise CommandError(str(exc)) from None
        return runner.run_playbook(playbook, inventory=inventory or self.inventory, extravars=base, check=check,
                                   diff=diff, limit=limit, timeout=timeout or self.timeout,
                                   verbosity=self.verbose,
                                   progress=None if quiet else self.progress,
                                   env={"BERQENAS_HOME": str(self.home), **vault.run_env(self)})

    def run_or_fail(self, playbook: str, extravars: dict | None = None, **kw) -> runner.RunResult:
        result = self.run(playbook, extravars, **kw)
        if not result.ok:
            msg = result.failures[-1] if result.failures else f"playbook {playbook} ended {result.status}"
            raise CommandError(msg, code=result.exit_code,
                               details={"status": result.status, "failures": result.failures})
        return result

    # -- answering -----------------------------------------------------------------------
    def emit(self, obj: Any, text: str | None = None) -> None:
        """Data on stdout: JSON with --json, else ``text`` (or a plain rendering of obj)."""
        if self.json:
            click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))
        elif text is not None:
            if text:
                click.echo(text)
        elif isinstance(obj, list | dict):
            click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))
        else:
            click.echo(str(obj))

    def fail(self, message: str, code: int = runner.EXIT_FAIL, **details) -> None:
        raise CommandError(message, code=code, details=details)


def pass_app(f):
    """Inject the App (from the root group) as the first argument."""

    @click.pass_context
    def new_func(ctx, *args, **kwargs):
        return ctx.invoke(f, ctx.find_object(App), *args, **kwargs)

    return update_wrapper(new_func, f)


def json_option(f):
    """``--json`` on a command: machine-readable stdout, JSON error objects."""

    def callback(ctx, param, value):
        if value:
            ctx.find_object(App).json = True
        return value

    return click.option("--json", "as_json", is_flag=True, expose_value=False, callback=callback,
                        is_eager=True, help="Print machine-readable JSON on stdout.")(f)


def handle_error(app: App | None, exc: click.ClickException) -> int:
    code = getattr(exc, "exit_code", runner.EXIT_FAIL)
    if app is not None and app.json:
        err = {"error": exc.format_message(), "exit_code": code}
        err.update(getattr(exc, "details", {}) or {})
        click.echo(json.dumps(err, indent=2, sort_keys=True, default=str))
    else:
        click.echo(f"Error: {exc.format_message()}", err=True)
    return code


__all__ = ["App", "CommandError", "pass_app", "json_option", "handle_error"]

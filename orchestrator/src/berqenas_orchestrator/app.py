"""The App object every command receives: where state lives, how to run playbooks, how to answer.

Conventions for command groups (cli/<group>.py exporting ``group``, listed in cli/__init__.py GROUPS; see
cli/tenant.py for a complete one):
- validate with the collection's code BEFORE ``app.state.edit(...)`` writes desired state: click callbacks
  ``callback=rule(validation.tenant_name)`` and ``check(rule, value)`` from ``berqenas_orchestrator.validate``
  (the one import shim: ``validation`` is module_utils/validation.py, ``module_utils("wireguard")`` another);
  a malformed input is a usage error (exit 2), a referenced object that does not exist a failure (exit 1);
- write desired state and run the reconciling playbook inside ``with app.applying(FILE):`` so a failed run
  puts the file back as it was;
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
- ``app.emit(obj, text=...)`` prints data (JSON with --json), ``app.output_rows(rows, columns)`` a table (rich;
  the rows as JSON with --json); raise ``CommandError`` to fail.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from collections.abc import Sequence
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
                 controller=None, keep_artifacts: Path | None = None):
        self.home = home
        self.keep_artifacts = keep_artifacts  # --keep-artifacts: each run's runner files are copied there
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

    @contextlib.contextmanager
    def applying(self, *files: str):
        """Desired-state FILES written then applied in the block: a failure puts them back as they were.

        With a controller the CLI writes no desired state (it lives in the controller's inventory): nothing to undo.
        """
        if self.controller is not None:
            yield
            return
        try:
            with self.state.applying(*files):
                yield
        except CommandError as exc:
            raise CommandError(f"{exc.message} (desired state restored)", code=exc.exit_code,
                               details=dict(exc.details, restored=sorted(files))) from None

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
                                   env={"BERQENAS_HOME": str(self.home), **vault.run_env(self)},
                                   keep_dir=self.keep_artifacts)

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

    def output_rows(self, rows: list[dict], columns: Sequence[str | tuple[str, str]], *, empty: str = "",
                    obj: Any = None) -> None:
        """Rows on stdout: with --json ``obj`` (default: the rows, every key); else a table of COLUMNS.

        A column is a key or (key, header). Lists print comma-separated, None as ``-``, booleans as yes/no.
        On a terminal the table is drawn with rich to the terminal's width; piped, it is plain aligned text
        (one line per row, no colour, no trailing blanks) so scripts and tests read it simply.
        """
        if self.json:
            click.echo(json.dumps(rows if obj is None else obj, indent=2, sort_keys=True, default=str))
            return
        if not rows:
            if empty:
                click.echo(empty)
            return
        click.echo(render_table(rows, columns, tty=sys.stdout.isatty()), nl=False)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def render_table(rows: list[dict], columns: Sequence[str | tuple[str, str]], *, tty: bool = False,
                 width: int | None = None) -> str:
    """ROWS as a table (rich): boxed for a terminal of WIDTH columns, else plain aligned text."""
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table

    cols = [(c, c) if isinstance(c, str) else c for c in columns]
    table = Table(box=box.SIMPLE_HEAD if tty else None, show_edge=False, pad_edge=False,
                  header_style="bold" if tty else "", padding=(0, 1) if tty else (0, 2, 0, 0))
    for _, header in cols:
        table.add_column(header.upper(), overflow="fold")
    for r in rows:
        table.add_row(*(_cell(r.get(key)) for key, _ in cols))
    buf = io.StringIO()
    console = Console(file=buf, width=width or (shutil.get_terminal_size().columns if tty else 100_000),
                      force_terminal=tty, no_color=not tty, color_system="auto" if tty else None,
                      highlight=False, emoji=False, markup=False)
    console.print(table)
    return "".join(line.rstrip() + "\n" for line in buf.getvalue().splitlines())


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

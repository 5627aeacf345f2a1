"""berqenas sync: run SQL Server -> PostgreSQL syncs and report their state."""

from __future__ import annotations

import datetime as dt

import click

from ..app import App, CommandError, json_option, pass_app
from ..authz import visible
from ..validate import rule, validation
from .remotedb import find, listed, table_names


@click.group(name="sync")
def group():
    """Sync remote SQL Server databases into their tenants' schemas."""


@group.command("run")
@click.argument("remotedb", callback=rule(validation.remotedb_name))
@click.option("--table", "tables", multiple=True, help="Only this table, '[schema].[table]' (repeatable).")
@click.option("--full", is_flag=True, help="Truncate and reload the tables (a full resync).")
@click.option("--force", is_flag=True, help="Apply deletions the pk_diff / mode full safety checks refuse.")
@click.option("--check", is_flag=True, help="Report pending row counts; change nothing.")
@click.option("--lock-timeout", type=float, default=30, show_default=True,
              callback=rule(validation.seconds, "lock timeout", 0, 3600),
              help="Seconds to wait for another run of the same remote database, then report locked.")
@click.option("--scheduled", is_flag=True,
              help="As a scheduled job: one summary line with the counts; a run that finds the job locked exits 0.")
@json_option
@pass_app
def run(app: App, remotedb, tables, full, force, check, lock_timeout, scheduled):
    """Sync REMOTEDB now (its configured tables, or --table ones)."""
    tables = table_names(tables)
    app.require_inventory()
    if app.controller is None:
        entry = find(app, remotedb, "sync")
        if not tables and not entry.get("tables"):
            raise CommandError(f"sync {remotedb}: no tables configured (pass --table)", code=2)
    elif force:
        # the job template's survey has no force question (AWX would drop the answer): say so instead
        raise CommandError(f"sync {remotedb}: --force is not offered by the AWX job template; run it locally "
                           "against the inventory (-i) to apply deletions the safety checks refuse", code=2)
    # under --controller the remote database is the controller inventory's: sync_run.yml refuses an unknown one
    result = app.run("sync_run.yml", {"berqenas_remotedb": remotedb, "berqenas_sync_tables": tables,
                                      "berqenas_sync_full": full, "berqenas_sync_force": force,
                                      "berqenas_sync_lock_timeout": lock_timeout},
                     check=check)
    res = result.answer
    if not result.ok:
        status = res.get("status") or "failed"
        if scheduled and status == "locked":
            # another run of this job holds its lock: that run does the work, this one has nothing to do
            app.emit({"remotedb": remotedb, "status": "locked", "changed": False, "check": check, "tables": []},
                     text=f"sync {remotedb}: locked (another run holds the job's lock; nothing done)")
            return
        msg = res.get("msg") or (result.failures[-1] if result.failures else f"sync {remotedb}: {result.status}")
        raise CommandError(msg, code=1 if status == "locked" else result.exit_code,
                           details={"status": status, "remotedb": remotedb, "tables": res.get("tables", [])})
    out = {"remotedb": remotedb, "status": res.get("status", "ok"), "changed": bool(res.get("changed")),
           "check": check, "tables": res.get("tables", [])}
    if scheduled:
        app.emit(out, text=summary_line(remotedb, out))
        return
    lines = []
    for t in out["tables"]:
        if check:
            lines.append(f"{t['source']} -> {t['target']}: {t.get('pending')} pending")
        else:
            lines.append(f"{t['source']} -> {t['target']}: +{t['inserted']} ~{t['updated']} -{t['deleted']} "
                         f"({t.get('rows_per_s')} rows/s, watermark {t.get('watermark_to')})")
        rev = t.get("reverse")  # direction both: PostgreSQL -> SQL Server, applied before the forward load
        if rev and check:
            lines.append(f"{t['target']} -> {t['source']}: {rev.get('pending')} pending")
        elif rev:
            c = rev.get("conflicts") or {}
            lines.append(f"{t['target']} -> {t['source']}: applied {rev['applied']} (+{rev['inserted']} "
                         f"~{rev['updated']} -{rev['deleted']}), conflicts {sum(c.values())} "
                         f"(sqlserver won {c.get('sqlserver', 0)}, postgresql won {c.get('postgresql', 0)}), "
                         f"position {rev.get('position_to')}")
            lines.extend(f"  conflict: {x['key']} -> {x['winner']}" for x in rev.get("conflict_rows") or [])
        lines.extend(f"  note: {n}" for n in t.get("precision_notes") or [])
    app.emit(out, text="\n".join(lines))


def summary_line(remotedb: str, out: dict) -> str:
    """One line per scheduled run (the journal's record of it): status and the run's counts."""
    tables = out["tables"]
    if out["check"]:
        return f"sync {remotedb}: {out['status']} (check) tables={len(tables)} " \
               f"pending={sum(int(t.get('pending') or 0) for t in tables)}"
    total = {k: sum(int(t.get(k) or 0) for t in tables) for k in ("inserted", "updated", "deleted")}
    return (f"sync {remotedb}: {out['status']} tables={len(tables)} inserted={total['inserted']} "
            f"updated={total['updated']} deleted={total['deleted']} changed={str(out['changed']).lower()}")


@group.command("status")
@click.option("--pending", is_flag=True,
              help="Also count the rows waiting at the source (a check-mode run per remote database).")
@json_option
@pass_app
def status(app: App, pending):
    """Per synced table: watermark, last run and result, rows, lag, next scheduled run [, rows pending]."""
    app.require_inventory()
    result = app.run_or_fail("sync_status.yml", quiet=True)
    answer = result.answer
    rows = [{"remotedb": t["job"], "source": t["source"], "target": t["target"], "watermark": t["watermark"],
             "last_run_at": t["last_run_at"], "last_result": t["last_result"], "rows_total": t["rows_total"],
             "lag_s": t["lag_s"]} for t in answer.get("tables", [])]
    # a table's tenant is its target schema's (sync_run creates targets in the tenant's schema); locally the
    # remote database's entry says so too (and covers a row of a remote database removed since)
    owners = {} if app.controller is not None else {d.get("name"): d.get("tenant") for d in listed(app)}
    rows = visible(app, rows, lambda r: owners.get(r["remotedb"]) or r["target"].split(".", 1)[0])
    jobs = sorted({r["remotedb"] for r in rows})
    nxt = next_runs(app, jobs, answer.get("timers") or [])
    for r in rows:
        r["next_run"] = nxt.get(r["remotedb"])
    columns = ["remotedb", "source", "target", "watermark", "last_result", "rows_total", "lag_s", "next_run"]
    if pending:
        counts = {}
        for job in jobs:
            res = app.run("sync_run.yml", {"berqenas_remotedb": job}, check=True, quiet=True)
            for t in res.answer.get("tables", []) if res.ok else []:
                counts[(job, t.get("source"))] = t.get("pending")
        for r in rows:
            r["pending"] = counts.get((r["remotedb"], r["source"]))
        columns.append("pending")
    app.output_rows(rows, tuple(columns), empty="no synced tables")


TIMER_PREFIX = "berqenas-sync-"


def timer_next_runs(timers: list[dict]) -> dict[str, str]:
    """{remote database: ISO time} from `systemctl list-timers --output=json` rows of role sync_schedule's
    timers (``unit`` berqenas-sync-NAME.timer, ``next`` in microseconds since the epoch, 0 when none)."""
    out = {}
    for t in timers:
        unit, when = str(t.get("unit") or ""), t.get("next")
        if unit.startswith(TIMER_PREFIX) and unit.endswith(".timer") and isinstance(when, int) and when > 0:
            out[unit[len(TIMER_PREFIX):-len(".timer")]] = (
                dt.datetime.fromtimestamp(when / 1e6, dt.UTC).replace(microsecond=0).isoformat())
    return out


def next_runs(app: App, jobs: list[str], timers: list[dict]) -> dict[str, str]:
    """The next scheduled run per remote database: the AWX schedule's under --controller, else this host's timer."""
    if app.controller is None:
        return timer_next_runs(timers)
    from .. import controller

    out = {}
    for job in jobs:
        try:
            when = controller.schedule_next_run(app.controller, f"berqenas sync {job}")
        except controller.ControllerError as exc:
            raise CommandError(str(exc)) from None
        if when:
            out[job] = when
    return out

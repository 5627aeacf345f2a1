#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: mssql_sync
short_description: Copy SQL Server tables into PostgreSQL incrementally on rowversion
version_added: 0.1.0
description:
  - Reads each source table's rows in the window [stored watermark, C(MIN_ACTIVE_ROWVERSION())) on an
    autocommit connection, in rowversion order, and loads them page by page into the target PostgreSQL
    table (binary COPY, then an upsert guarded by the rowversion column). Each page and its watermark are
    committed in the same PostgreSQL transaction, in schema C(berqenas) that tenants cannot write, so a
    crash or a re-run replays harmlessly (exactly-once effect). Rows of transactions still open when the
    run starts are picked up by a later run.
  - Target tables are created under C(SET ROLE) to the tenant's owner role, so the tenant's default
    privileges apply (its read-only role can read them). A column added to the source later is added to
    the target (and the table re-read once); an incompatible type change fails clearly.
  - "Types: decimal/numeric(p,s) exact; money numeric(19,4); datetime timestamp(3); datetime2(n) and
    time(n) keep min(n,6) digits, so the 100-ns digit of (7) is dropped and reported in RV(tables[].precision_notes);
    datetimeoffset becomes timestamptz plus a smallint column C(<name>_offset_min) holding the original
    offset; (n)(var)char(n) character varying(n), (max) text; binary types and rowversion bytea;
    uniqueidentifier uuid; bit boolean; tinyint smallint. sql_variant, hierarchyid, geometry and geography
    are refused (exclude them)."
  - "U+0000 in strings (legal in SQL Server, impossible in PostgreSQL text) follows O(nul_character)."
  - "A restored or failed-over source (recovery GUID changed, or C(@@DBTS + 1) below the stored watermark) is
    refused unless O(on_rewind=full_resync), which truncates and reloads the table."
  - After a load that wrote every row of a target table has committed (the first load, a resumed one, a full
    reload or O(on_rewind=full_resync), the re-read after columns were added, a C(mode=full) run into an empty
    target), the module runs C(VACUUM (ANALYZE)) on that table, so the next delta finds it as autovacuum would
    leave it (visibility map and hint bits set, planner statistics fresh); ordinary deltas and check mode never
    do. A login role that may not vacuum the table (not its owner), or a lock held by another session past
    O(lock_timeout), gives a warning and RV(tables[].vacuumed=false), not a failure.
  - One run per O(job) at a time (a PostgreSQL advisory lock); a concurrent run waits up to O(lock_timeout)
    and then fails with RV(status=locked). Transient source errors are retried with backoff, resuming from
    the last committed page.
extends_documentation_fragment:
  - berqenas.platform.mssql
  - berqenas.platform.postgres
  - berqenas.platform.postgres.attributes
options:
  job:
    description:
      - Name of the sync job (normally the remote database's name); keys the watermarks and the lock.
    type: str
    required: true
  tenant:
    description:
      - The tenant the data belongs to; target tables default to its schema and are owned by its owner role
        V(<tenant>_owner).
    type: str
    required: true
  tables:
    description:
      - Tables to sync. A string is a source name.
    type: list
    elements: raw
    required: true
  full:
    description:
      - Truncate and reload the listed tables (a full resync).
    type: bool
    default: false
  force:
    description:
      - Apply deletions that the safety checks of C(delete_detection=pk_diff) and C(mode=full) would refuse (a
        key stream whose length disagrees with the source's C(COUNT(*)) read around it, an empty stream for a
        non-empty target, or more than O(max_delete_fraction) of the target's rows).
    type: bool
    default: false
  max_delete_fraction:
    description:
      - Largest share (0 to 1) of a target's rows that one run's C(pk_diff) or C(mode=full) may delete; a run
        that would delete more refuses (nothing deleted) unless O(force).
    type: float
    default: 0.5
  on_rewind:
    description:
      - What to do when the source went back in time (restore, failover with data loss).
    type: str
    choices: [fail, full_resync]
    default: fail
  nul_character:
    description:
      - U+0000 in source strings; V(strip) removes it, V(replace) writes U+FFFD, V(fail) stops the run.
        Altered values are counted in RV(tables[].precision_notes).
    type: str
    choices: [strip, replace, fail]
    default: strip
  batch_size:
    description:
      - Rows fetched from SQL Server per round trip (pymssql C(arraysize)).
    type: int
    default: 5000
  commit_rows:
    description:
      - Rows per PostgreSQL transaction (each commits the data and its watermark).
    type: int
    default: 50000
  target_fillfactor:
    description:
      - Fill factor (10-100) of the target tables this module creates (existing tables keep theirs). Free space
        on each page lets the sync's updates stay HOT (no index entry written). The default keeps even an
        update of every row HOT, at twice the packed size from the initial load on (a table whose rows all
        change between vacuums grows to that size at any fill factor); V(75) or V(90) suit large tables whose
        deltas touch a small share of their rows.
    type: int
    default: 50
  lock_timeout:
    description:
      - Seconds to wait for another run of the same O(job).
    type: float
    default: 30
  retries:
    description:
      - Retries of a transient source error (connection dropped, timeout), with exponential backoff.
    type: int
    default: 3
  retry_delay:
    description:
      - Seconds before the first retry; doubled for each further one.
    type: float
    default: 1
notes:
  - "Each entry of O(tables) is a dict with: C(source) (V([schema].[table]), required), C(target_schema)
    (default the tenant's schema), C(target_table) (default the source table's name; names keep their
    case and are never truncated: over 63 bytes is an error), C(key_columns) and C(rowversion_column)
    (default: discovered from the catalog), C(include)/C(exclude) (column lists), C(mode) (V(delta) or
    V(full) for a table without rowversion: every row re-read, changed ones written, vanished keys
    deleted), C(delete_detection) (V(none), V(soft_delete) with C(soft_delete_column) and
    C(soft_delete_value) (default V(true)): rows whose column equals the value are deleted from the
    target, V(pk_diff): keys missing from the source are deleted after each run, or V(change_tracking): the
    keys SQL Server's change tracking reports deleted (C(CHANGETABLE(CHANGES ..)) under SNAPSHOT isolation, up
    to C(CHANGE_TRACKING_CURRENT_VERSION())) are deleted in the PostgreSQL transaction that stores the new
    version in the sync state; mode delta, either direction; change tracking and ALLOW_SNAPSHOT_ISOLATION
    must be on for the database and the table; when C(CHANGE_TRACKING_MIN_VALID_VERSION) has passed the stored
    version (retention cleanup, TRUNCATE TABLE) the run is refused as for a restore, and O(on_rewind=full_resync)
    (or O(full)) reloads the table), C(direction) (V(forward),
    the default, or V(both)), C(conflict_policy) (direction both: V(source_wins) (SQL Server's version wins,
    the default), V(target_wins) (PostgreSQL's wins) or V(latest_wins) with C(conflict_timestamp_column), the
    column holding each row's last change time; a tie goes to SQL Server)."
  - "C(direction=both): a trigger on the PostgreSQL table captures every change a user makes (a change log in
    the platform schema C(berqenas), deletes as tombstones); each run first applies them to SQL Server in
    batches of up to 1000 keys, each batch one SQL Server transaction that also records the applied
    change-log position in C([dbo].[berqenas_sync_applied]) (created on first use), then commits its
    PostgreSQL half (the position, the new rowversions, the conflict log) in one PostgreSQL transaction. A
    crash between the two is resumed from SQL Server's record: nothing lost, nothing applied twice. Then the
    table's forward load runs as for V(forward)."
  - "A conflict is a key changed on both sides since the last run (SQL Server's rowversion is no longer the
    one PostgreSQL last saw). Each one is counted in RV(tables[].reverse.conflicts) by winner, listed in
    RV(tables[].reverse.conflict_rows) (first 100) and kept in C(berqenas.sync_conflict) with the loser's and
    the winner's values."
  - "Echo prevention: the sync's own PostgreSQL writes are made with the session setting
    C(berqenas.sync_origin), which the capture trigger skips; its SQL Server writes' new rowversions are
    written into the PostgreSQL rows in the same transaction as the position, so the forward load finds
    nothing newer to apply. Idle runs write nothing on either side."
  - "Limits of C(direction=both): mode delta only (a rowversion column); every synced column must map to one
    PostgreSQL column of the same name (a C(datetimeoffset) column, which maps to two, must be excluded);
    C(datetime)/C(datetime2) values travel to SQL Server with millisecond precision (pymssql); deletes made on
    SQL Server reach PostgreSQL through C(delete_detection=pk_diff) or C(delete_detection=change_tracking). With
    change tracking the sync's own SQL Server writes are made C(WITH CHANGE_TRACKING_CONTEXT) (the job's context)
    and skipped by the forward C(CHANGETABLE) read (C(SYS_CHANGE_CONTEXT)); a key deleted on SQL Server but
    changed in PostgreSQL after the run applied PostgreSQL's changes is kept and decided as a conflict by the
    next run."
  - A view can be a source (give C(key_columns), unique in the view). Its rowversion column may repeat (a join);
    pages never end inside a run of equal rowversions, so resuming at the last committed value + 1 loses none.
    Columns the view takes from other tables than the one its rowversion comes from are synced only when that
    row changes.
  - The watermark advances even when no rows of a table changed (other tables move the database counter);
    that alone does not report C(changed).
  - Target tables are created C(WITH (fillfactor = 50)) (O(target_fillfactor)) and the rowversion column is not
    indexed there, so the sync's updates stay HOT (same page, no new index entry). Adding an index on that
    column (or on any column the source updates) makes every synced update write index entries.
  - On the source, a unique index on the rowversion column keeps the window query a seek; under locking READ
    COMMITTED (no C(READ_COMMITTED_SNAPSHOT)) the read can wait behind writers still holding locks, which delays
    a run but never skips a row (C(READPAST)/C(NOLOCK) are never used).
author:
  - berqenas platform team (@berqenas)
"""

EXAMPLES = r"""
- name: Sync two tables of the ERP into tenant acme
  berqenas.platform.mssql_sync:
    job: erp
    tenant: acme
    source:
      host: erp.example.com
      user: sync_reader
      password: "{{ erp_password }}"
      database: ERP
    login_unix_socket: /var/run/postgresql
    login_db: berqenas
    tables:
      - "[dbo].[Orders]"
      - source: "[dbo].[Customers]"
        target_table: customers
        delete_detection: pk_diff
        exclude: [Notes]
  register: sync

- name: Two-way sync of a table, PostgreSQL's edits win conflicts
  berqenas.platform.mssql_sync:
    job: erp
    tenant: acme
    source: "{{ erp_source }}"
    login_db: berqenas
    tables:
      - source: "[dbo].[Stock]"
        direction: both
        conflict_policy: latest_wins
        conflict_timestamp_column: ChangedAt
        delete_detection: pk_diff

- name: Pending rows only (no writes)
  berqenas.platform.mssql_sync:
    job: erp
    tenant: acme
    source: "{{ erp_source }}"
    login_db: berqenas
    tables: ["[dbo].[Orders]"]
  check_mode: true
"""

RETURN = r"""
status:
  description: V(ok), or V(locked) when another run held the job's lock.
  returned: always
  type: str
  sample: ok
tables:
  description: One entry per table, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    source:
      description: Source table as V([schema].[table]).
      type: str
      sample: "[dbo].[Orders]"
    target:
      description: Target table as V(schema.table) (unquoted).
      type: str
      sample: acme.Orders
    inserted:
      description: Rows inserted in the target.
      type: int
    updated:
      description: Rows updated in the target.
      type: int
    deleted:
      description: Rows deleted from the target (soft_delete, pk_diff, change_tracking or mode full).
      type: int
    ct_version_from:
      description: With C(delete_detection=change_tracking), the change tracking version the deletes were read
        from (the stored one; on a first run or a reload, the current version read before the rows were).
      type: int
      returned: delete_detection change_tracking
    ct_version_to:
      description: With C(delete_detection=change_tracking), C(CHANGE_TRACKING_CURRENT_VERSION()) of the
        snapshot the deletes were read in, stored as the next lower bound (in check mode, the current version).
      type: int
      returned: delete_detection change_tracking
    pending:
      description: In check mode, rows in the window that a run would read; otherwise null.
      type: int
    watermark_from:
      description: Lower bound of the window read (hex), null in mode full.
      type: str
      sample: "0x00000000000007D1"
    watermark_to:
      description: Upper bound (C(MIN_ACTIVE_ROWVERSION()) at the start), stored as the next lower bound.
      type: str
      sample: "0x0000000000000BB9"
    rows_per_s:
      description: Rows written per second of the table's run.
      type: float
    duration_s:
      description: Seconds spent on the table.
      type: float
    precision_notes:
      description: Columns whose values cannot be kept exactly, and why.
      type: list
      elements: str
      sample: ["Created: datetime2(7): the 100-ns digit is dropped (PostgreSQL keeps microseconds)"]
    added_columns:
      description: Target columns added because the source gained them.
      type: list
      elements: str
    resync:
      description: Why the table was truncated and reloaded, or null.
      type: str
    vacuumed:
      description: Whether C(VACUUM (ANALYZE)) ran on the target after this run loaded every row of it (false
        after an ordinary delta, in check mode, and when PostgreSQL refused or skipped it, with a warning saying why).
      type: bool
    changed:
      description: Whether this table's target changed (or would change in check mode).
      type: bool
    reverse:
      description: C(direction=both) only, the PostgreSQL -> SQL Server direction of the table.
      type: dict
      contains:
        applied:
          description: Keys written to SQL Server (inserted + updated + deleted).
          type: int
        inserted:
          description: Rows inserted on SQL Server.
          type: int
        updated:
          description: Rows updated on SQL Server.
          type: int
        deleted:
          description: Rows deleted on SQL Server.
          type: int
        conflicts:
          description: Conflicts by winner.
          type: dict
          sample: {"sqlserver": 1, "postgresql": 0}
        conflict_rows:
          description: The first 100 conflicts (table, key, winner); all are in C(berqenas.sync_conflict).
          type: list
          elements: dict
        position_from:
          description: Change-log position (transaction id:entry id) before the run.
          type: str
        position_to:
          description: Change-log position after the run.
          type: str
        resumed:
          description: Whether the run found a batch SQL Server had committed but PostgreSQL had not recorded.
          type: bool
        pending:
          description: In check mode, captured changes a run would apply; otherwise null.
          type: int
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.berqenas.platform.plugins.module_utils import mssql as M
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S
from ansible_collections.berqenas.platform.plugins.module_utils import pgconn, validation


def main():
    argument_spec = pgconn.postgres_argument_spec()
    argument_spec.update(
        source=dict(type="dict", options=M.mssql_source_spec()),
        job=dict(type="str", required=True),
        tenant=dict(type="str", required=True),
        tables=dict(type="list", elements="raw", required=True),
        full=dict(type="bool", default=False),
        force=dict(type="bool", default=False),
        max_delete_fraction=dict(type="float", default=0.5),
        on_rewind=dict(type="str", choices=["fail", "full_resync"], default="fail"),
        nul_character=dict(type="str", choices=["strip", "replace", "fail"], default="strip"),
        batch_size=dict(type="int", default=5000),
        commit_rows=dict(type="int", default=50000),
        target_fillfactor=dict(type="int", default=50),
        lock_timeout=dict(type="float", default=30),
        retries=dict(type="int", default=3),
        retry_delay=dict(type="float", default=1),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not pgconn.HAS_PSYCOPG:
        module.fail_json(msg=missing_required_lib("psycopg"), exception=str(pgconn.PSYCOPG_IMPORT_ERROR))
    if not M.HAS_PYMSSQL:
        module.fail_json(msg=missing_required_lib("pymssql"), exception=str(M.PYMSSQL_IMPORT_ERROR))
    p = module.params
    result = dict(changed=False, status="failed", tables=[])
    try:
        if not p["source"]:
            raise S.SyncError("source: the SQL Server connection is required")
        tenant = validation.tenant_name(p["tenant"])
        if not p["job"] or len(p["job"]) > 200:
            raise S.SyncError("job: expected a name of 1 to 200 characters")
        specs = S.table_specs(p["tables"], tenant)
        for n in ("batch_size", "commit_rows"):
            if p[n] < 1:
                raise S.SyncError("%s: must be at least 1" % n)
        if not 0 <= p["max_delete_fraction"] <= 1:
            raise S.SyncError("max_delete_fraction: must be between 0 and 1")
        if not 10 <= p["target_fillfactor"] <= 100:
            raise S.SyncError("target_fillfactor: must be between 10 and 100")
    except (validation.ValidationError, S.SyncError, TypeError) as exc:
        module.fail_json(msg="validate sync job: %s" % exc, **result)

    source = M.source_from_params(p["source"], batch_size=p["batch_size"])
    try:
        conn = pgconn.connect(p, autocommit=False)
    except Exception as exc:
        module.fail_json(msg="connect to PostgreSQL: %s" % str(exc).strip(), **result)
    engine = S.SyncEngine(source, conn, job=p["job"], owner_role=tenant + "_owner", on_rewind=p["on_rewind"],
                          nul_character=p["nul_character"], commit_rows=p["commit_rows"],
                          fillfactor=p["target_fillfactor"],
                          lock_timeout=p["lock_timeout"], retries=p["retries"], retry_delay=p["retry_delay"],
                          check_mode=module.check_mode, full=p["full"], force=p["force"],
                          max_delete_fraction=p["max_delete_fraction"], log=module.warn)
    try:
        out = engine.run(specs)
    except S.LockedError as exc:
        result["status"] = "locked"
        module.fail_json(msg=str(exc), **result)
    except (S.SyncError, M.SourceError) as exc:
        module.fail_json(msg="sync %s: %s" % (p["job"], exc), **result)
    except Exception as exc:
        module.fail_json(msg="sync %s: %s" % (p["job"], str(exc).strip()), exception=traceback.format_exc(),
                         **result)
    finally:
        conn.close()
    result.update(changed=out["changed"], status="ok", tables=out["tables"])
    if module._diff:
        result["diff"] = dict(
            before="".join("%s: %s\n" % (t["target"], t["watermark_from"]) for t in out["tables"]),
            after="".join("%s: %s\n" % (t["target"], t["watermark_to"]) for t in out["tables"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()

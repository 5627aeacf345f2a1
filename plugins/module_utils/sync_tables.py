# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tables of a sync job: validated specifications (module option ``tables``) and their plans,
resolved against the source catalog (columns, keys, rowversion column, mapped types)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.berqenas.platform.plugins.module_utils import mssql_tsql as tsql
from ansible_collections.berqenas.platform.plugins.module_utils import validation
from ansible_collections.berqenas.platform.plugins.module_utils.sync_types import (
    SyncError, check_pg_ident, is_rowversion_type, map_column)

# ---- table specifications ------------------------------------------------------------------------

MODES = ("delta", "full")
DELETE_DETECTION = ("none", "soft_delete", "pk_diff", "change_tracking")


class TableSpec(object):
    """One table to sync, validated before anything is touched."""

    def __init__(self, source, target_schema, target_table=None, key_columns=None, rowversion_column=None,
                 include=None, exclude=None, mode="delta", delete_detection="none", soft_delete_column=None,
                 soft_delete_value=None, direction="forward", conflict_policy=None, conflict_timestamp_column=None):
        try:
            self.source_schema, self.source_table = tsql.parse_two_part_name(source)
        except tsql.TsqlError as e:
            raise SyncError("table %r: %s" % (source, e))
        self.target_schema = check_pg_ident(target_schema, "target schema")
        self.target_table = check_pg_ident(target_table or self.source_table, "target table")
        self.key_columns = list(key_columns) if key_columns else None
        self.rowversion_column = rowversion_column or None
        self.include = list(include) if include else None
        self.exclude = list(exclude) if exclude else []
        if mode not in MODES:
            raise SyncError("table %s: mode must be one of %s" % (source, ", ".join(MODES)))
        self.mode = mode
        if delete_detection not in DELETE_DETECTION:
            raise SyncError("table %s: delete_detection must be one of %s" % (source, ", ".join(DELETE_DETECTION)))
        if delete_detection == "soft_delete" and not soft_delete_column:
            raise SyncError("table %s: delete_detection soft_delete needs soft_delete_column" % source)
        if delete_detection == "change_tracking" and mode != "delta":
            raise SyncError("table %s: delete_detection change_tracking needs mode delta (mode full already deletes "
                            "what the source no longer holds)" % source)
        self.delete_detection = delete_detection
        self.soft_delete_column = soft_delete_column
        self.soft_delete_value = True if soft_delete_value is None else soft_delete_value
        self.direction, self.conflict_policy, self.conflict_timestamp_column = validation.checked(
            SyncError, validation.sync_direction_options, direction, conflict_policy, conflict_timestamp_column,
            delete_detection, "table %s" % source)
        if self.direction == "both" and mode != "delta":
            raise SyncError("table %s: direction both needs mode delta (a rowversion column)" % source)
        for c in (self.key_columns or []) + self.exclude + (self.include or []):
            try:
                tsql.quote_ident(c)
            except tsql.TsqlError as e:
                raise SyncError("table %s: %s" % (source, e))

    @property
    def source_name(self):
        return tsql.quote_table(self.source_schema, self.source_table)

    @property
    def target_name(self):
        return "%s.%s" % (self.target_schema, self.target_table)


TABLE_KEYS = frozenset(["target_schema", "target_table", "key_columns", "rowversion_column", "include", "exclude",
                        "mode", "delete_detection", "soft_delete_column", "soft_delete_value", "direction",
                        "conflict_policy", "conflict_timestamp_column"])


def table_specs(tables, default_schema):
    """Validate a list of dicts (module option ``tables``) into TableSpecs; collisions are errors."""
    specs = []
    seen_src, seen_tgt = {}, {}
    for t in tables or []:
        if isinstance(t, str):
            t = {"source": t}
        t = dict(t)
        src = t.pop("source", None)
        if not src or not isinstance(src, str):
            raise SyncError("tables: every entry needs source ([schema].[table])")
        unknown = sorted(set(t) - TABLE_KEYS)
        if unknown:
            raise SyncError("table %s: unknown option(s) %s (known: %s)" % (
                src, ", ".join(map(str, unknown)), ", ".join(sorted(TABLE_KEYS))))
        spec = TableSpec(src, t.pop("target_schema", None) or default_schema, **{
            k: v for k, v in t.items() if v is not None})
        ks = (spec.source_schema, spec.source_table)
        kt = (spec.target_schema, spec.target_table)
        if ks in seen_src:
            raise SyncError("tables: %s listed twice" % spec.source_name)
        if kt in seen_tgt:
            raise SyncError("tables: %s and %s both map to target %s" % (
                seen_tgt[kt], spec.source_name, spec.target_name))
        seen_src[ks] = True
        seen_tgt[kt] = spec.source_name
        specs.append(spec)
    if not specs:
        raise SyncError("tables: nothing to sync")
    return specs


def remotedb_name(name):
    """A remote database (sync job) name, by the collection's one name rule (module_utils.validation)."""
    return validation.checked(SyncError, validation.remotedb_name, name)


def host_name(value):
    """A SQL Server host: an IP address or a DNS name (module_utils.validation.host)."""
    return validation.checked(SyncError, validation.host, value)


class TablePlan(object):
    """A table resolved against the source catalog: columns, keys, rowversion, mapped types."""

    def __init__(self, spec, colmaps, keys, rv):
        self.spec = spec
        self.colmaps = colmaps          # source columns read, in SELECT order
        self.keys = keys                # key column names
        self.rv = rv                    # rowversion column name or None (mode full)
        self.source_columns = [c.name for c in colmaps]
        self.target_cols = [tc for c in colmaps for tc in c.target_columns()]
        self.notes = [c.name + ": " + c.note for c in colmaps if c.note]
        self.target_oid = None          # pg_class oid of the target once it exists (kept in the state)


def plan_table(source, spec):
    """Discover a table's columns, keys and rowversion column; validate; map types."""
    ttype = source.table_type(spec.source_schema, spec.source_table)
    if ttype is None:
        raise SyncError("table %s: not found in the source database" % spec.source_name)
    cols = source.columns(spec.source_schema, spec.source_table)
    if not cols:
        raise SyncError("table %s: no columns visible" % spec.source_name)
    names = [c["COLUMN_NAME"] for c in cols]
    byname = dict((c["COLUMN_NAME"], c) for c in cols)
    for c in spec.exclude + (spec.include or []):
        if c not in byname:
            raise SyncError("table %s: column %r (include/exclude) does not exist" % (spec.source_name, c))
    rvs = [n for n in names if is_rowversion_type(byname[n]["DATA_TYPE"])]
    rv = spec.rowversion_column
    if rv is not None:
        if rv not in byname:
            raise SyncError("table %s: rowversion column %r does not exist" % (spec.source_name, rv))
        if not is_rowversion_type(byname[rv]["DATA_TYPE"]):
            raise SyncError("table %s: column %r is %s, not rowversion" % (
                spec.source_name, rv, byname[rv]["DATA_TYPE"]))
    elif rvs:
        rv = rvs[0]
    if spec.mode == "delta" and rv is None:
        raise SyncError("table %s: no rowversion column, so no delta sync is possible; add one to the source "
                        "table or set mode: full" % spec.source_name)
    if spec.mode == "full":
        rv = None
    keys = spec.key_columns or source.primary_key(spec.source_schema, spec.source_table)
    if not keys:
        raise SyncError("table %s: no primary key; set key_columns" % spec.source_name)
    for k in keys:
        if k not in byname:
            raise SyncError("table %s: key column %r does not exist" % (spec.source_name, k))
        if k in spec.exclude:
            raise SyncError("table %s: key column %r cannot be excluded" % (spec.source_name, k))
    must = set(keys) | ({rv} if rv else set())
    if spec.soft_delete_column:
        if spec.soft_delete_column not in byname:
            raise SyncError("table %s: soft_delete_column %r does not exist" % (
                spec.source_name, spec.soft_delete_column))
        must.add(spec.soft_delete_column)
    selected = [n for n in names
                if (n in must) or ((spec.include is None or n in spec.include) and n not in spec.exclude)]
    colmaps = [map_column(byname[n]) for n in selected]
    seen = {}
    for c in colmaps:
        for tname, _t, _c in c.target_columns():
            check_pg_ident(tname, "table %s: target column" % spec.source_name)
            if tname in seen:
                raise SyncError("table %s: target column %r would hold both %r and %r" % (
                    spec.source_name, tname, seen[tname], c.name))
            seen[tname] = c.name
    return TablePlan(spec, colmaps, list(keys), rv)

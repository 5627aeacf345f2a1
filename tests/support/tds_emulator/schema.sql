-- tds_emulator: catalog, rowversion counter and SQL Server catalog views in a backing PostgreSQL database.
-- Idempotent; run under pg_advisory_xact_lock by TdsEmulator.add_database.
CREATE SCHEMA IF NOT EXISTS tds_meta;
CREATE SCHEMA IF NOT EXISTS tds_ops;
CREATE SCHEMA IF NOT EXISTS tds_sys;
CREATE SCHEMA IF NOT EXISTS tds_information_schema;
CREATE SCHEMA IF NOT EXISTS dbo;

-- the database rowversion: @@DBTS starts at 2000 like a fresh SQL Server database
CREATE SEQUENCE IF NOT EXISTS tds_meta.rowversion AS bigint MINVALUE 1 START 2001;
CREATE SEQUENCE IF NOT EXISTS tds_meta.object_ids AS integer START 581577110 INCREMENT 16;

CREATE TABLE IF NOT EXISTS tds_meta.dbinfo (
    id integer PRIMARY KEY CHECK (id = 1),
    name text NOT NULL,
    database_id integer NOT NULL,
    database_guid uuid NOT NULL,
    family_guid uuid NOT NULL,
    recovery_fork_guid uuid NOT NULL,
    first_recovery_fork_guid uuid NOT NULL
);

CREATE TABLE IF NOT EXISTS tds_meta.schemas (
    schema_id integer PRIMARY KEY,
    name text NOT NULL,
    pg_name text NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS schemas_name ON tds_meta.schemas (lower(name));
INSERT INTO tds_meta.schemas VALUES (1, 'dbo', 'dbo') ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS tds_meta.tables (
    object_id integer PRIMARY KEY,
    schema_id integer NOT NULL REFERENCES tds_meta.schemas,
    name text NOT NULL,
    pg_name text NOT NULL,
    relid oid NOT NULL,
    create_date timestamp(3) NOT NULL DEFAULT LOCALTIMESTAMP(3)
);
CREATE UNIQUE INDEX IF NOT EXISTS tables_name ON tds_meta.tables (schema_id, lower(name));

CREATE TABLE IF NOT EXISTS tds_meta.columns (
    object_id integer NOT NULL REFERENCES tds_meta.tables ON DELETE CASCADE,
    column_id integer NOT NULL,
    name text NOT NULL,
    pg_name text NOT NULL,
    attnum integer NOT NULL,
    type_name text NOT NULL,
    length integer,            -- characters for char types, bytes for binary, -1 = max
    precision integer,
    scale integer,
    is_nullable boolean NOT NULL,
    is_identity boolean NOT NULL,
    default_text text,
    -- SQL Server catalog figures, computed by the emulator
    max_length integer NOT NULL,
    system_type_id integer NOT NULL,
    num_precision integer NOT NULL,
    num_scale integer NOT NULL,
    is_precision integer,
    is_radix integer,
    is_scale integer,
    is_dt_precision integer,
    is_char_len integer,
    is_octet_len integer,
    PRIMARY KEY (object_id, column_id)
);

CREATE TABLE IF NOT EXISTS tds_meta.constraints (
    object_id integer NOT NULL REFERENCES tds_meta.tables ON DELETE CASCADE,
    name text NOT NULL,
    pg_name text NOT NULL,
    kind text NOT NULL,
    columns text[] NOT NULL,
    PRIMARY KEY (object_id, name)
);

-- rowversion ------------------------------------------------------------------------------------
-- A transaction registers the first value it takes as a transaction-level advisory lock (key = the
-- value); MIN_ACTIVE_ROWVERSION() is the lowest registered value of a still-open transaction.
-- Key -1 (session level) orders registration against MIN_ACTIVE_ROWVERSION() reads.
CREATE OR REPLACE FUNCTION tds_meta.dbts_int() RETURNS bigint LANGUAGE sql VOLATILE AS $$
    SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM tds_meta.rowversion
$$;

CREATE OR REPLACE FUNCTION tds_meta.dbts() RETURNS bytea LANGUAGE sql VOLATILE AS $$
    SELECT int8send(tds_meta.dbts_int())
$$;

CREATE OR REPLACE FUNCTION tds_meta.next_rv() RETURNS bytea LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v bigint;
BEGIN
    IF current_setting('tds.rv_active', true) IS DISTINCT FROM 'y' THEN
        PERFORM pg_advisory_lock_shared(-1::bigint);
        BEGIN
            v := nextval('tds_meta.rowversion');
            PERFORM pg_advisory_xact_lock_shared(v);
        EXCEPTION WHEN OTHERS OR query_canceled THEN
            PERFORM pg_advisory_unlock_shared(-1::bigint);  -- a session lock must not outlive a cancel
            RAISE;
        END;
        PERFORM pg_advisory_unlock_shared(-1::bigint);
        PERFORM set_config('tds.rv_active', 'y', true);
    ELSE
        v := nextval('tds_meta.rowversion');
    END IF;
    RETURN int8send(v);
END
$$;

CREATE OR REPLACE FUNCTION tds_meta.min_active_rowversion() RETURNS bytea LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v bigint;
BEGIN
    PERFORM pg_advisory_lock(-1::bigint);
    BEGIN
        SELECT min((l.classid::bigint << 32) | l.objid::bigint) INTO v
          FROM pg_locks l
         WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND ((l.classid::bigint << 32) | l.objid::bigint) > 0;
        IF v IS NULL THEN
            v := tds_meta.dbts_int() + 1;
        END IF;
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        PERFORM pg_advisory_unlock(-1::bigint);
        RAISE;
    END;
    PERFORM pg_advisory_unlock(-1::bigint);
    RETURN int8send(v);
END
$$;

-- datetimeoffset is stored as text 'YYYY-MM-DD HH:MI:SS.ffffffZ+HH:MM' (UTC instant, then the offset)
CREATE OR REPLACE FUNCTION tds_meta.dto_norm(v text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    m text[];
    off integer := 0;
    ts timestamp;
BEGIN
    IF v IS NULL OR v ~ '^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}Z[+-]\d\d:\d\d$' THEN
        RETURN v;
    END IF;
    m := regexp_match(v, '^\s*(.*?)\s*(?:([+-])(\d{1,2}):(\d{2}))?\s*$');
    IF m IS NULL OR m[1] = '' THEN
        RAISE EXCEPTION 'Conversion failed when converting date and/or time from character string.'
            USING ERRCODE = 'TS241';
    END IF;
    BEGIN
        ts := m[1]::timestamp;
    EXCEPTION WHEN others THEN
        RAISE EXCEPTION 'Conversion failed when converting date and/or time from character string.'
            USING ERRCODE = 'TS241';
    END;
    IF m[2] IS NOT NULL THEN
        off := (m[3]::integer * 60 + m[4]::integer) * CASE WHEN m[2] = '-' THEN -1 ELSE 1 END;
        IF abs(off) > 14 * 60 THEN
            RAISE EXCEPTION 'Conversion failed when converting date and/or time from character string.'
                USING ERRCODE = 'TS241';
        END IF;
    END IF;
    ts := ts - make_interval(mins => off);
    RETURN to_char(ts, 'YYYY-MM-DD HH24:MI:SS.US') || 'Z' || CASE WHEN off < 0 THEN '-' ELSE '+' END
        || lpad((abs(off) / 60)::text, 2, '0') || ':' || lpad((abs(off) % 60)::text, 2, '0');
END
$$;

CREATE OR REPLACE FUNCTION tds_meta.nchar(n integer) RETURNS text LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE WHEN n = 0 THEN chr(65535) ELSE chr(n) END
$$;

CREATE OR REPLACE FUNCTION tds_meta.datalength(v bytea) RETURNS integer LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT octet_length(v)
$$;

-- CAST(x AS <integer type>) truncates toward zero on SQL Server
CREATE OR REPLACE FUNCTION tds_meta.trunc_num(v numeric) RETURNS numeric LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT trunc(v)
$$;
CREATE OR REPLACE FUNCTION tds_meta.trunc_num(v double precision) RETURNS numeric LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT trunc(v::numeric)
$$;
CREATE OR REPLACE FUNCTION tds_meta.trunc_num(v bigint) RETURNS numeric LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT v::numeric
$$;
CREATE OR REPLACE FUNCTION tds_meta.trunc_num(v text) RETURNS numeric LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT v::bigint::numeric
$$;
CREATE OR REPLACE FUNCTION tds_meta.tinyint(v numeric) RETURNS smallint LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    IF v < 0 OR v > 255 THEN
        RAISE EXCEPTION 'Arithmetic overflow error for data type tinyint, value = %.', v USING ERRCODE = 'TS220';
    END IF;
    RETURN v::smallint;
END
$$;

CREATE OR REPLACE FUNCTION tds_meta.db_id() RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT database_id FROM tds_meta.dbinfo
$$;

CREATE OR REPLACE FUNCTION tds_meta.object_id_of(s text, t text) RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT tb.object_id FROM tds_meta.tables tb JOIN tds_meta.schemas sc USING (schema_id)
     WHERE lower(sc.name) = lower(s) AND lower(tb.name) = lower(t)
$$;

CREATE OR REPLACE FUNCTION tds_meta.serverproperty(p text) RETURNS varchar(128) LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE lower(p)
        WHEN 'productversion' THEN '16.0.1000.6'
        WHEN 'productlevel' THEN 'RTM'
        WHEN 'productmajorversion' THEN '16'
        WHEN 'edition' THEN 'Developer Edition (64-bit)'
        WHEN 'engineedition' THEN '3'
        WHEN 'servername' THEN 'TDSEMU'
        WHEN 'machinename' THEN 'TDSEMU'
        WHEN 'collation' THEN 'SQL_Latin1_General_CP1_CI_AS'
        ELSE NULL END
$$;

-- string concatenation with + (found through search_path tds_ops)
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
                    WHERE n.nspname = 'tds_ops' AND o.oprname = '+') THEN
        CREATE OPERATOR tds_ops.+ (LEFTARG = text, RIGHTARG = text, FUNCTION = textcat);
    END IF;
END
$$;

-- MIN/MAX over binary (rowversion) columns, as SQL Server allows
CREATE OR REPLACE FUNCTION tds_meta.bytea_larger(a bytea, b bytea) RETURNS bytea LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE WHEN b > a THEN b ELSE a END
$$;
CREATE OR REPLACE FUNCTION tds_meta.bytea_smaller(a bytea, b bytea) RETURNS bytea LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE WHEN b < a THEN b ELSE a END
$$;
DO $$
BEGIN
    IF to_regprocedure('tds_ops.max(bytea)') IS NULL THEN
        CREATE AGGREGATE tds_ops.max(bytea) (SFUNC = tds_meta.bytea_larger, STYPE = bytea);
    END IF;
    IF to_regprocedure('tds_ops.min(bytea)') IS NULL THEN
        CREATE AGGREGATE tds_ops.min(bytea) (SFUNC = tds_meta.bytea_smaller, STYPE = bytea);
    END IF;
END
$$;

-- catalog names compare case-insensitively, as under SQL Server's default collation
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'tds_ci'
                    AND collnamespace = 'tds_meta'::regnamespace) THEN
        CREATE COLLATION tds_meta.tds_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
    END IF;
END
$$;

-- INFORMATION_SCHEMA -------------------------------------------------------------------------------
CREATE OR REPLACE VIEW tds_information_schema.tables AS
SELECT d.name::varchar(128) COLLATE tds_meta.tds_ci AS table_catalog, s.name::varchar(128) COLLATE tds_meta.tds_ci AS table_schema,
       t.name::varchar(128) COLLATE tds_meta.tds_ci AS table_name, 'BASE TABLE'::varchar(10) AS table_type
  FROM tds_meta.tables t JOIN tds_meta.schemas s USING (schema_id) CROSS JOIN tds_meta.dbinfo d;

CREATE OR REPLACE VIEW tds_information_schema.columns AS
SELECT d.name::varchar(128) COLLATE tds_meta.tds_ci AS table_catalog, s.name::varchar(128) COLLATE tds_meta.tds_ci AS table_schema,
       t.name::varchar(128) COLLATE tds_meta.tds_ci AS table_name, c.name::varchar(128) COLLATE tds_meta.tds_ci AS column_name,
       c.column_id AS ordinal_position, c.default_text::varchar(4000) AS column_default,
       (CASE WHEN c.is_nullable THEN 'YES' ELSE 'NO' END)::varchar(3) AS is_nullable,
       c.type_name::varchar(128) COLLATE tds_meta.tds_ci AS data_type, c.is_char_len AS character_maximum_length,
       c.is_octet_len AS character_octet_length, c.is_precision::smallint AS numeric_precision,
       c.is_radix::smallint AS numeric_precision_radix, c.is_scale AS numeric_scale,
       c.is_dt_precision::smallint AS datetime_precision,
       (CASE WHEN c.type_name IN ('char', 'varchar') THEN 'iso_1'
             WHEN c.type_name IN ('nchar', 'nvarchar') THEN 'UNICODE' END)::varchar(128) COLLATE tds_meta.tds_ci AS character_set_name,
       (CASE WHEN c.type_name IN ('char', 'varchar', 'nchar', 'nvarchar')
             THEN 'SQL_Latin1_General_CP1_CI_AS' END)::varchar(128) COLLATE tds_meta.tds_ci AS collation_name
  FROM tds_meta.columns c JOIN tds_meta.tables t USING (object_id) JOIN tds_meta.schemas s USING (schema_id)
  CROSS JOIN tds_meta.dbinfo d;

CREATE OR REPLACE VIEW tds_information_schema.table_constraints AS
SELECT d.name::varchar(128) COLLATE tds_meta.tds_ci AS constraint_catalog, s.name::varchar(128) COLLATE tds_meta.tds_ci AS constraint_schema,
       k.name::varchar(128) COLLATE tds_meta.tds_ci AS constraint_name, d.name::varchar(128) COLLATE tds_meta.tds_ci AS table_catalog,
       s.name::varchar(128) COLLATE tds_meta.tds_ci AS table_schema, t.name::varchar(128) COLLATE tds_meta.tds_ci AS table_name,
       k.kind::varchar(11) AS constraint_type, 'NO'::varchar(2) AS is_deferrable,
       'NO'::varchar(2) AS initially_deferred
  FROM tds_meta.constraints k JOIN tds_meta.tables t USING (object_id) JOIN tds_meta.schemas s USING (schema_id)
  CROSS JOIN tds_meta.dbinfo d;

CREATE OR REPLACE VIEW tds_information_schema.key_column_usage AS
SELECT d.name::varchar(128) COLLATE tds_meta.tds_ci AS constraint_catalog, s.name::varchar(128) COLLATE tds_meta.tds_ci AS constraint_schema,
       k.name::varchar(128) COLLATE tds_meta.tds_ci AS constraint_name, d.name::varchar(128) COLLATE tds_meta.tds_ci AS table_catalog,
       s.name::varchar(128) COLLATE tds_meta.tds_ci AS table_schema, t.name::varchar(128) COLLATE tds_meta.tds_ci AS table_name,
       u.col::varchar(128) COLLATE tds_meta.tds_ci AS column_name, u.ord::integer AS ordinal_position
  FROM tds_meta.constraints k JOIN tds_meta.tables t USING (object_id) JOIN tds_meta.schemas s USING (schema_id)
  CROSS JOIN tds_meta.dbinfo d CROSS JOIN LATERAL unnest(k.columns) WITH ORDINALITY AS u(col, ord);

-- sys ------------------------------------------------------------------------------------------------
CREATE OR REPLACE VIEW tds_sys.database_recovery_status AS
SELECT database_id, database_guid, family_guid, NULL::numeric(25, 0) AS last_log_backup_lsn,
       recovery_fork_guid, first_recovery_fork_guid, NULL::numeric(25, 0) AS fork_point_lsn
  FROM tds_meta.dbinfo;

CREATE OR REPLACE VIEW tds_sys.schemas AS
SELECT name::varchar(128) COLLATE tds_meta.tds_ci AS name, schema_id, 1 AS principal_id FROM tds_meta.schemas;

CREATE OR REPLACE VIEW tds_sys.tables AS
SELECT t.name::varchar(128) COLLATE tds_meta.tds_ci AS name, t.object_id, NULL::integer AS principal_id, t.schema_id,
       'U '::char(2) AS type, 'USER_TABLE'::varchar(60) AS type_desc, t.create_date
  FROM tds_meta.tables t;

CREATE OR REPLACE VIEW tds_sys.columns AS
SELECT c.object_id, c.name::varchar(128) COLLATE tds_meta.tds_ci AS name, c.column_id, c.system_type_id::smallint AS system_type_id,
       c.system_type_id AS user_type_id, c.max_length::smallint AS max_length,
       c.num_precision::smallint AS precision, c.num_scale::smallint AS scale, c.is_nullable,
       c.is_identity, false AS is_computed
  FROM tds_meta.columns c;

-- the emulator has no CREATE TRIGGER, so no table has a DML trigger (the view has sys.triggers' shape, no rows)
CREATE OR REPLACE VIEW tds_sys.triggers AS
SELECT NULL::varchar(128) COLLATE tds_meta.tds_ci AS name, NULL::integer AS object_id, 1::smallint AS parent_class,
       NULL::integer AS parent_id, 'TR'::char(2) AS type, false AS is_disabled, false AS is_instead_of_trigger
 WHERE false;

CREATE OR REPLACE VIEW tds_sys.types AS
SELECT v.name::varchar(128) COLLATE tds_meta.tds_ci AS name, v.id::smallint AS system_type_id, v.id AS user_type_id
  FROM (VALUES ('tinyint', 48), ('smallint', 52), ('int', 56), ('bigint', 127), ('bit', 104), ('decimal', 106),
               ('numeric', 108), ('money', 60), ('smallmoney', 122), ('float', 62), ('real', 59), ('date', 40),
               ('time', 41), ('datetime', 61), ('smalldatetime', 58), ('datetime2', 42),
               ('datetimeoffset', 43), ('char', 175), ('varchar', 167), ('nchar', 239), ('nvarchar', 231),
               ('binary', 173), ('varbinary', 165), ('timestamp', 189), ('uniqueidentifier', 36)) AS v(name, id);

-- change tracking --------------------------------------------------------------------------------
-- SQL Server gives a committing transaction the next change tracking version; here the first tracked change of
-- a transaction, run at commit (deferred constraint trigger), takes a transaction-level advisory lock held until
-- the commit is visible, so versions are handed out in commit order and the highest version a snapshot sees has
-- every lower one visible too: CHANGE_TRACKING_CURRENT_VERSION() is that version, read in the caller's snapshot.
CREATE TABLE IF NOT EXISTS tds_meta.ct_database (
    id integer PRIMARY KEY CHECK (id = 1),
    retention_minutes integer NOT NULL,
    auto_cleanup boolean NOT NULL
);
CREATE TABLE IF NOT EXISTS tds_meta.db_flags (name text PRIMARY KEY);  -- e.g. ALLOW_SNAPSHOT_ISOLATION
CREATE SEQUENCE IF NOT EXISTS tds_meta.ct_version AS bigint START 1;
CREATE TABLE IF NOT EXISTS tds_meta.ct_commits (version bigint PRIMARY KEY);
CREATE TABLE IF NOT EXISTS tds_meta.ct_tables (
    object_id integer PRIMARY KEY REFERENCES tds_meta.tables ON DELETE CASCADE,
    min_valid bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS tds_meta.ct_changes (
    object_id integer NOT NULL REFERENCES tds_meta.ct_tables ON DELETE CASCADE,
    pk jsonb NOT NULL,
    deleted boolean NOT NULL,
    version bigint NOT NULL,
    creation_version bigint,
    PRIMARY KEY (object_id, pk)
);
ALTER TABLE tds_meta.ct_changes ADD COLUMN IF NOT EXISTS context bytea;  -- SYS_CHANGE_CONTEXT of the last change

CREATE OR REPLACE FUNCTION tds_meta.ct_current_version() RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM tds_meta.ct_database)
                THEN coalesce((SELECT max(version) FROM tds_meta.ct_commits), 0) END
$$;

CREATE OR REPLACE FUNCTION tds_meta.ct_min_valid_version(obj integer) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT min_valid FROM tds_meta.ct_tables WHERE object_id = obj
$$;

CREATE OR REPLACE FUNCTION tds_meta.ct_tx_version() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v bigint := nullif(current_setting('tds.ct_v', true), '')::bigint;
BEGIN
    IF v IS NULL THEN
        PERFORM pg_advisory_xact_lock(1414, 1);
        v := nextval('tds_meta.ct_version');
        INSERT INTO tds_meta.ct_commits VALUES (v);
        PERFORM set_config('tds.ct_v', v::text, true);
    END IF;
    RETURN v;
END
$$;

-- WITH CHANGE_TRACKING_CONTEXT (c) <dml>: the session runs tds_meta.ct_set_context(c) before the statement and
-- tds_meta.ct_set_context(NULL) after it, in the same transaction. From then on (tds.ct_ctx_on, transaction-local)
-- an immediate row trigger (tds_ct_ctx, WHEN tds.ct_ctx_on) records each changed key's context (NULL after the
-- statement) in a temp table emptied at commit; the deferred capture, which runs at commit before that, stores
-- the context of the key's last change in the transaction. Transactions that never set a context pay the WHEN.
CREATE OR REPLACE FUNCTION tds_meta.ct_set_context(c bytea) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('pg_temp.tds_ct_ctx') IS NULL THEN
        CREATE TEMP TABLE tds_ct_ctx (object_id integer, pk jsonb, ctx bytea, PRIMARY KEY (object_id, pk))
            ON COMMIT DELETE ROWS;
    END IF;
    PERFORM set_config('tds.ct_ctx', coalesce(encode(c, 'hex'), ''), true);
    PERFORM set_config('tds.ct_ctx_on', 'on', true);
END
$$;

-- TG_ARGV: object_id, then the primary key's PostgreSQL column names (as for ct_capture)
CREATE OR REPLACE FUNCTION tds_meta.ct_context() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    c bytea := decode(nullif(current_setting('tds.ct_ctx', true), ''), 'hex');
    r jsonb;
BEGIN
    FOREACH r IN ARRAY CASE TG_OP WHEN 'INSERT' THEN ARRAY[to_jsonb(NEW)] WHEN 'DELETE' THEN ARRAY[to_jsonb(OLD)]
                           ELSE ARRAY[to_jsonb(OLD), to_jsonb(NEW)] END LOOP
        INSERT INTO pg_temp.tds_ct_ctx
            SELECT TG_ARGV[0]::integer, jsonb_object_agg(e.key, e.value), c FROM jsonb_each(r) e
             WHERE e.key = ANY (TG_ARGV[1:])
            ON CONFLICT (object_id, pk) DO UPDATE SET ctx = c;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION tds_meta.ct_context_of(obj integer, kk jsonb) RETURNS bytea LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('tds.ct_ctx_on', true) IS DISTINCT FROM 'on' THEN
        RETURN NULL;
    END IF;
    RETURN (SELECT ctx FROM pg_temp.tds_ct_ctx WHERE object_id = obj AND pk = kk);
END
$$;

-- TG_ARGV: object_id, then the primary key's PostgreSQL column names
CREATE OR REPLACE FUNCTION tds_meta.ct_capture() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    obj integer := TG_ARGV[0]::integer;
    k text[] := TG_ARGV[1:];
    v bigint := tds_meta.ct_tx_version();
    oldk jsonb;
    newk jsonb;
    cx bytea;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        SELECT jsonb_object_agg(e.key, e.value) INTO oldk FROM jsonb_each(to_jsonb(OLD)) e WHERE e.key = ANY (k);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        SELECT jsonb_object_agg(e.key, e.value) INTO newk FROM jsonb_each(to_jsonb(NEW)) e WHERE e.key = ANY (k);
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND oldk <> newk) THEN
        cx := tds_meta.ct_context_of(obj, oldk);
        INSERT INTO tds_meta.ct_changes AS c (object_id, pk, deleted, version, creation_version, context)
            VALUES (obj, oldk, true, v, NULL, cx)
            ON CONFLICT (object_id, pk) DO UPDATE SET deleted = true, version = v, context = cx;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        cx := tds_meta.ct_context_of(obj, newk);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND oldk <> newk) THEN
        INSERT INTO tds_meta.ct_changes AS c (object_id, pk, deleted, version, creation_version, context)
            VALUES (obj, newk, false, v, v, cx)
            ON CONFLICT (object_id, pk) DO UPDATE SET deleted = false, version = v, creation_version = v,
                context = cx;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO tds_meta.ct_changes AS c (object_id, pk, deleted, version, creation_version, context)
            VALUES (obj, newk, false, v, NULL, cx)
            ON CONFLICT (object_id, pk) DO UPDATE SET deleted = false, version = v, context = cx;
    END IF;
    RETURN NULL;
END
$$;
CREATE SCHEMA IF NOT EXISTS tds_ct;

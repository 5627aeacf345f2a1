"""The emulator's T-SQL translator, without a server (pure functions)."""

import pytest

from tests.support.tds_emulator.translate import (
    Context,
    TsqlError,
    parse_statement,
    pgname,
    split_statements,
    tokenize,
)

pytestmark = pytest.mark.tds

CTX = Context("SourceDb", spid=53, trancount=0)


def parse(text, ctx=CTX):
    units = split_statements(tokenize(text))
    return [parse_statement(u, text, ctx) for u in units]


def one(text):
    (stmt,) = parse(text)
    return stmt


def test_pymssql_connect_batch_is_one_set_per_statement():
    batch = ("SET ARITHABORT ON;SET CONCAT_NULL_YIELDS_NULL ON;SET ANSI_NULLS ON;SET ANSI_NULL_DFLT_ON ON;"
             "SET ANSI_PADDING ON;SET ANSI_WARNINGS ON;SET ANSI_NULL_DFLT_ON ON;SET CURSOR_CLOSE_ON_COMMIT ON;"
             "SET QUOTED_IDENTIFIER ON;SET TEXTSIZE 2147483647;")
    stmts = parse(batch)
    assert [s.kind for s in stmts] == ["set"] * 10
    assert stmts[-1].option == "TEXTSIZE" and stmts[-1].value == 2147483647


def test_statements_split_without_semicolons():
    kinds = [s.kind for s in parse("BEGIN TRAN INSERT INTO t (a) SELECT 1 UPDATE t SET a = 2 WHERE a = 1 "
                                   "SELECT @@TRANCOUNT COMMIT")]
    assert kinds == ["begin", "query", "query", "query", "commit"]


def test_alter_table_sub_clauses_stay_one_statement():
    kinds = [s.kind for s in parse("ALTER TABLE t ALTER COLUMN a int NULL ALTER TABLE t DROP COLUMN b DROP TABLE t"
                                   " DROP TABLE IF EXISTS t")]
    assert kinds == ["alter_column", "alter_drop", "drop_table", "drop_table"]


def test_window_select_translation():
    s = one("SELECT TOP (1000) [Id], [na]]me] FROM [dbo].[Customer] WITH (NOLOCK) WHERE [rv] >= 0x00000000000007D0"
            " AND [rv] < 0x7D1 ORDER BY [rv]")
    assert s.pg == ('SELECT "id" , "na]me" FROM "dbo" . "customer" WHERE "rv" >= \'\\x00000000000007d0\'::bytea'
                    ' AND "rv" < \'\\x07d1\'::bytea ORDER BY "rv" NULLS FIRST LIMIT 1000').replace('" . "', '"."')


def test_order_by_puts_nulls_where_sql_server_does_and_xor():
    assert one("SELECT a FROM t ORDER BY a, b DESC, c ASC, COALESCE(x, y)").pg == (
        'SELECT "a" FROM "t" ORDER BY "a" NULLS FIRST , "b" DESC NULLS LAST , "c" ASC NULLS FIRST ,'
        ' COALESCE("x", "y") NULLS FIRST')
    s = one("SELECT a FROM t WHERE a IN (SELECT TOP 1 b FROM u ORDER BY b DESC) ORDER BY a, b DESC")
    assert s.pg == ('SELECT "a" FROM "t" WHERE "a" IN ( SELECT "b" FROM "u" ORDER BY "b" DESC NULLS LAST LIMIT 1 )'
                    ' ORDER BY "a" NULLS FIRST , "b" DESC NULLS LAST')
    assert one("SELECT 2 ^ 3").pg == "SELECT 2 # 3"


def test_deprecated_hint_form_and_unqualified_insert():
    assert one("SELECT a FROM t (NOLOCK)").pg == 'SELECT "a" FROM "t"'
    assert one("INSERT t (a) VALUES (1)").pg == 'INSERT INTO "dbo"."t" ( "a" ) VALUES ( 1 )'


def test_special_functions_and_variables():
    s = one("SELECT MIN_ACTIVE_ROWVERSION(), @@DBTS, @@SPID, DB_ID(), COUNT_BIG(*), ISNULL(NULL, N'x')")
    assert "tds_meta.min_active_rowversion()" in s.pg and "tds_meta.dbts()" in s.pg
    assert "CAST(53 AS smallint)" in s.pg and "count(*)" in s.pg and "COALESCE(NULL, 'x')" in s.pg


def test_catalog_schemas_are_mapped_and_names_three_part():
    s = one("SELECT c.COLUMN_NAME FROM SourceDb.INFORMATION_SCHEMA.COLUMNS c WHERE c.TABLE_NAME = N'T'")
    assert '"tds_information_schema"."columns"' in s.pg and "'T'" in s.pg
    with pytest.raises(TsqlError) as e:
        one("SELECT * FROM OtherDb.dbo.t")
    assert e.value.number == 208


def test_strings_nul_and_seven_digit_fractions():
    s = one("SELECT N'a''b', 'x\x00y', '2020-01-01 10:00:00.1234567'")
    assert "'a''b'" in s.pg and "'x\uffffy'" in s.pg and "'2020-01-01 10:00:00.123456'" in s.pg
    with pytest.raises(TsqlError):
        one("SELECT N'\uffff'")


def test_long_names_fit_postgresql_and_stay_distinct():
    a, b = "A" * 127 + "1", "A" * 127 + "2"
    assert len(pgname(a).encode()) <= 63 and pgname(a) != pgname(b)
    assert pgname("Orders") == "orders"


@pytest.mark.parametrize("text, number", [
    ("GRANT SELECT ON t TO u", 102),
    ("SELECT SOUNDEX('a')", 195),
    ("SELECT @v", 137),
    ("SELECT 'open", 105),
    ("CREATE TABLE t (x xml)", 2715),
    ("SELECT CONVERT(varchar(10), GETDATE(), 120)", 102),
    ("DELETE TOP (5) FROM t", 156),
    ("SET ROWCOUNT 5", 102),
    ("SELECT CAST(N'2020-01-01 10:00 +02:00' AS datetimeoffset)", 102),
    ("SELECT a FROM t WHERE a LIKE N'[a-c]%'", 156),
])
def test_outside_the_subset_is_a_sql_server_error(text, number):
    with pytest.raises(TsqlError) as e:
        parse(text)
    assert e.value.number == number


def test_create_table_parse():
    s = one("CREATE TABLE [dbo].[T] (id int IDENTITY(1,1) NOT NULL, code nvarchar(max) NULL DEFAULT (N'x'),"
            " amount decimal(38, 4), rv rowversion, CONSTRAINT [PK_T] PRIMARY KEY CLUSTERED (id ASC))")
    assert s.kind == "create_table" and s.table == ("dbo", "T")
    assert [(c.name, c.type.name, c.type.length, c.type.precision, c.type.scale) for c in s.columns] == [
        ("id", "int", None, None, None), ("code", "nvarchar", -1, None, None), ("amount", "decimal", None, 38, 4),
        ("rv", "timestamp", None, None, None)]
    assert s.columns[0].identity == (1, 1) and s.columns[1].default == "( 'x' )"
    assert [(k.name, k.kind, k.columns) for k in s.constraints] == [("PK_T", "PRIMARY KEY", ["id"])]


def test_update_from_a_derived_table():
    s = one("UPDATE t SET [name] = v.[name], t.qty = v.qty FROM [dbo].[T] AS t INNER JOIN (VALUES (CAST(1 AS int),"
            " N'a', NULL), (2, N'b', 5)) AS v ([id], [name], qty) ON t.[id] = v.[id] WHERE v.qty > 0")
    assert s.kind == "query" and s.cmd == 0xC5
    assert s.pg == ('UPDATE "dbo"."t" AS "t" SET "name" = "v"."name", "qty" = "v"."qty" FROM (VALUES ('
                    ' CAST(tds_meta.trunc_num(1) AS integer) , \'a\' , NULL ) , ( 2 , \'b\' , 5 )) AS "v" ("id",'
                    ' "name", "qty") WHERE ("t"."id" = "v"."id") AND ("v"."qty" > 0)')
    assert one("UPDATE dbo.T SET name = s.name FROM dbo.T JOIN dbo.S s WITH (NOLOCK) ON T.id = s.id").pg == (
        'UPDATE "dbo"."t" SET "name" = "s"."name" FROM "dbo"."s" AS "s" WHERE ("t"."id" = "s"."id")')


@pytest.mark.parametrize("text", [
    "UPDATE dbo.T SET name = 1 FROM dbo.T x JOIN dbo.S s ON x.id = s.id",       # target is not the FROM alias
    "UPDATE x SET name = 1 FROM dbo.T x LEFT JOIN dbo.S s ON x.id = s.id",      # outer join
    "UPDATE x SET s.name = 1 FROM dbo.T x JOIN dbo.S s ON x.id = s.id",         # SET of another table's column
    "UPDATE x SET name = 1 FROM dbo.T x JOIN (VALUES (1)) ON x.id = 1",         # derived table without alias
    "UPDATE x SET name = 1 FROM dbo.T x JOIN dbo.S s ON x.id = s.id JOIN dbo.U u ON u.id = s.id",  # two joins
    "UPDATE x SET name = 1 FROM dbo.T x, dbo.S s WHERE x.id = s.id",            # comma join
    "UPDATE t SET a = 1 WHERE id IN (SELECT id FROM s)",                        # FROM in a subquery
])
def test_update_from_outside_the_subset_is_a_syntax_error(text):
    with pytest.raises(TsqlError) as e:
        parse(text)
    assert e.value.number in (102, 156)


def test_output_inserted_becomes_returning():
    """OUTPUT inserted.col [AS alias] of an INSERT or an UPDATE (both forms) -> RETURNING, qualified by the
    UPDATE ... FROM target's alias (the derived table has columns of the same names)."""
    s = one("INSERT INTO dbo.T (id, [Name]) OUTPUT inserted.id, inserted.[rv] AS new_rv VALUES (1, N'a')")
    assert s.cmd == 0xC3 and s.output and s.pg.endswith(' RETURNING "id", "rv" AS "new_rv"')
    assert s.aliases == {"new_rv": "new_rv"} and not getattr(s, "seek_join", False)
    s = one("UPDATE t SET name = v.name OUTPUT inserted.id, inserted.rv FROM dbo.T AS t JOIN (VALUES (1, N'a'))"
            " AS v (id, name) ON t.id = v.id")
    assert s.cmd == 0xC5 and s.seek_join and s.pg.endswith(' RETURNING "t"."id", "t"."rv"')
    assert one("UPDATE dbo.T SET name = N'x' OUTPUT inserted.Name WHERE id = 1").pg == (
        'UPDATE "dbo"."t" SET "name" = \'x\' WHERE "id" = 1 RETURNING "name"')
    # a guarded insert from a values list is planned as the UPDATE ... FROM (an index seek per row)
    s = one("INSERT INTO dbo.T (id) OUTPUT inserted.id SELECT v.c0 FROM (VALUES (1)) AS v (c0) WHERE NOT EXISTS"
            " (SELECT 1 FROM dbo.T AS x WITH (UPDLOCK, HOLDLOCK) WHERE x.id = v.c0)")
    assert s.seek_join and s.pg.endswith(' RETURNING "id"')


@pytest.mark.parametrize("text", [
    "UPDATE dbo.T SET name = N'x' OUTPUT deleted.name WHERE id = 1",           # values before: not supported
    "INSERT INTO dbo.T (id) OUTPUT inserted.* VALUES (1)",
    "INSERT INTO dbo.T (id) OUTPUT inserted.id INTO @t VALUES (1)",
    "UPDATE dbo.T SET name = N'x' OUTPUT inserted.id + 1 WHERE id = 1",       # expressions
    "UPDATE dbo.T SET name = N'x' OUTPUT WHERE id = 1",
])
def test_output_outside_the_subset_is_a_syntax_error(text):
    with pytest.raises(TsqlError) as e:
        parse(text)
    assert e.value.number in (102, 156)

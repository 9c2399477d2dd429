"""Real Postgres clients against `meshgate serve`'s Postgres port: psql, psycopg 3 (text and
binary), asyncpg (extended protocol, prepared statements, binary types), SQLAlchemy's
reflection as Superset uses it (`inspect()`, psycopg2 dialect), pandas `read_sql`, and PgJDBC
from a small Java program."""

import asyncio
import datetime
import decimal
import os
import pathlib
import subprocess
import warnings

import asyncpg
import pandas as pd
import psycopg
import pytest
import sqlalchemy

MASKED_EMAIL_LEN = 64  # sha256 hex


def dsn(gateway, user):
    host, port = gateway["pg"].split(":")
    return f"host={host} port={port} user={user} password={user} dbname=mesh sslmode=disable"


def test_psql_runs_queries_and_describes_tables(gateway):
    host, port = gateway["pg"].split(":")
    env = dict(os.environ, PGPASSWORD="marketer")
    base = ["psql", "-X", "-h", host, "-p", port, "-U", "marketer", "-d", "mesh"]
    out = subprocess.run(base + ["-Atc", "SELECT email FROM customers.customer_profiles LIMIT 1"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip()) == MASKED_EMAIL_LEN and "@" not in out.stdout
    # \d, as psql writes it against pg_catalog.
    out = subprocess.run(base + ["-c", r"\d customers.customer_profiles"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "email" in out.stdout and "timestamp with time zone" in out.stdout
    out = subprocess.run(base + ["-c", r"\dt checkout.*"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert "checkout_orders_summary" in out.stdout, out.stderr
    # The "+" form: the contract's description as the comment, no size of any product.
    out = subprocess.run(base + ["-c", r"\dt+ checkout.*"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Completed orders" in out.stdout and "bytes" not in out.stdout, out.stdout
    # \d+ reads pg_class.reloptions through a correlated unnest; the comments are the
    # contract's column descriptions.
    out = subprocess.run(base + ["-c", r"\d+ checkout.checkout_orders_summary"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Unique UUID for the order" in out.stdout and "Unit: USD" in out.stdout, out.stdout
    for command in (r"\df", r"\du", r"\dn+"):
        out = subprocess.run(base + ["-c", command],
                             capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, (command, out.stderr)
    # A refusal is an error with its SQLSTATE, and psql's exit status says so.
    out = subprocess.run(base[:-4] + ["-U", "guest", "-d", "mesh", "-v", "VERBOSITY=verbose",
                                      "-c", "SELECT * FROM customers.customer_profiles"],
                         capture_output=True, text=True, env=dict(env, PGPASSWORD="guest"),
                         timeout=60)
    assert out.returncode != 0 and "42501" in out.stderr, out.stderr


@pytest.mark.parametrize("binary", [False, True])
def test_psycopg_text_and_binary(gateway, binary):
    with psycopg.connect(dsn(gateway, "analyst")) as conn:
        cur = conn.cursor(binary=binary)
        cur.execute(
            "SELECT customer_id, email, birth_date, signup_at FROM customers.customer_profiles "
            "WHERE customer_id = %s", ("C000001",))
        rows = cur.fetchall()
        assert len(rows) == 1
        customer_id, email, birth_date, signup_at = rows[0]
        assert customer_id == "C000001" and "@" in email
        assert isinstance(birth_date, datetime.date)
        assert isinstance(signup_at, datetime.datetime) and signup_at.tzinfo is not None
        # Numbers and decimals arrive typed.
        cur.execute("SELECT total_amount, CAST(1 AS BIGINT) FROM checkout.checkout_orders_summary LIMIT 1")
        total, items = cur.fetchone()
        assert isinstance(total, decimal.Decimal) and isinstance(items, int)
    with psycopg.connect(dsn(gateway, "marketer")) as conn:
        cur = conn.cursor(binary=binary)
        cur.execute("SELECT email FROM customers.customer_profiles WHERE customer_id = %s",
                    ("C000001",))
        (email,) = cur.fetchone()
        assert len(email) == MASKED_EMAIL_LEN and "@" not in email


def test_psycopg_errors_and_session_settings(gateway):
    with psycopg.connect(dsn(gateway, "guest"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM customers.customer_profiles")
        # The connection goes on; client settings are kept, engine settings refused.
        conn.execute("SET application_name = 'notebook'")
        assert conn.execute("SHOW application_name").fetchone() == ("notebook",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET datafusion.execution.target_partitions = 1")
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_asyncpg_prepared_statements_and_binary_types(gateway):
    host, port = gateway["pg"].split(":")

    async def run():
        conn = await asyncpg.connect(host=host, port=int(port), user="analyst",
                                     password="analyst", database="mesh", ssl=False)
        try:
            stmt = await conn.prepare(
                "SELECT customer_id, birth_date, signup_at FROM customers.customer_profiles "
                "WHERE customer_id = $1")
            row = await stmt.fetchrow("C000002")
            assert row["customer_id"] == "C000002"
            assert isinstance(row["birth_date"], datetime.date)
            assert isinstance(row["signup_at"], datetime.datetime)
            count = await conn.fetchval(
                "SELECT count(*) FROM inventory.stock_levels WHERE quantity > $1", 0)
            assert count > 0
            # Server-side cursor: rows in pieces (portal row limits).
            async with conn.transaction():
                cur = await conn.cursor("SELECT sku FROM inventory.stock_levels ORDER BY sku")
                first = await cur.fetch(5)
                second = await cur.fetch(5)
            assert len(first) == 5 and len(second) == 5
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                await conn.execute("SET datafusion.optimizer.skip_failed_rules = true")
        finally:
            await conn.close()

    asyncio.run(run())


def test_sqlalchemy_reflection_and_pandas(gateway):
    host, port = gateway["pg"].split(":")
    engine = sqlalchemy.create_engine(
        f"postgresql+psycopg2://marketer:marketer@{host}:{port}/mesh?sslmode=disable")
    insp = sqlalchemy.inspect(engine)
    assert "customers" in insp.get_schema_names()
    assert "customer_profiles" in insp.get_table_names(schema="customers")
    columns = {c["name"]: c["type"] for c in insp.get_columns("customer_profiles", schema="customers")}
    assert "email" in columns and "signup_at" in columns
    # Contract descriptions are comments, as Superset shows them.
    comments = {c["name"]: c.get("comment") for c in
                insp.get_columns("checkout_orders_summary", schema="checkout")}
    assert comments["order_id"] == "Unique UUID for the order"
    assert insp.get_table_comment("checkout_orders_summary", schema="checkout")["text"]
    # pandas 3 takes SQLAlchemy 2 engines only (this venv keeps 1.4 for flightsql-dbapi): a
    # DBAPI connection, as notebooks often pass.
    with psycopg.connect(dsn(gateway, "marketer")) as conn, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        df = pd.read_sql("SELECT customer_id, email FROM customers.customer_profiles", conn)
    assert len(df) > 0
    assert df["email"].str.len().eq(MASKED_EMAIL_LEN).all()


def test_pgjdbc_metadata_masked_query_parameters_and_errors(gateway):
    """PgJDBC (Debian's libpostgresql-jdbc-java), as DBeaver, Metabase and Tableau load it."""
    jar = "/usr/share/java/postgresql.jar"
    assert os.path.exists(jar), "tests/run-all.sh installs libpostgresql-jdbc-java"
    program = pathlib.Path(__file__).parent / "jdbc" / "PgJdbc.java"
    out = subprocess.run(
        ["java", "-cp", jar, str(program), f"jdbc:postgresql://{gateway['pg']}/mesh", "marketer"],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert got["product"].startswith("PostgreSQL 16")
    assert "customers" in got["schemas"].split(",")
    assert "customer_profiles" in got["tables"].split(",")
    assert "email:text" in got["columns"] and "signup_at:timestamptz" in got["columns"]
    assert got["remarks"] == "Unique UUID for the order"
    assert len(got["email"]) == MASKED_EMAIL_LEN and "@" not in got["email"]
    assert int(got["count"]) > 0
    assert got["row"].startswith("C000001 ") and got["row"].endswith(" true")
    assert got["error"] == "42P01"
    assert got["after_error"] == "1"

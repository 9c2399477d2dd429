"""Real Flight SQL clients, unmodified: ADBC (dbapi, pandas), pyarrow.flight, and the
SQLAlchemy dialect of flightsql-dbapi that Superset uses. Each shows the marketer getting
masks and the analyst raw values."""

import re

import pyarrow as pa
import pyarrow.flight as flight
import pytest

EMAIL = "priya.smith0@example.com"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
Q = "SELECT email FROM customers.customer_profiles WHERE customer_id = 'C000000'"


# ---------------------------------------------------------------- ADBC
def adbc(gateway, user):
    import adbc_driver_flightsql.dbapi as flightsql
    return flightsql.connect(
        f"grpc://{gateway['flight']}",
        db_kwargs={"username": user, "password": user},
    )


@pytest.mark.parametrize("user", ["analyst", "marketer"])
def test_adbc_execute_and_arrow(gateway, user):
    with adbc(gateway, user) as conn, conn.cursor() as cur:
        cur.execute(Q)
        table = cur.fetch_arrow_table()
        value = table.column("email")[0].as_py()
        if user == "analyst":
            assert value == EMAIL
        else:
            assert HEX64.match(value), value


@pytest.mark.parametrize("user", ["analyst", "marketer"])
def test_adbc_parameters_and_pandas(gateway, user):
    with adbc(gateway, user) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT customer_id, email, phone FROM customers.customer_profiles "
            "WHERE customer_id = $1",
            parameters=("C000001",),
        )
        df = cur.fetch_df()
        assert list(df["customer_id"]) == ["C000001"]
        phone = df["phone"][0]
        if user == "analyst":
            assert phone.endswith("8395") and "*" not in phone
        else:
            assert phone == "************8395"


@pytest.mark.parametrize("user", ["analyst", "marketer"])
def test_adbc_question_mark_parameters(gateway, user):
    """JDBC tools and many ADBC users write `?`: numbered in order by the gateway, a `?` in
    a literal or a comment left alone, and the policy applied as with `$1`."""
    with adbc(gateway, user) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT customer_id, email, '?' AS mark FROM customers.customer_profiles "
            "-- which ones?\n"
            "WHERE customer_id IN (?, ?) ORDER BY customer_id",
            parameters=("C000000", "C000001"),
        )
        rows = cur.fetchall()
        assert [r[0] for r in rows] == ["C000000", "C000001"]
        assert all(r[2] == "?" for r in rows)
        if user == "analyst":
            assert rows[0][1] == EMAIL
        else:
            assert all(HEX64.match(r[1]) for r in rows), rows
        with pytest.raises(Exception, match="not both"):
            cur.execute(
                "SELECT customer_id FROM customers.customer_profiles "
                "WHERE customer_id = ? OR customer_id = $2",
                parameters=("C000000", "C000001"),
            )
            cur.fetchall()


def test_adbc_get_objects_lists_the_mesh(gateway):
    with adbc(gateway, "guest") as conn:
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        mesh = [c for c in objects if c["catalog_name"] == "mesh"][0]
        domains = {s["db_schema_name"]: s for s in mesh["catalog_db_schemas"]}
        assert {"checkout", "customers", "inventory", "web"} <= set(domains)
        tables = {t["table_name"]: t for t in domains["customers"]["db_schema_tables"]}
        assert "customer_profiles_v1" in tables
        columns = [c["column_name"] for c in tables["customer_profiles"]["table_columns"]]
        assert columns[:3] == ["customer_id", "email", "first_name"]


def test_adbc_guest_is_denied(gateway):
    import adbc_driver_manager
    with adbc(gateway, "guest") as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="permission denied"):
            cur.execute(Q)


def test_adbc_session_option_chooses_the_engine(gateway):
    """`x-meshgate-execution` as a Flight session option, set through ADBC: the gateway
    answers SetSessionOptions with a cookie, which the driver's cookie middleware sends
    back on every call. This gateway has no cluster, so `distributed` is refused per query
    until the option is set back or erased."""
    import adbc_driver_flightsql.dbapi as flightsql
    import adbc_driver_manager
    option = "adbc.flight.sql.session.option.x-meshgate-execution"
    erase = "adbc.flight.sql.session.optionerase.x-meshgate-execution"
    with flightsql.connect(
        f"grpc://{gateway['flight']}",
        db_kwargs={"username": "analyst", "password": "analyst",
                   "adbc.flight.sql.rpc.with_cookie_middleware": "true"},
    ) as conn, conn.cursor() as cur:
        def query():
            cur.execute(Q)
            return cur.fetch_arrow_table().column("email")[0].as_py()

        assert query() == EMAIL
        conn.adbc_connection.set_options(**{option: "distributed"})
        assert conn.adbc_connection.get_option(option) == "distributed"
        with pytest.raises(adbc_driver_manager.Error, match="no cluster configured"):
            query()
        conn.adbc_connection.set_options(**{option: "local"})
        assert query() == EMAIL
        with pytest.raises(adbc_driver_manager.Error):
            conn.adbc_connection.set_options(**{option: "fast"})
        assert query() == EMAIL, "a refused value changes nothing"
        conn.adbc_connection.set_options(**{option: "distributed"})
        conn.adbc_connection.set_options(**{erase: ""})
        assert query() == EMAIL


# ---------------------------------------------------------------- pyarrow.flight
def any_command(type_name: str, field1: str) -> bytes:
    """A Flight SQL command as protobuf Any: field 1 of the message is a string."""
    def ld(tag: int, payload: bytes) -> bytes:
        n, out = len(payload), bytearray([tag])
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                break
        return bytes(out) + payload
    inner = ld(0x0A, field1.encode())
    url = f"type.googleapis.com/arrow.flight.protocol.sql.{type_name}".encode()
    return ld(0x0A, url) + ld(0x12, inner)


@pytest.mark.parametrize("user", ["analyst", "marketer"])
def test_pyarrow_flight(gateway, user):
    client = flight.FlightClient(f"grpc://{gateway['flight']}")
    header = client.authenticate_basic_token(user, user)
    assert header[0] == b"authorization" and header[1].startswith(b"Bearer ")
    options = flight.FlightCallOptions(headers=[header])
    descriptor = flight.FlightDescriptor.for_command(any_command("CommandStatementQuery", Q))
    info = client.get_flight_info(descriptor, options)
    table = client.do_get(info.endpoints[0].ticket, options).read_all()
    assert table.schema.equals(info.schema)
    value = table.column(0)[0].as_py()
    assert value == EMAIL if user == "analyst" else HEX64.match(value)


def test_pyarrow_flight_refuses_bad_credentials(gateway):
    client = flight.FlightClient(f"grpc://{gateway['flight']}")
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token("analyst", "wrong")


# ---------------------------------------------------------------- SQLAlchemy (Superset)
def engine(gateway, user):
    from sqlalchemy import create_engine
    return create_engine(f"datafusion://{user}:{user}@{gateway['flight']}?insecure=true")


def test_sqlalchemy_reflection(gateway):
    from sqlalchemy import inspect
    insp = inspect(engine(gateway, "analyst"))
    assert "customer_profiles" in insp.get_table_names(schema="customers")
    cols = [c["name"] for c in insp.get_columns("customer_profiles", schema="customers")]
    assert cols[:2] == ["customer_id", "email"]


@pytest.mark.parametrize("user", ["analyst", "marketer"])
def test_sqlalchemy_query(gateway, user):
    from sqlalchemy import text
    with engine(gateway, user).connect() as conn:
        value = conn.execute(text(Q)).fetchone()[0]
    assert value == EMAIL if user == "analyst" else HEX64.match(value)

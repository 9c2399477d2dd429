#!/usr/bin/env bash
# Every test of meshgate: Rust (unit, SQL logic, end to end) and the real Python clients.
# Installs what it needs itself: a virtualenv under .venv (or $MESHGATE_VENV).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== Python virtualenv (client tests, moto for S3, DuckDB for the benchmark suite's smoke run)"
venv="${MESHGATE_VENV:-.venv}"
case "$venv" in /*) ;; *) venv="$PWD/$venv" ;; esac
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  -r tests/clients/requirements.txt -r benches/requirements.txt

echo "== psql and PgJDBC (Debian's postgresql-client, libpostgresql-jdbc-java, a JDK) for the Postgres port's tests"
if ! command -v psql >/dev/null || [ ! -e /usr/share/java/postgresql.jar ] \
    || ! java --list-modules 2>/dev/null | grep -q jdk.compiler; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  # The JDK: PgJdbc.java runs from source (java's source launcher needs jdk.compiler).
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends \
    postgresql-client libpostgresql-jdbc-java default-jdk-headless >/dev/null
fi
echo "== openssl, which makes the RSA keys of the identity-provider tests (ring makes no RSA keys)"
if ! command -v openssl >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends openssl >/dev/null
fi
echo "== a PostgreSQL server for the benchmark suite's smoke run (psycopg: meshgate vs PostgreSQL)"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi

echo "== cargo test"
# Includes the benches' small runs (`benches/tpch` runs the whole suite, with the local S3
# server and a Ballista cluster, at SF 0.1 here and SF 0.01 under a bare `cargo test`) and,
# through MESHGATE_TEST_PYTHON, the tests that start a local S3 server (moto) themselves.
MESHGATE_BENCH_PYTHON="$venv/bin/python" MESHGATE_TEST_PYTHON="$venv/bin/python" \
  MESHGATE_BENCH_SF="${MESHGATE_BENCH_SF:-0.1}" \
  cargo test --workspace --all-targets

echo "== Headless Chromium for the catalog page test"
if ! command -v chromium-headless-shell >/dev/null && ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium-headless-shell >/dev/null
fi

echo "== nginx for the replica test (round-robin gRPC proxy)"
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends nginx-light >/dev/null \
    || $SUDO apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi

echo "== Python client tests (ADBC, pyarrow.flight, SQLAlchemy/flightsql-dbapi; replicas behind nginx; psql, psycopg, asyncpg, SQLAlchemy/psycopg2 on the Postgres port)"
# `cargo test` above built target/debug/meshgate with the same features (a separate
# `cargo build` would resolve features without dev-dependencies and rebuild DataFusion).
MESHGATE_BIN="${CARGO_TARGET_DIR:-target}/debug/meshgate" "$venv/bin/python" -m pytest -q tests/clients

echo "== Alert rules (promtool check + unit tests)"
if ! command -v promtool >/dev/null; then
  # Debian's prometheus package ships promtool; this machine's CI runs as root.
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool check rules contracts/alerts/*.yaml
promtool test rules tests/alerts/*.test.yaml

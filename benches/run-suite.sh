#!/usr/bin/env bash
# The benchmark suite (README, "Benchmarks"): TPC-H in stock embedded DataFusion, through
# the gateway (clear and masked) and in DuckDB, over Postgres vs Flight SQL and psycopg vs
# a local PostgreSQL, on files with Utf8 strings and on files as
# tpchgen-cli writes them; the mask cost; the load test; with --s3, local
# files vs a local S3 server; small statements (benches/small.rs) and growth with the
# number of products (benches/mesh_size.rs); the refresh of a derived product
# (benches/derived.rs). Writes benches/RESULTS.md.
#
#   benches/run-suite.sh [--sf 1] [--runs 3] [--load-secs 20] [--clients 1,8,32,64]
#                        [--memory-limit-mb 1024] [--s3]
#
# Installs DuckDB and moto in a virtualenv (benches/.cache/venv, or $MESHGATE_BENCH_VENV) and builds
# meshgate in release mode (the first time: about 25 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${MESHGATE_BENCH_VENV:-benches/.cache/venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r benches/requirements.txt

started=$(date +%s)
MESHGATE_BENCH_COMMAND="benches/run-suite.sh $*" \
  cargo bench --bench tpch -- --python "$venv/bin/python" --results benches/RESULTS.md "$@"

# The same 22 queries on files as `tpchgen-cli --format parquet` writes them (Utf8View
# strings, Snappy): their TPC-H table only, appended.
cargo bench --bench tpch -- "$@" --layout tpchgen-cli --load-secs 1 --clients 1 \
  --results benches/.cache/RESULTS-tpchgen-cli.md
{
  echo
  echo "## TPC-H on files as tpchgen-cli writes them (\`--layout tpchgen-cli\`: Utf8View strings, Snappy)"
  sed -n '/^## TPC-H SF/,/^## Mask cost/p' benches/.cache/RESULTS-tpchgen-cli.md | sed '$d' | sed 's/^## /### /'
} >> benches/RESULTS.md

# Small statements as ADBC sends them, and how costs grow with the number of products:
# appended to the results in the form each bench prints.
{
  echo
  echo "## Small queries through the gateway vs embedded (\`cargo bench --bench small\`)"
  echo
  echo '```'
  cargo bench --bench small 2>/dev/null | sed -n '/^sample mesh/,$p'
  echo '```'
  echo
  echo "## Mesh size: startup, reload, one edited contract, session, 1-row statement (\`cargo bench --bench mesh_size\`)"
  echo
  echo '```'
  cargo bench --bench mesh_size 2>/dev/null | sed -n '/^products/,$p'
  echo '```'
  echo
  echo "## Refreshing a derived product: marketing.sales_by_region (\`cargo bench --bench derived\`)"
  echo
  echo '```'
  cargo bench --bench derived 2>/dev/null | sed -n '/^sales_by_region/,$p'
  echo '```'
} >> benches/RESULTS.md
echo "suite finished in $(( $(date +%s) - started )) s"

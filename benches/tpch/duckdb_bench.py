"""The DuckDB column of the TPC-H suite: the same 22 queries on the same Parquet files.

Called by the tpch bench (benches/tpch/main.rs), never by hand:

    python duckdb_bench.py --data DIR --queries DIR --runs N --threads T

Each table is a view over its Parquet files, so DuckDB reads and decodes them on every run as
DataFusion does (no import into DuckDB's own format). Prints one JSON object per query on
stdout: {"query": "q1", "rows": 4, "ms": [..]} (the first run is a warm-up, not listed), then
{"duckdb": "<version>"}.
"""

import argparse
import glob
import json
import os
import time

import duckdb

TABLES = ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True, help="the mesh data directory (tpch/<table>/v1/)")
    p.add_argument("--queries", required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()

    con = duckdb.connect(config={"threads": args.threads})
    for t in TABLES:
        files = sorted(glob.glob(os.path.join(args.data, "tpch", t, "v1", "*.parquet")))
        if not files:
            raise SystemExit(f"no Parquet files for {t} under {args.data}")
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet({files!r})")

    for i in range(1, 23):
        with open(os.path.join(args.queries, f"q{i}.sql")) as f:
            sql = f.read()
        times = []
        rows = 0
        for run in range(args.runs + 1):
            start = time.perf_counter()
            rows = len(con.execute(sql).fetchall())
            elapsed = (time.perf_counter() - start) * 1e3
            if run > 0:
                times.append(elapsed)
        print(json.dumps({"query": f"q{i}", "rows": rows, "ms": times}), flush=True)
    print(json.dumps({"duckdb": duckdb.__version__}), flush=True)


if __name__ == "__main__":
    main()

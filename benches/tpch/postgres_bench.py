"""psycopg fetching every row of one table: from meshgate's Postgres port and from a real
PostgreSQL server (Debian's) holding the same rows, loaded here from meshgate itself.

    python postgres_bench.py --meshgate 127.0.0.1:PORT --table tpch.lineitem --runs 3

Starts a throwaway PostgreSQL cluster (initdb, as the `postgres` user when run as root),
loads the table with COPY, and times `SELECT * FROM table` + `fetchall()` on both servers,
interleaved, text format (psycopg's default, as BI tools read), median of the runs after a
warm-up. Prints one JSON line last.
"""

import argparse
import glob
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

import psycopg

# Postgres type OIDs meshgate sends → the column types of the PostgreSQL copy.
TYPES = {16: "boolean", 20: "bigint", 21: "smallint", 23: "integer", 700: "real",
         701: "double precision", 1700: "numeric", 25: "text", 1043: "text", 1082: "date",
         1114: "timestamp", 1184: "timestamptz", 17: "bytea"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]))
    if not found:
        raise SystemExit("no PostgreSQL server: apt-get install postgresql (tests/run-all.sh does)")
    return os.path.dirname(found[-1])


def run_as_postgres(cmd):
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def timed(conn, sql):
    started = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(sql)
        rows = cur.fetchall()
    return time.perf_counter() - started, len(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--meshgate", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    host, port = args.meshgate.split(":")
    mesh = psycopg.connect(host=host, port=port, user="analyst", password="analyst",
                           dbname="mesh", sslmode="disable")

    bindir = postgres_bin()
    tmp = tempfile.mkdtemp(prefix="meshgate-pg-bench-")
    data, sockets = os.path.join(tmp, "data"), os.path.join(tmp, "sock")
    os.makedirs(sockets)
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres")
        shutil.chown(sockets, "postgres")
    pg_port = free_port()
    run_as_postgres([f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "bench", "--no-sync"])
    run_as_postgres([f"{bindir}/pg_ctl", "-D", data, "-w", "-l", os.path.join(tmp, "log"),
                     "-o", f"-p {pg_port} -k {sockets} -c listen_addresses=127.0.0.1 "
                           "-c fsync=off -c shared_buffers=512MB", "start"])
    try:
        pg = psycopg.connect(host="127.0.0.1", port=pg_port, user="bench", dbname="postgres")
        pg.autocommit = True
        version = pg.execute("SHOW server_version").fetchone()[0]

        # The same columns and rows, read from meshgate.
        with mesh.cursor() as cur:
            cur.execute(f"SELECT * FROM {args.table} LIMIT 0")
            columns = [(c.name, TYPES[c.type_code]) for c in cur.description]
        pg.execute("CREATE TABLE t (" + ", ".join(f'"{n}" {t}' for n, t in columns) + ")")
        with mesh.cursor() as src, pg.cursor() as dst:
            src.execute(f"SELECT * FROM {args.table}")
            with dst.copy("COPY t FROM STDIN") as copy:
                while batch := src.fetchmany(50_000):
                    for row in batch:
                        copy.write_row(row)
        pg.execute("VACUUM ANALYZE t")

        times = {"meshgate": [], "postgres": []}
        rows = None
        for run in range(args.runs + 1):
            m, n_m = timed(mesh, f"SELECT * FROM {args.table}")
            p, n_p = timed(pg, "SELECT * FROM t")
            assert n_m == n_p, f"meshgate {n_m} rows, PostgreSQL {n_p}"
            rows = n_m
            if run > 0:
                times["meshgate"].append(m)
                times["postgres"].append(p)
        print(json.dumps({
            "rows": rows,
            "meshgate_secs": statistics.median(times["meshgate"]),
            "postgres_secs": statistics.median(times["postgres"]),
            "postgres_version": f"PostgreSQL {version}",
        }))
    finally:
        run_as_postgres([f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "stop"])
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

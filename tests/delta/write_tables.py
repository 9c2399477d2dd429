"""Delta tables for meshgate's tests, written by a real Delta writer (the `deltalake`
package), never by meshgate.

    python tests/delta/write_tables.py ROOT

Writes under ROOT (a domain's data root, `shop`):

- orders/v1: four commits on top of the first write: an append, a delete (which rewrites
  a file: the folder keeps the removed one), a schema change (a new column, merged), and
  an append of a row in a new region. Read as a Parquet folder it would show the deleted
  row and a removed file's stale copy.
- regions/v1: partitioned by region (its values live in the log, not in the files).
- overwritten/v1: written, then overwritten: only the second write is the table.
- corrupt/v1: a valid first commit, then a commit that is not JSON.
- dv/v1: a table whose protocol needs the deletionVectors reader feature.
- escape/v1: a commit (written by hand, as a hostile writer could) that adds a file
  outside the table.
- plain/v1: a Parquet folder without a log.
- wrongtype/v1: the orders schema, for a contract that says otherwise.
- history/v1: three versions, for contracts that pin one.
- nullparts/v1: partitioned by region, two rows with no region (a null partition).
- piiparts/v1: partitioned by email, a PII column.

    python tests/delta/write_tables.py ROOT append    # orders/v1: one more row (order 7)
    python tests/delta/write_tables.py ROOT break     # orders/v1: overwritten without amount

Prints the version of orders/v1 after each step, one JSON line.
"""

import datetime
import json
import os
import pathlib
import sys

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable, TableFeatures, write_deltalake

ORDERS = pa.schema([
    ("order_id", pa.int64()),
    ("customer_id", pa.int64()),
    ("email", pa.string()),
    ("region", pa.string()),
    ("amount", pa.float64()),
    ("day", pa.date32()),
])


def orders(rows):
    cols = list(zip(*rows))
    return pa.table([pa.array(c, type=f.type) for c, f in zip(cols, ORDERS)], schema=ORDERS)


def day(n):
    return datetime.date(2026, 11, n)


def main():
    root = pathlib.Path(sys.argv[1])
    step = sys.argv[2] if len(sys.argv) > 2 else "create"
    if step == "append":
        write_deltalake(root / "orders" / "v1", orders([
            (7, 987650007, "gus@example.com", "EU", 70.0, day(7))]), mode="append", schema_mode="merge")
        return
    if step == "break":
        without = orders([(8, 987650008, "hal@example.com", "EU", 80.0, day(8))]).drop_columns(["amount"])
        write_deltalake(root / "orders" / "v1", without, mode="overwrite", schema_mode="overwrite")
        return
    versions = {}

    t = root / "orders" / "v1"
    write_deltalake(t, orders([
        (1, 987650001, "ann@example.com", "EU", 10.0, day(1)),
        (2, 987650002, "bob@example.com", "US", 20.0, day(2)),
        (3, 987650003, "cid@example.com", "EU", 30.0, day(3)),
    ]))
    write_deltalake(t, orders([(4, 987650004, "dee@example.com", "US", 40.0, day(4))]), mode="append")
    DeltaTable(t).delete("order_id = 2")
    with_note = orders([(5, 987650005, "eve@example.com", "EU", 50.0, day(5))])
    with_note = with_note.append_column("note", pa.array(["gift"], pa.string()))
    write_deltalake(t, with_note, mode="append", schema_mode="merge")
    write_deltalake(t, orders([(6, 987650006, "fay@example.com", "APAC", 60.0, day(6))]),
                    mode="append", schema_mode="merge")
    versions["orders"] = DeltaTable(t).version()

    t = root / "regions" / "v1"
    write_deltalake(t, orders([
        (1, 1, "a@example.com", "EU", 1.0, day(1)),
        (2, 2, "b@example.com", "US", 2.0, day(2)),
        (3, 3, "c@example.com", "EU", 3.0, day(3)),
    ]), partition_by=["region"])

    t = root / "overwritten" / "v1"
    write_deltalake(t, orders([(1, 1, "old@example.com", "EU", 1.0, day(1))]))
    write_deltalake(t, orders([
        (7, 7, "new@example.com", "US", 7.0, day(7)),
        (8, 8, "new2@example.com", "US", 8.0, day(8)),
    ]), mode="overwrite")

    t = root / "corrupt" / "v1"
    write_deltalake(t, orders([(1, 1, "a@example.com", "EU", 1.0, day(1))]))
    (t / "_delta_log" / "00000000000000000001.json").write_text("{this is not a commit\n")

    t = root / "dv" / "v1"
    write_deltalake(t, orders([(1, 1, "a@example.com", "EU", 1.0, day(1))]))
    DeltaTable(t).alter.add_feature(TableFeatures.DeletionVectors, allow_protocol_versions_increase=True)

    t = root / "escape" / "v1"
    write_deltalake(t, orders([(1, 1, "a@example.com", "EU", 1.0, day(1))]))
    # Another domain's file, added by a commit a hostile writer made by hand.
    outside = root.parent / "secrets" / "salaries.parquet"
    outside.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(orders([(99, 99, "ceo@example.com", "EU", 1e6, day(9))]), outside)
    add = {"add": {
        "path": "../../../secrets/salaries.parquet",
        "size": outside.stat().st_size,
        "partitionValues": {},
        "modificationTime": 1764460800000,
        "dataChange": True,
    }}
    (t / "_delta_log" / "00000000000000000001.json").write_text(json.dumps(add) + "\n")

    t = root / "plain" / "v1"
    t.mkdir(parents=True, exist_ok=True)
    pq.write_table(orders([(1, 1, "a@example.com", "EU", 1.0, day(1))]), t / "part-0.parquet")

    t = root / "wrongtype" / "v1"
    write_deltalake(t, orders([(1, 1, "a@example.com", "EU", 1.0, day(1))]))

    t = root / "history" / "v1"
    for n in range(3):
        write_deltalake(t, orders([(n, n, "h@example.com", "EU", float(n), day(n + 1))]), mode="append")

    t = root / "nullparts" / "v1"
    write_deltalake(t, orders([
        (1, 1, "a@example.com", "EU", 1.0, day(1)),
        (2, 2, "b@example.com", None, 2.0, day(2)),
        (3, 3, "c@example.com", None, 3.0, day(3)),
    ]), partition_by=["region"])

    t = root / "piiparts" / "v1"
    write_deltalake(t, orders([(1, 1, "a@example.com", "EU", 1.0, day(1))]), partition_by=["email"])

    print(json.dumps(versions))


if __name__ == "__main__":
    main()
    # The deltalake package's runtime can abort while the interpreter tears down (seen
    # under load): the work is done and flushed, so leave at once.
    sys.stdout.flush()
    os._exit(0)

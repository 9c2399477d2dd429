"""A Delta Lake copy of sample domains, written by a real Delta writer (`deltalake`), for
the SQL logic tests' `delta/` runs.

    python tests/delta/sample_as_delta.py SAMPLE_DATA TARGET DOMAIN...

Each product folder SAMPLE_DATA/<domain>/<dataset>/<version>/ becomes a Delta table at
TARGET/<domain>/<dataset>/<version>/, one commit per Parquet file (the first creates the
table, the others append), so the table holds the same rows in as many files.
"""

import os
import pathlib
import sys

import pyarrow.parquet as pq
from deltalake import write_deltalake


def main():
    source, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    for domain in sys.argv[3:]:
        for version in sorted((source / domain).glob("*/v*")):
            files = sorted(version.rglob("*.parquet"))
            table = target / version.relative_to(source)
            for i, f in enumerate(files):
                write_deltalake(table, pq.read_table(f), mode="error" if i == 0 else "append")


if __name__ == "__main__":
    main()
    # The deltalake package's runtime can abort while the interpreter tears down (seen
    # under load): the work is done and flushed, so leave at once.
    sys.stdout.flush()
    os._exit(0)

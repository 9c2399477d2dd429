"""A Delta Lake copy of sample domains, written by a real Delta writer (`deltalake`), for
the SQL logic tests' `delta/` runs.

    python tests/delta/sample_as_delta.py [--convert] SAMPLE_DATA TARGET DOMAIN...

Each product folder SAMPLE_DATA/<domain>/<dataset>/<version>/ becomes a Delta table at
TARGET/<domain>/<dataset>/<version>/, one commit per Parquet file (the first creates the
table, the others append), so the table holds the same rows in as many files.

With --convert (the benchmark's way), the table is the very same Parquet files, linked
into TARGET, with a log that `convert_to_deltalake` writes over them (statistics
included): a comparison with the folder then measures reading through the log, not two
writers' encodings.
"""

import os
import pathlib
import sys

import pyarrow.parquet as pq
from deltalake import convert_to_deltalake, write_deltalake


def main():
    args = sys.argv[1:]
    convert = args[0] == "--convert"
    if convert:
        args = args[1:]
    source, target = pathlib.Path(args[0]), pathlib.Path(args[1])
    for domain in args[2:]:
        for version in sorted((source / domain).glob("*/v*")):
            files = sorted(version.rglob("*.parquet"))
            table = target / version.relative_to(source)
            if convert:
                table.mkdir(parents=True)
                for f in files:
                    os.link(f.resolve(), table / f.name)
                convert_to_deltalake(str(table))
                continue
            for i, f in enumerate(files):
                write_deltalake(table, pq.read_table(f), mode="error" if i == 0 else "append")


if __name__ == "__main__":
    main()
    # The deltalake package's runtime can abort while the interpreter tears down (seen
    # under load): the work is done and flushed, so leave at once.
    sys.stdout.flush()
    os._exit(0)

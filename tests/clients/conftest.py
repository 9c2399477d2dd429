"""Starts one `meshgate serve` on free ports for the client tests, and stops it after."""

import os
import re
import subprocess
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def gateway(tmp_path_factory):
    binary = os.environ.get("MESHGATE_BIN", str(REPO / "target" / "debug" / "meshgate"))
    audit = tmp_path_factory.mktemp("audit") / "audit.log"
    config = tmp_path_factory.mktemp("config") / "meshgate.yaml"
    # The repository's configuration, with the audit file moved out of the checkout.
    text = (REPO / "meshgate.yaml").read_text()
    text = text.replace("audit_file: meshgate-audit.log", f"audit_file: {audit}")
    text = text.replace("contracts: contracts", f"contracts: {REPO / 'contracts'}")
    text = text.replace("data: sample-data", f"data: {REPO / 'sample-data'}")
    config.write_text(text)
    env = dict(os.environ, MESHGATE_HASH_KEY="client-tests-hash-key-0123456789")
    proc = subprocess.Popen(
        [binary, "serve", "--config", str(config),
         "--flight-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )
    # The server prints its addresses once both listeners are bound.
    line = proc.stdout.readline()
    m = re.search(r"grpc://([\d.]+:\d+), HTTP on http://([\d.]+:\d+)", line)
    assert m, f"meshgate did not start: {line!r}"
    yield {"flight": m.group(1), "http": m.group(2), "audit": audit}
    proc.terminate()
    proc.wait(timeout=30)

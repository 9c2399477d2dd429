"""Starts `meshgate serve` on free ports for the client tests, and stops it after: one
gateway, and two replicas sharing their keys behind an nginx gRPC proxy."""

import os
import re
import shutil
import socket
import subprocess
import pathlib
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BINARY = os.environ.get("MESHGATE_BIN", str(REPO / "target" / "debug" / "meshgate"))


def start_meshgate(tmp: pathlib.Path, name: str, **env):
    """One `meshgate serve` on the repository's configuration, with the audit file in `tmp`."""
    audit = tmp / f"{name}-audit.log"
    config = tmp / f"{name}.yaml"
    text = (REPO / "meshgate.yaml").read_text()
    text = text.replace("audit_file: meshgate-audit.log", f"audit_file: {audit}")
    text = text.replace("contracts: contracts", f"contracts: {REPO / 'contracts'}")
    text = text.replace("data: sample-data", f"data: {REPO / 'sample-data'}")
    config.write_text(text)
    env = dict(os.environ, MESHGATE_HASH_KEY="client-tests-hash-key-0123456789", **env)
    proc = subprocess.Popen(
        [BINARY, "serve", "--config", str(config),
         "--flight-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
         "--pg-addr", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )
    # The server prints its addresses once both listeners are bound.
    line = proc.stdout.readline()
    m = re.search(
        r"grpc://([\d.]+:\d+), HTTP on http://([\d.]+:\d+), Postgres on postgres://([\d.]+:\d+)",
        line)
    assert m, f"meshgate did not start: {line!r}"
    return proc, {"flight": m.group(1), "http": m.group(2), "pg": m.group(3), "audit": audit}


def stop(proc):
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory):
    proc, info = start_meshgate(tmp_path_factory.mktemp("gateway"), "gateway")
    yield info
    stop(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NGINX_CONF = """
worker_processes 1;
daemon off;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream meshgate {{
        server {a};
        server {b};
    }}
    server {{
        listen 127.0.0.1:{port} http2;
        location / {{
            grpc_pass grpc://meshgate;
            grpc_read_timeout 300s;
            client_max_body_size 0;
        }}
    }}
}}
"""


@pytest.fixture(scope="session")
def replicas(tmp_path_factory):
    """Two gateways with the same keys and a round-robin nginx (`grpc_pass`) in front."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert os.path.exists(nginx), "nginx is required: tests/run-all.sh installs it"
    tmp = tmp_path_factory.mktemp("replicas")
    keys = {"MESHGATE_TOKEN_KEY": "client-tests-token-key-0123456789"}
    a, info_a = start_meshgate(tmp, "a", **keys)
    b, info_b = start_meshgate(tmp, "b", **keys)
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(
        tmp=tmp, a=info_a["flight"], b=info_b["flight"], port=port,
        user="user root;" if os.geteuid() == 0 else "",
    ))
    proxy = subprocess.Popen([nginx, "-p", str(tmp), "-c", str(conf)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proxy.poll() is None, f"nginx exited: {proxy.stderr.read()}"
            assert time.monotonic() < deadline, "nginx did not listen within 10 s"
            time.sleep(0.05)
    yield {"proxy": f"127.0.0.1:{port}", "a": info_a, "b": info_b}
    stop(proxy)
    stop(a)
    stop(b)

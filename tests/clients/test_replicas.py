"""Two stateless replicas behind a round-robin gRPC proxy (nginx `grpc_pass`), used by a
real client: every call may land on either replica (handshake on one, GetFlightInfo on
the other, DoGet on the first…), and nothing may fail."""

import re
import urllib.request

import pyarrow.flight as flight

from test_clients import EMAIL, HEX64, Q, adbc


def statements_served(info) -> float:
    text = urllib.request.urlopen(f"http://{info['http']}/metrics", timeout=10).read().decode()
    m = re.search(r'^meshgate_requests_total\{kind="statement"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_200_queries_through_a_round_robin_proxy(replicas):
    before = {r: statements_served(replicas[r]) for r in ("a", "b")}
    proxy = {"flight": replicas["proxy"]}
    errors = []
    done = 0
    # 20 sessions of 10 queries, analysts and marketers in turn. Each query is two calls
    # (GetFlightInfo, DoGet), so with strict round robin every DoGet lands on the replica
    # that did not plan it. An ADBC session makes an even number of calls of its own; a
    # pyarrow.flight login (one Handshake) before every other session moves the DoGets of
    # the next ten queries to the other replica.
    for session in range(20):
        user = ("analyst", "marketer")[session % 2]
        if session % 4 == 2:
            other = flight.FlightClient(f"grpc://{replicas['proxy']}")
            other.authenticate_basic_token("guest", "guest")
            other.close()
        with adbc(proxy, user) as conn, conn.cursor() as cur:
            for i in range(10):
                try:
                    cur.execute(Q)
                    value = cur.fetch_arrow_table().column("email")[0].as_py()
                    ok = value == EMAIL if user == "analyst" else HEX64.match(value)
                    assert ok, f"{user} got {value!r}"
                    done += 1
                except Exception as e:  # every failure is collected, then reported at once
                    errors.append(f"{user} session {session} #{i}: {e}")
    assert errors == [], errors[:5]
    assert done == 200
    served = {r: statements_served(replicas[r]) - before[r] for r in ("a", "b")}
    # Both replicas streamed results, and together all of them.
    assert served["a"] > 0 and served["b"] > 0, served
    assert served["a"] + served["b"] == 200, served


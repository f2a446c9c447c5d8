#!/usr/bin/env python3
"""Slowloris against qumo-relay's certificate endpoint, on loopback only.

Starts the relay given (default target/debug/qumo-relay) with the default
http.* bounds and an admin listener, opens slow clients (half send a request
line then a header byte a second, half send nothing) from 127.0.0.2.. (other
"hosts"), and times 20 legitimate GETs of /certificate.sha256 from
127.0.0.1 in three cases: the 4 clients of issue 8's measurement, 64 from
one host, 64 spread over 8 hosts. The held/refused figures are read from
/metrics. Bounded: at most 64 slow connections, about 15 s in all.

    scripts/http-slowloris.py [path/to/qumo-relay]
"""

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/debug/qumo-relay"
PORT = 14500
ADMIN = 14501
CERT = b"GET /certificate.sha256 HTTP/1.1\r\nHost: localhost\r\n\r\n"


def start_relay():
    config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    config.write(
        f'server:\n  address: "127.0.0.1:{PORT}"\n  shards: 1\n'
        f'tls:\n  generate: [localhost]\n'
        f'admin:\n  address: "127.0.0.1:{ADMIN}"\n'
        f"logging:\n  level: warn\n"
    )
    config.close()
    relay = subprocess.Popen([BIN, "--config", config.name])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/healthz", timeout=1)
            return relay
        except OSError:
            time.sleep(0.05)
    relay.kill()
    sys.exit("the relay did not start")


def certificate_figure(name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/metrics", timeout=5).read().decode()
    prefix = name + '{listener="certificate"} '
    return next(l[len(prefix):] for l in text.splitlines() if l.startswith(prefix))


def open_slow(count, hosts, stop):
    sockets = []
    for i in range(count):
        source = f"127.0.0.{2 + i % hosts}"
        s = socket.create_connection(("127.0.0.1", PORT), source_address=(source, 0))
        if i % 2 == 0:
            s.sendall(b"GET /certificate.sha256 HTTP/1.1\r\nX-Slow: ")
        sockets.append(s)

    def trickle():
        while not stop.is_set():
            for s in sockets[::2]:
                try:
                    s.sendall(b"a")
                except OSError:
                    pass
            stop.wait(1)

    threading.Thread(target=trickle, daemon=True).start()
    return sockets


def get():
    started = time.monotonic()
    try:
        s = socket.create_connection(("127.0.0.1", PORT), timeout=10, source_address=("127.0.0.1", 0))
        s.sendall(CERT)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
        status = answer.split(b"\r\n", 1)[0].decode() or "closed"
    except socket.timeout:
        status = "TIMEOUT"
    except OSError as e:
        status = f"error {e}"
    return status, (time.monotonic() - started) * 1000


def case(label, count, hosts):
    stop = threading.Event()
    sockets = open_slow(count, hosts, stop)
    time.sleep(0.5)
    results = [get() for _ in range(20)]
    statuses = {}
    for status, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    latency = sorted(ms for _, ms in results)
    print(
        f"{label}: {count} slow clients from {hosts} host(s); held open "
        f"{certificate_figure('qumo_http_connections_open')}, refused per source so far "
        f"{certificate_figure('qumo_http_connections_refused_per_source_total')}, at the cap so far "
        f"{certificate_figure('qumo_http_connections_refused_total')}; "
        f"20 GETs from 127.0.0.1: {statuses}, ms median {statistics.median(latency):.1f} max {latency[-1]:.1f}"
    )
    stop.set()
    return sockets


relay = start_relay()
try:
    for s in case("issue 8's row", 4, 1):
        s.close()
    time.sleep(0.5)
    for s in case("one host", 64, 1):
        s.close()
    time.sleep(0.5)
    held = case("eight hosts", 64, 8)
    started = time.monotonic()
    for s in held:
        s.settimeout(30)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
    print(
        f"the server closed all {len(held)} slow connections {time.monotonic() - started:.1f} s "
        f"after the GETs (http.header_timeout 5s); timed out in all: "
        f"{certificate_figure('qumo_http_connections_timed_out_total')}"
    )
finally:
    relay.send_signal(signal.SIGTERM)
    relay.wait()

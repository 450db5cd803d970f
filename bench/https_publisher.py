"""The DEA side of the HTTPS ingest benchmark: DEAs posting `POST /dea/heartbeat` over
mutual TLS, as cf-release v235+ DEAs do (HM9000.md §3.2).

`python -m bench.https_publisher NATS_URL PORT TLS_DIR INSTANCES MESSAGES`: one keep-alive
TLS connection per DEA of the fleet (a client certificate from TLS_DIR, made by
health_manager.testing.tls), each posting its pre-encoded 100-entry heartbeat again as soon
as the previous one was answered, MESSAGES in all. As bench.publisher, it keeps at most
WINDOW heartbeats ahead of what the HM reported processed on `bench.progress`: the HM
answers 202 once it relayed a body on NATS, before it ingests it, so DEAs that did not wait
would only pile heartbeats up in nats-server. Prints one JSON line when done: heartbeats
posted, statuses counted, wall seconds.
"""

import asyncio
import json
import os
import ssl
import sys
import time

import nats

from bench.publisher import WINDOW, HmProgress
from bench.workload import Fleet

PATH = b"/dea/heartbeat"


def client_context(tls_dir):
    """Verifies the HM's certificate against the test CA and presents the DEA's own."""
    context = ssl.create_default_context(cafile=os.path.join(tls_dir, "ca_file.pem"))
    context.load_cert_chain(os.path.join(tls_dir, "client_cert.pem"),
                            os.path.join(tls_dir, "client_key.pem"))
    return context


def request(body, port):
    return (b"POST " + PATH + b" HTTP/1.1\r\nHost: 127.0.0.1:" + str(port).encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


async def read_response(reader):
    """The status of one HTTP/1.1 response, its body (Content-Length) read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and int(value):
            await reader.readexactly(int(value))
    return status


async def publish(url, port, tls_dir, instances, messages):
    fleet = Fleet(instances)
    requests = [request(body, port) for body in fleet.heartbeats()]
    context = client_context(tls_dir)
    client = await nats.connect(url, name="bench-https-publisher", max_reconnect_attempts=0)
    progress = HmProgress()
    await progress.watch(client)
    connections = [await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                 server_hostname="127.0.0.1")
                   for _ in requests]
    progress.count_from_now()
    sent = 0
    statuses = {}
    started = time.perf_counter()

    async def dea(number, reader, writer):
        nonlocal sent
        while sent < messages:
            while progress.in_flight(sent) >= WINDOW:
                await progress.advance()
            if sent >= messages:
                return
            sent += 1
            writer.write(requests[number])
            status = await read_response(reader)
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(dea(number, reader, writer)
                           for number, (reader, writer) in enumerate(connections)))
    elapsed = time.perf_counter() - started
    for _, writer in connections:
        writer.close()
    await client.close()
    return {"sent": sent, "statuses": {str(k): v for k, v in statuses.items()},
            "wall": elapsed}


def main(url, port, tls_dir, instances, messages):
    result = asyncio.run(publish(url, int(port), tls_dir, int(instances), int(messages)))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:6])

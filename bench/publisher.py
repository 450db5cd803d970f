"""The DEA side of the ingest benchmark: a separate process publishing `dea.heartbeat`.

`python -m bench.publisher NATS_URL INSTANCES MESSAGES RATE`: pre-encodes one heartbeat of
100 entries per DEA of the fleet, then publishes MESSAGES of them round robin (0: until
killed). RATE is messages per second, or 0 for "as fast as the HM keeps up": the publisher
then keeps at most WINDOW messages ahead of what the HM reported processed on
`bench.progress`, so nats-server never has to cut the HM off as a slow consumer.
Prints one JSON line when done: messages sent, wall seconds.
"""

import asyncio
import json
import sys
import time

import nats
import orjson

from bench.workload import Fleet

WINDOW = 64  # messages in flight (~1.5 MB): a few ms of HM work, well below any limit
PACE_TICK = 0.01


async def publish(url, instances, messages, rate):
    fleet = Fleet(instances)
    payloads = list(fleet.heartbeats())
    client = await nats.connect(url, name="bench-publisher", max_reconnect_attempts=0)
    processed = 0
    advanced = asyncio.Event()

    async def on_progress(msg):
        nonlocal processed
        processed = orjson.loads(msg.data)["msgs"]
        advanced.set()

    await client.subscribe("bench.progress", cb=on_progress)
    await client.flush()
    baseline = processed
    sent = 0
    started = time.perf_counter()
    count = len(payloads)
    while messages == 0 or sent < messages:
        if rate:
            due = int((time.perf_counter() - started) * rate)
            if sent >= due:
                await asyncio.sleep(PACE_TICK)
                continue
        if sent - (processed - baseline) >= WINDOW:
            advanced.clear()
            try:
                await asyncio.wait_for(advanced.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
            continue
        await client.publish("dea.heartbeat", payloads[sent % count])
        sent += 1
    await client.flush()
    elapsed = time.perf_counter() - started
    await client.close()
    return {"sent": sent, "wall": elapsed}


def main(url, instances, messages, rate):
    result = asyncio.run(publish(url, int(instances), int(messages), float(rate)))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:5])

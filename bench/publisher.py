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


class HmProgress:
    """How far the HM child is behind the heartbeats sent to it: it reports the messages
    it has processed on `bench.progress`, counted from when watching began."""

    def __init__(self):
        self._processed = 0
        self._baseline = 0
        self._advanced = asyncio.Event()

    async def watch(self, client):
        await client.subscribe("bench.progress", cb=self._on_progress)
        await client.flush()

    def count_from_now(self):
        """Count in flight from here: what the HM processed before is not ours."""
        self._baseline = self._processed

    async def _on_progress(self, msg):
        self._processed = orjson.loads(msg.data)["msgs"]
        self._advanced.set()

    def in_flight(self, sent):
        """Messages of the `sent` ones the HM has not processed yet."""
        return sent - (self._processed - self._baseline)

    async def advance(self):
        """Wait until the HM reports progress (at most a second: a report may be lost)."""
        self._advanced.clear()
        try:
            await asyncio.wait_for(self._advanced.wait(), 1.0)
        except asyncio.TimeoutError:
            pass


async def publish(url, instances, messages, rate):
    fleet = Fleet(instances)
    payloads = list(fleet.heartbeats())
    client = await nats.connect(url, name="bench-publisher", max_reconnect_attempts=0)
    progress = HmProgress()
    await progress.watch(client)
    progress.count_from_now()
    sent = 0
    started = time.perf_counter()
    count = len(payloads)
    while messages == 0 or sent < messages:
        if rate:
            due = int((time.perf_counter() - started) * rate)
            if sent >= due:
                await asyncio.sleep(PACE_TICK)
                continue
        if progress.in_flight(sent) >= WINDOW:
            await progress.advance()
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

"""The generator measured alone: a client that subscribes and discards what it reads.

Shows that the load generator can send faster than the collector takes: the sink does
nothing per frame (it reads 1 MiB at a time and throws the bytes away), so the rate the
generator reports is its own.
"""

from __future__ import annotations

import multiprocessing
from typing import Final

import trio
from websockets.client import ClientProtocol
from websockets.http11 import Response
from websockets.uri import parse_uri

from collector.bench.generator import GeneratorReport, GeneratorSpec, generator_main
from collector.bench.runner import START_TIMEOUT_SECS, BenchError, _stop
from collector.bench.scenarios import Group, get_scenario

SINK_READ: Final = 1 << 20


async def _sink(port: int, group: Group, done: trio.Event) -> int:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    protocol = ClientProtocol(
        parse_uri(f"ws://127.0.0.1:{port}/{group.name}{group.protocol.ws_path}")
    )
    protocol.send_request(protocol.connect())
    for chunk in protocol.data_to_send():
        await stream.send_all(chunk)
    while not any(isinstance(e, Response) for e in protocol.events_received()):
        protocol.receive_data(await stream.receive_some(65536))
    for text in group.protocol.subscribe_texts([s.stream for s in group.streams]):
        protocol.send_text(text)
    for chunk in protocol.data_to_send():
        await stream.send_all(chunk)
    received = 0
    async with stream:
        while not done.is_set():
            with trio.move_on_after(0.2):
                data = await stream.receive_some(SINK_READ)
                if not data:
                    break
                received += len(data)
    return received


def measure_generator(name: str, count: int | None = None, seed: int = 1) -> GeneratorReport:
    """Run the generator against discarding sinks; return its report (frames, seconds)."""
    scenario = get_scenario(name)
    spec = GeneratorSpec(name, count=count or scenario.default_count, seed=seed)
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=generator_main, args=(child, spec), daemon=True)
    process.start()
    child.close()
    try:
        if not parent.poll(START_TIMEOUT_SECS):
            raise BenchError("the generator did not start")
        message = parent.recv()
        if message[0] != "ready":
            raise BenchError(f"generator: {message!r}")
        port = message[1]

        async def main() -> GeneratorReport:
            done = trio.Event()
            report: list[GeneratorReport] = []

            async def wait_done() -> None:
                message = await trio.to_thread.run_sync(parent.recv, abandon_on_cancel=True)
                report.append(message[1])
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_done)
                for group in scenario.groups:
                    nursery.start_soon(_sink, port, group, done)
            return report[0]

        return trio.run(main)
    except EOFError:
        raise BenchError("the generator process ended unexpectedly") from None
    finally:
        _stop(process, parent)

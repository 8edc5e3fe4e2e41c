"""Slow link: a TCP relay that hands every reply back late, in order, so
each round trip through it takes ``delay`` milliseconds longer. It is what a
long cable (or ``tc netem delay`` on the server's side) does to a
connection, for the network lab (wizard/netlab.py), which puts it in front
of Valkey to show what round trips cost::

    python -m wizard.slowlink --listen 198.18.42.11:6379 \\
        --to 198.18.42.11:6380 --delay-file var/valkey-delay-ms

The delay, in milliseconds, is read from ``--delay-file`` at start and again
on SIGHUP (0 if the file is missing), so a running lab can be slowed down
and sped up without dropping a connection. Bytes from the client go through
at once; bytes from the server wait until ``delay`` ms after they arrived,
and keep their order (one queue per connection). SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

#: Largest chunk read at once, bytes.
CHUNK = 65536


class Delay:
    """The current delay in seconds, read from a file (milliseconds)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds = 0.0
        self.reload()

    def reload(self) -> None:
        """Read the file again; a missing or empty file means no delay."""
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            # No file: no delay.
            text = ""
        self.seconds = float(text or 0) / 1000


async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes as they come until the reader ends."""
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()
    writer.close()


async def forward_late(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: Delay
) -> None:
    """Copy bytes, each chunk ``delay.seconds`` after it arrived, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def sender() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    task = asyncio.create_task(sender())
    while True:
        data = await reader.read(CHUNK)
        await queue.put((loop.time() + delay.seconds, data))
        if not data:
            break
    await task


async def serve(listen: tuple[str, int], target: tuple[str, int], delay: Delay) -> None:
    """Accept connections on ``listen`` and relay each to ``target``."""

    async def relay(client_reader, client_writer) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*target)
        except OSError:
            # The server is down: the client sees its connection closed.
            client_writer.close()
            return
        with contextlib.suppress(ConnectionError):
            # Either side hung up: the other is closed in turn.
            await asyncio.gather(
                forward(client_reader, server_writer),
                forward_late(server_reader, client_writer, delay),
            )

    server = await asyncio.start_server(relay, *listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, delay.reload)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


def _address(raw: str) -> tuple[str, int]:
    host, _, port = raw.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    """``python -m wizard.slowlink``: run the relay until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m wizard.slowlink", description=__doc__)
    parser.add_argument("--listen", type=_address, required=True, help="host:port to accept on")
    parser.add_argument("--to", type=_address, required=True, help="host:port of the server")
    parser.add_argument("--delay-file", type=Path, required=True, help="file holding the ms")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen, args.to, Delay(args.delay_file)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

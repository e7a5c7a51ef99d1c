"""A webhook receiver for the benchmarks that costs as little as it can: asyncio streams,
keep-alive, answers 204 to every POST, and prints how many it got when stopped
(SIGTERM). ``python bench/webhook_receiver.py PORT``."""

from __future__ import annotations

import asyncio
import signal
import sys

received = 0


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global received
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:].strip())
            await reader.readexactly(length)
            received += 1
            writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()
    print(received, flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))

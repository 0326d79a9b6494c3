"""A TCP-to-unix-socket proxy that delays every client→server chunk, to simulate network distance.

Usage: python -m bench.delay_proxy --unix /path/.s.PGSQL.5432 --delay-ms 20
Prints "listening <port>" on 127.0.0.1, then serves until killed.

The embedded Postgres listens on a unix socket only. Each chunk the client sends is held `delay` seconds
(order kept: chunks are queued with their due time, so a burst is delayed once, not once per chunk);
replies go back at once. One statement therefore costs one delay, and a request of k sequential
statements k delays: a round trip to a database 20 ms away (RTT), which is what Lambda to Supabase is
when they are not in the same region.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib


async def _delayed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, chunk = await queue.get()
            if not chunk:
                break
            await asyncio.sleep(max(0.0, due - loop.time()))
            writer.write(chunk)
            await writer.drain()

    delivery = asyncio.create_task(deliver())
    while chunk := await reader.read(65536):
        queue.put_nowait((loop.time() + delay, chunk))
    queue.put_nowait((loop.time(), b""))
    await delivery
    with contextlib.suppress(OSError):
        writer.close()


async def _immediate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(65536):
        writer.write(chunk)
        await writer.drain()
    with contextlib.suppress(OSError):
        writer.close()


async def serve(unix_path: str, delay: float, port: int = 0) -> None:
    async def connection(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_unix_connection(unix_path)
        with contextlib.suppress(OSError):
            await asyncio.gather(_delayed(client_r, server_w, delay), _immediate(server_r, client_w))

    server = await asyncio.start_server(connection, "127.0.0.1", port)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unix", required=True, help="the server's unix socket file")
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.unix, args.delay_ms / 1000, args.port))


if __name__ == "__main__":
    main()

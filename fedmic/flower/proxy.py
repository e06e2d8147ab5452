"""A TCP proxy that counts the bytes it forwards. Put in front of the SuperLink's port, with the
SuperNodes dialling the proxy, it measures what Flower actually moves between sites and
coordinator: TLS records, HTTP framing, message objects, polling and heartbeats. TLS stays end to
end (the proxy sees only ciphertext), so the SuperLink's certificate must name the address the
SuperNodes dial. The counts file holds {"up": sites -> SuperLink, "down": SuperLink -> sites,
"connections": n}, rewritten atomically at most every `flush_s` seconds while bytes flow."""
from __future__ import annotations

import asyncio
import json
import signal

from ..utils import atomic_write_text


class CountingProxy:
    def __init__(self, listen: tuple[str, int], target: tuple[str, int], counts_path: str, flush_s: float = 0.05):
        self.listen, self.target, self.counts_path, self.flush_s = listen, target, counts_path, flush_s
        self.counts = {"up": 0, "down": 0, "connections": 0}
        self._flush_pending = False

    def write(self) -> None:
        self._flush_pending = False
        atomic_write_text(self.counts_path, json.dumps(self.counts))

    def _changed(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_later(self.flush_s, self.write)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        try:
            while data := await reader.read(1 << 16):
                self.counts[key] += len(data)
                self._changed()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _handle(self, node_reader: asyncio.StreamReader, node_writer: asyncio.StreamWriter) -> None:
        try:
            link_reader, link_writer = await asyncio.open_connection(*self.target)
        except OSError:
            node_writer.close()
            return
        self.counts["connections"] += 1
        await asyncio.gather(self._pipe(node_reader, link_writer, "up"), self._pipe(link_reader, node_writer, "down"))

    async def serve(self) -> None:
        server = await asyncio.start_server(self._handle, *self.listen)
        self.write()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()
        self.write()


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {text!r} must be host:port, e.g. 127.0.0.1:9092")
    return host.strip("[]"), int(port)

"""uvicorn's httptools protocol with the limits a server facing hostile clients needs.

uvicorn bounds neither the size of request headers (httptools keeps accumulating them: 96 MB of
headers took 18 s to parse and stalled health probes) nor the time a client may take to send them
or its body (3,000 connections that never finished their headers were held open for good, and a
Content-Length larger than the body waited forever). This subclass adds, per connection:

- request line + headers larger than ``max_header_bytes``: 431 and close;
- headers not complete ``header_timeout_s`` after the connection opened or the request began: 408
  and close (an idle keep-alive connection is uvicorn's ``timeout_keep_alive``, as before);
- a body not complete ``body_timeout_s`` after its headers: 408 and close; the application sees
  the client as disconnected, so its body reader stops waiting.

Errors are JSON ``{"error": ...}`` like every other error of the server (OIP clients decode it).
Deadlines are checked by one sweeper task, four times a second, over uvicorn's set of open
connections: a timer per request (``call_later`` and its cancel) cost ~3% of peak req/s.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
SWEEP_S = 0.25  # how late a timeout may be noticed


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = 64 * 1024
    header_timeout_s = 10.0
    body_timeout_s = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._rejected = False
        self._in_headers = True
        self._header_bytes = 0  # raw bytes received since the request began, until its headers end
        self._deadline: float | None = None  # loop time by which the current phase must end
        self._why = ""
        self._arm(self.header_timeout_s, "request headers not received in time")
        if getattr(self.server_state, "_bigmodel_sweeper", None) is None:
            sweeper = self.loop.create_task(_sweep(self.server_state))
            self.server_state._bigmodel_sweeper = sweeper  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float, why: str) -> None:
        self._deadline, self._why = self.loop.time() + seconds, why

    def _disarm(self) -> None:
        self._deadline = None

    def _check_deadline(self, now: float) -> None:
        if self._deadline is not None and now >= self._deadline:
            self._reject(408, self._why)

    def _reject(self, status: int, why: str) -> None:
        """Answer ``status`` unless a response has begun, end the request, close the connection."""
        if self._rejected or self.transport.is_closing():
            return
        self._rejected = True
        self._disarm()
        cycle = getattr(self, "cycle", None)
        if cycle is None or not cycle.response_started:
            body = json.dumps({"error": why}).encode()
            head = (
                f"HTTP/1.1 {status} {REASONS[status].decode()}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            ).encode()
            self.transport.write(head + body)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the application's receive() returns http.disconnect
            cycle.message_event.set()
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        # Every byte so far belongs to headers that are still incomplete: they are too large.
        if self._in_headers and self._header_bytes > self.max_header_bytes:
            self._reject(431, f"request headers larger than {self.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_headers:  # the next request on a kept-alive connection
            self._in_headers = True
            self._header_bytes = 0
            self._arm(self.header_timeout_s, "request headers not received in time")

    def on_headers_complete(self) -> None:
        self._in_headers = False
        # The raw bytes seen so far bound the headers' size; count exactly only past the limit
        # (when a body came in the same read), which keeps the common request cheap.
        if self._header_bytes > self.max_header_bytes and self._exact_header_bytes() > self.max_header_bytes:
            self._reject(431, f"request headers larger than {self.max_header_bytes} bytes")
            return
        self._arm(self.body_timeout_s, "request body not received in time")
        super().on_headers_complete()

    def _exact_header_bytes(self) -> int:
        return len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)

    def on_body(self, body: bytes) -> None:
        if not self._rejected:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._rejected:
            return
        self._disarm()
        super().on_message_complete()


async def _sweep(server_state: Any) -> None:
    """408 for every connection past its deadline; ends once no connection is open (the next
    connection starts a new sweeper), so nothing is left pending when the server stops."""
    loop = asyncio.get_running_loop()
    try:
        while server_state.connections:
            await asyncio.sleep(SWEEP_S)
            now = loop.time()
            for conn in list(server_state.connections):
                if isinstance(conn, GuardedHttpToolsProtocol):
                    conn._check_deadline(now)
    finally:
        server_state._bigmodel_sweeper = None


def guarded_protocol(*, max_header_bytes: int, header_timeout_s: float, body_timeout_s: float) -> Any:
    """The protocol class to pass as uvicorn's ``http``, with these limits."""
    limits = {
        "max_header_bytes": max_header_bytes,
        "header_timeout_s": header_timeout_s,
        "body_timeout_s": body_timeout_s,
    }
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), limits)

"""uvicorn's httptools protocol with the limits a server facing hostile clients needs.

uvicorn bounds neither the size of request headers (httptools keeps accumulating them: 96 MB of
headers took 18 s to parse and stalled health probes) nor the time a client may take to send them
or its body (3,000 connections that never finished their headers were held open for good, and a
Content-Length larger than the body waited forever). This subclass adds, per connection:

- request line + headers larger than ``max_header_bytes``: 431 and close;
- headers not complete ``header_timeout_s`` after the connection opened or the request began: 408
  and close (an idle keep-alive connection is uvicorn's ``timeout_keep_alive``, as before);
- a body not complete ``body_timeout_s`` after its headers: 408 and close; the application sees
  the client as disconnected, so its body reader stops waiting;
- an answer the client has not read ``body_timeout_s`` after it was written (and that it is not
  reading at all): the connection is aborted, which frees it.

Errors are JSON ``{"error": ...}`` like every other error of the server (OIP clients decode it).
Deadlines are checked by one sweeper task, four times a second, over uvicorn's set of open
connections: a timer per request (``call_later`` and its cancel) cost ~3% of peak req/s.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
SWEEP_S = 0.25  # how late a timeout may be noticed


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = 64 * 1024
    header_timeout_s = 10.0
    body_timeout_s = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._rejected = False
        self._in_headers = True  # no request in progress, or one whose headers are not complete
        self._header_bytes = 0  # raw bytes received while in headers (bounds an incomplete header)
        self._exact = 0  # request line + header bytes of the request being parsed
        self._deadline: float | None = None  # loop time by which the current phase must end
        self._why = ""
        self._drain_deadline: float | None = None  # by when the client must have read its answer
        self._drain_left = 0
        self._arm(self.header_timeout_s, "request headers not received in time")
        if getattr(self.server_state, "_bigmodel_sweeper", None) is None:
            sweeper = self.loop.create_task(_sweep(self.server_state))
            self.server_state._bigmodel_sweeper = sweeper  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._drain_deadline = None
        super().connection_lost(exc)

    def _arm(self, seconds: float, why: str) -> None:
        self._deadline, self._why = self.loop.time() + seconds, why

    def _disarm(self) -> None:
        self._deadline = None

    def _check_deadline(self, now: float) -> None:
        if self._deadline is not None and now >= self._deadline:
            self._reject(408, self._why)
        if self._drain_deadline is not None and now >= self._drain_deadline:
            # A client that does not read its answers would hold them in memory for good (one
            # 30 MB answer per connection); one that reads, however slowly, gets more time.
            left = self.transport.get_write_buffer_size()
            if left == 0:
                self._drain_deadline = None
            elif left < self._drain_left:
                self._drain_deadline, self._drain_left = now + self.body_timeout_s, left
            else:
                self._drain_deadline = None
                self.transport.abort()

    def _reject(self, status: int, why: str) -> None:
        """Answer ``status`` if the refused request can still get an answer, end it, close."""
        if self._rejected or self.transport.is_closing():
            return
        self._rejected = True
        self._disarm()
        cycle = getattr(self, "cycle", None)
        if self._in_headers:  # a new request: ``cycle`` is the previous one, if any
            can_answer = cycle is None or cycle.response_complete
        else:
            can_answer = cycle is None or not cycle.response_started
        if can_answer:
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

    def send_400_response(self, msg: str) -> None:
        """The HTTP parser's refusals (a bad method, request line or header) as JSON too."""
        self._in_headers = True  # no response of this request has begun: answer it
        self._reject(400, f"malformed HTTP request: {msg}")

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        # Every byte counted belongs to headers that are still incomplete: they are too large.
        if self._in_headers and self._header_bytes > self.max_header_bytes:
            self._reject(431, f"request headers larger than {self.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._exact = 0
        if self._deadline is None:  # the next request on a kept-alive connection
            self._arm(self.header_timeout_s, "request headers not received in time")

    def on_url(self, url: bytes) -> None:
        self._exact += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._exact += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._exact > self.max_header_bytes:  # still "in headers": see _reject
            self._reject(431, f"request headers larger than {self.max_header_bytes} bytes")
            return
        self._in_headers = False
        self._arm(self.body_timeout_s, "request body not received in time")
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._rejected:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._rejected:
            return
        self._disarm()
        self._in_headers, self._header_bytes = True, 0  # what comes next is the next request
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        left = self.transport.get_write_buffer_size()
        if left:  # the answer is still queued for the client: it must read it in time
            self._drain_deadline, self._drain_left = self.loop.time() + self.body_timeout_s, left


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

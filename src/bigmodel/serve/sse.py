"""Server-Sent Events: a stream of JSON events over one HTTP response (``text/event-stream``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import StreamingResponse

DONE = b"data: [DONE]\n\n"  # OpenAI's end-of-stream marker


def event(obj: Any) -> bytes:
    """One ``data:`` event holding ``obj`` as JSON."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def sse_response(events: AsyncIterator[bytes]) -> StreamingResponse:
    """Stream already-encoded events; proxies are asked not to buffer or cache them."""
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )

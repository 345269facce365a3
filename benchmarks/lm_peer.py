"""The generation peer: a Hugging Face ``GPT2LMHeadModel`` of the same shape as bigmodel's ``small``
LM (6 layers, width 384, 6 heads, 256 byte values, context 512; random weights) behind a minimal
FastAPI endpoint that calls ``model.generate()`` once per request: greedy, no batching across
requests, streamed as Server-Sent Events through a ``BaseStreamer`` (one event per piece of text,
as bigmodel's ``generate_stream`` does: the same incremental UTF-8 decoding, so both sides send
whole characters). ``bench_lm`` measures it beside ``bigmodel serve``.

    python benchmarks/lm_peer.py PORT [THREADS]

POST /generate_stream {"text_input": str, "max_tokens": int} -> data: {"text_output": ...}
events, the last with "finish_reason" and "completion_tokens".
"""

from __future__ import annotations

import codecs
import json
import queue
import sys
import threading

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.generation.streamers import BaseStreamer

torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
torch.manual_seed(0)
config = GPT2Config(
    vocab_size=256,
    n_positions=512,
    n_embd=384,
    n_layer=6,
    n_head=6,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=0,
)
model = GPT2LMHeadModel(config).eval()
app = FastAPI()


class Tokens(BaseStreamer):
    """Token ids from ``generate()`` (run in its own thread) to the response, as they come."""

    def __init__(self) -> None:
        self.q: queue.Queue[int | None] = queue.Queue()
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first puts the prompt itself
            self.prompt_seen = True
            return
        for t in value.flatten().tolist():
            self.q.put(int(t))

    def end(self) -> None:
        self.q.put(None)


def _generate(ids: torch.Tensor, max_tokens: int, streamer: Tokens) -> None:
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=max_tokens, do_sample=False, streamer=streamer)


@app.post("/generate_stream")
async def generate_stream(request: Request) -> StreamingResponse:
    body = await request.json()
    ids = torch.tensor([list(body["text_input"].encode())], dtype=torch.int64)
    streamer = Tokens()
    threading.Thread(target=_generate, args=(ids, int(body["max_tokens"]), streamer), daemon=True).start()

    def events():  # a sync iterator: Starlette runs it in its thread pool
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        n = 0
        while (tok := streamer.q.get()) is not None:
            n += 1
            text = decoder.decode(bytes((tok,)))
            if text:
                yield f"data: {json.dumps({'text_output': text})}\n\n"
        last = {"text_output": decoder.decode(b"", final=True), "finish_reason": "length"}
        yield f"data: {json.dumps({**last, 'completion_tokens': n})}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)

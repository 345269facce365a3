"""The peer: a minimal hand-written FastAPI endpoint for the same model and the same OIP JSON body,
with no batching, metrics, validation or auth. ``bench_serve`` measures it beside ``bigmodel serve``.

    python benchmarks/serve_peer.py MODEL_DIR PORT
"""

from __future__ import annotations

import sys

import torch
import uvicorn
from fastapi import FastAPI, Request

from bigmodel import artifacts, tasks

torch.set_num_threads(1)
loaded = artifacts.load_model(sys.argv[1])
model, spec = loaded.module, loaded.spec
app = FastAPI()


@app.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request) -> dict:
    body = await request.json()
    inp = body["inputs"][0]
    x = torch.tensor(inp["data"], dtype=torch.float32).reshape(inp["shape"])
    with torch.inference_mode():
        out = tasks.postprocess(spec, model(x))
    probs = out["probabilities"]
    return {
        "model_name": name,
        "outputs": [
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": list(probs.shape),
                "data": probs.flatten().tolist(),
            },
            {
                "name": "label",
                "datatype": "BYTES",
                "shape": [len(x)],
                "data": tasks.labels_of(spec, out["label_codes"]),
            },
        ],
    }


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)

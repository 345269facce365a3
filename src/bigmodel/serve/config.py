"""``bigmodel serve`` settings: one validated object, built from flags or in Python."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    registry: str | None = None  # folder or fsspec URL; default $BIGMODEL_REGISTRY or ~/.bigmodel/registry
    models: list[str] = Field(default_factory=list)  # NAME, NAME@ALIAS, NAME:VERSION; empty: every model
    # one model directory served without a registry (KServe's /mnt/models) as MODEL_NAME, version 1
    model_dir: str | None = None
    model_name: str | None = None  # default: the directory's name
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)  # 0: any free port (printed when ready)
    # the Open Inference Protocol over gRPC on this port too (0: any free port); None: REST only
    grpc_port: int | None = Field(None, ge=0, le=65535)
    max_batch_size: int = Field(64, ge=1)
    max_queue_delay_ms: float = Field(0.0, ge=0)
    max_queue: int = Field(256, ge=1)  # queued requests per model version before 503
    timeout_s: float = Field(30.0, gt=0)  # per request, queueing included
    api_key: str | None = None
    runtime: Literal["auto", "torch", "onnxruntime"] = "auto"
    max_body_bytes: int = Field(16 * 2**20, ge=1024)
    # What a hostile client may hold (bigmodel.serve.http_guard): request line + headers, the time to
    # send them and the body, and the request bodies buffered across all requests at once (503 past it).
    max_header_bytes: int = Field(64 * 2**10, ge=1024)
    header_timeout_s: float = Field(10.0, gt=0)
    body_timeout_s: float = Field(30.0, gt=0)
    max_buffered_bytes: int = Field(256 * 2**20, ge=1024)
    threads: int = Field(1, ge=1)  # intra-op threads per forward
    poll_interval_s: float = Field(1.0, gt=0)  # how often aliases are re-read from the registry
    access_log: str | None = "-"
    # language models: sequences generated at once per version, and the KV cache that holds them
    max_sequences: int = Field(16, ge=1, le=1024)
    kv_cache_mb: float = Field(1024.0, gt=0)  # "-": stderr; a file path; None or "off": no access log

"""``bigmodel serve``: the Open Inference Protocol server over registry models."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bigmodel import console
from bigmodel.cli.common import add_json
from bigmodel.cli.registry import add_registry

if TYPE_CHECKING:
    from bigmodel.serve.config import ServeConfig


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve registry models over the Open Inference Protocol (KServe v2)")
    add_registry(p)
    p.add_argument(
        "--models",
        help="comma-separated NAME (production alias, else latest), NAME@ALIAS or NAME:VERSION "
        "(default: every model in the registry)",
    )
    p.add_argument(
        "--model-dir",
        metavar="DIR",
        help="serve this one model directory instead of a registry (KServe: /mnt/models), as version 1",
    )
    p.add_argument(
        "--model-name",
        metavar="NAME",
        help="with --model-dir: the name it is served under (default: the directory's name)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument(
        "--port",
        "--http-port",
        dest="port",
        type=int,
        default=8000,
        help="HTTP port (0: any free port, printed when ready); --http-port is the container's name for it",
    )
    p.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="also serve the Open Inference Protocol over gRPC on this port (0: any free port; default off)",
    )
    p.add_argument("--max-batch-size", type=int, default=64, help="most rows merged into one forward pass")
    p.add_argument(
        "--max-queue-delay-ms",
        type=float,
        default=0.0,
        help="how long a request may wait for others to join its batch",
    )
    p.add_argument(
        "--max-queue", type=int, default=256, help="queued requests per model before answering 503"
    )
    p.add_argument("--timeout-s", type=float, default=30.0, help="per-request timeout, queueing included")
    p.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' (better: $BIGMODEL_API_KEY or --api-key-file, "
        "which `ps` does not show)",
    )
    p.add_argument("--api-key-file", default=None, metavar="FILE", help="read the API key from FILE")
    p.add_argument(
        "--runtime",
        choices=["auto", "torch", "onnxruntime"],
        default="auto",
        help="auto: ONNX Runtime when a version has an ONNX export, else PyTorch",
    )
    p.add_argument("--max-body-mb", type=float, default=16.0, help="request body size limit")
    p.add_argument(
        "--max-header-bytes", type=int, default=64 * 1024, help="request line + headers limit (431 past it)"
    )
    p.add_argument(
        "--header-timeout-s", type=float, default=10.0, help="time a client has to send its headers (408)"
    )
    p.add_argument("--body-timeout-s", type=float, default=30.0, help="time a client has to send its body")
    p.add_argument(
        "--max-buffered-mb",
        type=float,
        default=256.0,
        help="request bodies held in memory by all requests at once (503 + Retry-After past it)",
    )
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per forward pass")
    p.add_argument(
        "--poll-interval-s", type=float, default=1.0, help="how often aliases are re-read from the registry"
    )
    p.add_argument("--access-log", default="-", help="'-' (stderr), a file, or 'off'")
    p.add_argument(
        "--max-sequences",
        type=int,
        default=16,
        help="language models: sequences generated at once per version",
    )
    p.add_argument(
        "--kv-cache-mb",
        type=float,
        default=1024.0,
        help="language models: KV cache per version (fewer sequences run if it cannot hold --max-sequences)",
    )
    p.add_argument(
        "--online",
        action="store_true",
        help="learn from POST /v2/models/{name}/feedback: the online policy may register versions "
        "and move the alias each model follows (see `bigmodel online`)",
    )
    p.add_argument(
        "--online-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an online learning setting, e.g. window=500, min_samples=200, margin=0.02, lr=0.03, "
        "detector=page_hinkley (repeatable)",
    )
    p.add_argument("--feedback-max-rows", type=int, default=1000, help="rows per feedback request")
    p.add_argument("--explain-max-rows", type=int, default=64, help="rows per explain request")
    add_json(p)
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> None:
    _check_model_dir(args)
    cfg = _config(
        registry=args.registry,
        models=[m.strip() for m in (args.models or "").split(",") if m.strip()],
        model_dir=args.model_dir,
        model_name=args.model_name,
        host=args.host,
        port=args.port,
        grpc_port=args.grpc_port,
        max_batch_size=args.max_batch_size,
        max_queue_delay_ms=args.max_queue_delay_ms,
        max_queue=args.max_queue,
        timeout_s=args.timeout_s,
        api_key=_api_key(args),
        runtime=args.runtime,
        max_body_mb=args.max_body_mb,
        max_header_bytes=args.max_header_bytes,
        header_timeout_s=args.header_timeout_s,
        body_timeout_s=args.body_timeout_s,
        max_buffered_bytes=int(args.max_buffered_mb * 2**20) if math.isfinite(args.max_buffered_mb) else -1,
        threads=args.threads,
        poll_interval_s=args.poll_interval_s,
        access_log=args.access_log,
        max_sequences=args.max_sequences,
        kv_cache_mb=args.kv_cache_mb,
    )
    from bigmodel.serve import ServerState, serve  # torch and the server: only once the flags are good

    def ready(state: ServerState, url: str) -> None:
        models: list[dict[str, Any]] = []
        for s in state.repo.loaded.values():
            models.append({"name": s.name, "version": s.version, "runtime": s.runtime.kind})
            if s.generator is not None:  # what the KV cache holds: sequences generated at once
                models[-1]["sequences"] = s.generator.engine.slots

        def label(m: dict[str, Any]) -> str:
            extra = f", {m['sequences']} sequences" if "sequences" in m else ""
            return f"{m['name']}:{m['version']} ({m['runtime']}{extra})"

        shown = ", ".join(label(m) for m in models) or "no models"
        key = "API key required" if cfg.api_key else "no API key"
        at = f"{url} and gRPC {state.grpc_url}" if state.grpc_url else url
        print(f"bigmodel serve: {shown} at {at} ({key}); Ctrl-C stops", file=sys.stderr, flush=True)
        if args.json:
            registry = state.repo.registry
            result: dict[str, Any] = {"url": url, "models": models}
            if registry is not None:
                result["registry"] = registry.location
            else:
                result["model_dir"] = str(state.repo.fixed)
            if state.grpc_url:
                result["grpc_url"] = state.grpc_url
            console.print_json(result)

    serve(cfg, extensions=_extensions(args, cfg), on_ready=ready)


def _check_model_dir(args: argparse.Namespace) -> None:
    """``--model-dir`` alone (no registry flags), an existing model directory and a valid name:
    one-line errors before anything binds or loads (the hashes are checked as the model loads)."""
    from bigmodel import artifacts
    from bigmodel.errors import BigModelError
    from bigmodel.registry.refs import check_name

    if args.model_dir is None:
        if args.model_name is not None:
            raise BigModelError("--model-name needs --model-dir")
        return
    for flag, value in (("--registry", args.registry), ("--models", args.models), ("--online", args.online)):
        if value:
            raise BigModelError(
                f"--model-dir and {flag}: --model-dir serves one directory without a registry"
            )
    artifacts.read_meta(args.model_dir)  # missing, not a folder, no model.json: one line now
    hint = "" if args.model_name else " (the directory's name; give another with --model-name)"
    try:
        check_name(args.model_name or Path(args.model_dir).resolve().name)
    except BigModelError as err:
        raise BigModelError(f"{err}{hint}") from None


def _api_key(args: argparse.Namespace) -> str | None:
    """--api-key, else --api-key-file, else $BIGMODEL_API_KEY; None: no key."""
    from bigmodel.errors import BigModelError

    if args.api_key and args.api_key_file:
        raise BigModelError("--api-key and --api-key-file: give one")
    if args.api_key_file:
        try:
            key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise BigModelError(f"--api-key-file {args.api_key_file}: cannot read it ({err})") from None
        if not key or any(c.isspace() for c in key):
            raise BigModelError(f"--api-key-file {args.api_key_file}: expected one key without spaces")
        return key
    return args.api_key or os.environ.get("BIGMODEL_API_KEY") or None


def _config(*, max_body_mb: float, **fields: Any) -> ServeConfig:
    """A ``ServeConfig`` from the flags, or a one-line error naming the bad flag (and its value as
    given), checked before the server binds its port or loads a model."""
    from pydantic import ValidationError

    from bigmodel.errors import BigModelError
    from bigmodel.registry import parse_ref
    from bigmodel.serve import ServeConfig

    least = 1024 / 2**20  # ServeConfig's 1 KiB floor, in the flag's unit
    if not (math.isfinite(max_body_mb) and max_body_mb >= least):
        raise BigModelError(f"--max-body-mb: must be at least {least} (1 KiB) (got {max_body_mb:g})")
    try:
        cfg = ServeConfig(max_body_bytes=int(max_body_mb * 2**20), **fields)
    except ValidationError as err:
        e = err.errors()[0]
        key = str(e["loc"][0]) if e["loc"] else "config"
        flag = {"max_buffered_bytes": "max_buffered_mb"}.get(key, key).replace("_", "-")
        raise BigModelError(f"--{flag}: {e['msg']} (got {e.get('input')!r})") from None
    for ref in cfg.models:
        parse_ref(ref)  # a bad reference fails here, in one line
    return cfg


def _extensions(args: argparse.Namespace, cfg: Any) -> list[Any]:
    """The explain route always; the feedback route learns only with --online."""
    import ipaddress

    import yaml

    from bigmodel.errors import BigModelError
    from bigmodel.explanations.route import explain_routes
    from bigmodel.online_learning.run import online_config
    from bigmodel.online_learning.server import feedback_routes

    online = None
    if args.online:
        try:
            loopback = cfg.host == "localhost" or ipaddress.ip_address(cfg.host).is_loopback
        except ValueError:
            loopback = False
        if not loopback and not cfg.api_key:
            raise BigModelError(
                f"--online on --host {cfg.host} needs --api-key: feedback can move the production alias"
            )
        settings = {}
        for item in args.online_set:
            key, sep, value = item.partition("=")
            if not sep:
                raise BigModelError(f"--online-set {item!r}: expected KEY=VALUE")
            settings[key.strip()] = yaml.safe_load(value)
        if "alias" in settings:
            raise BigModelError(
                "--online-set alias: the server learns for the alias it serves each model by "
                "(--models NAME@ALIAS)"
            )
        online = online_config(**settings)
    elif args.online_set:
        raise BigModelError("--online-set needs --online")
    return [
        explain_routes(max_rows=args.explain_max_rows),
        feedback_routes(online, max_rows=args.feedback_max_rows),
    ]

"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), beside REST.

``--grpc-port`` starts a ``grpc.aio`` server on the event loop uvicorn runs, so both protocols share
one process and everything in it: the repository, each version's batcher, the body limit (here the
largest message a client may send: past it gRPC itself answers RESOURCE_EXHAUSTED), the API key
(``authorization: Bearer KEY`` metadata; liveness and readiness stay open, as REST's health does),
the metrics and the access log. Infer requests are checked like REST's (same messages) and every
failure is a gRPC status: INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, UNAUTHENTICATED.
"""

from __future__ import annotations

import hmac
import logging
import math
import os
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

# gRPC's C core would print its own log lines (a taken port: a second line beside ours); our errors
# say what went wrong in one line. Set GRPC_VERBOSITY to see the core's.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc  # after its log setting
import numpy as np

from bigmodel._version import __version__
from bigmodel.errors import BigModelError
from bigmodel.serve.batcher import QueueFull, Timeout
from bigmodel.serve.grpc_gen import inference_pb2 as pb
from bigmodel.serve.grpc_gen import inference_pb2_grpc as pb_grpc
from bigmodel.serve.http import HTTPError
from bigmodel.serve.metrics import UNKNOWN
from bigmodel.serve.protocol import TensorSpec
from bigmodel.serve.repository import ModelNotFound, Served
from bigmodel.serve.routes import EXTENSIONS
from bigmodel.serve.state import ServerState
from bigmodel.serve.text_tensor import decode_texts

log = logging.getLogger("bigmodel.serve")

SERVICE = "/inference.GRPCInferenceService/"
OPEN = {SERVICE + "ServerLive", SERVICE + "ServerReady"}  # probes need no secret
# the HTTP status each error already carries, as the gRPC code a client expects for it
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_LENGTH = struct.Struct("<I")


def _bad(message: str) -> HTTPError:
    return HTTPError(400, message)


def decode_infer(request: Any, served: Served, max_rows: int) -> np.ndarray:
    """The request's one input as the rows the batcher takes: (B, F) float32, or (B,) strings."""
    rt = served.runtime
    inp: TensorSpec = rt.input
    model = served.name
    if len(request.inputs) != 1:
        raise _bad(
            f"model {model} takes 1 input tensor named '{inp.name}'; the request has {len(request.inputs)} inputs"
        )
    t = request.inputs[0]
    if t.name != inp.name:
        raise _bad(f"unknown input {t.name!r}: model {model} takes one input named '{inp.name}'")
    if t.datatype != inp.datatype:
        raise _bad(f"input '{inp.name}' has datatype {t.datatype!r}; model {model} takes {inp.datatype}")
    raw = request.raw_input_contents
    if len(raw) > 1:
        raise _bad(f"the request has {len(raw)} raw_input_contents for its 1 input")
    if raw and t.HasField("contents"):  # the protocol takes one or the other; never pick one silently
        raise _bad(f"input '{inp.name}' has both raw_input_contents and typed contents; send one of them")
    shape = list(t.shape)
    if inp.datatype == "BYTES":
        if raw:  # 4-byte little-endian length, then the bytes, per element: REST's binary layout
            return decode_texts(
                {"name": t.name, "shape": shape},
                {"binary_data_size": len(raw[0])},
                raw[0],
                0,
                model,
                max_rows,
            )
        try:
            texts = [b.decode("utf-8") for b in t.contents.bytes_contents]
        except UnicodeDecodeError:
            raise _bad(f"input '{inp.name}': an element of bytes_contents is not valid UTF-8") from None
        return decode_texts({"name": t.name, "shape": shape, "data": texts}, {}, b"", None, model, max_rows)
    features = inp.shape[1]
    if len(shape) != 2 or shape[0] < 1 or shape[1] != features:
        raise _bad(
            f"input '{inp.name}' has shape {shape}; model {model} takes [-1, {features}] (rows, features)"
        )
    rows = shape[0]
    if raw:
        expect = rows * features * 4
        if len(raw[0]) != expect:
            raise _bad(
                f"input '{inp.name}': raw_input_contents is {len(raw[0])} bytes; shape {shape} of FP32 needs {expect}"
            )
        x = np.frombuffer(raw[0], dtype="<f4").reshape(rows, features)
    else:
        values = t.contents.fp32_contents
        if len(values) != rows * features:
            raise _bad(
                f"input '{inp.name}' has {len(values)} fp32_contents; shape {shape} needs {rows * features}"
            )
        x = np.asarray(values, dtype=np.float32).reshape(rows, features)
    if not np.isfinite(x).all():
        raise _bad(f"input '{inp.name}' holds values that are not finite FP32 numbers (NaN or infinity)")
    return x


def _raw(arr: np.ndarray, datatype: str) -> bytes:
    if datatype != "BYTES":
        return np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    parts = []
    for v in arr.ravel().tolist():
        b = v if isinstance(v, bytes) else str(v).encode()
        parts += [_LENGTH.pack(len(b)), b]
    return b"".join(parts)


def encode_infer(request: Any, served: Served, results: dict[str, np.ndarray]) -> Any:
    """The response: the outputs asked for (all when none is named), each in raw_output_contents."""
    specs = served.runtime.output_specs
    names = [o.name for o in request.outputs] or [o.name for o in served.runtime.outputs]
    resp = pb.ModelInferResponse(model_name=served.name, model_version=served.version_str, id=request.id)
    for name in names:
        arr, datatype = results[name], specs[name].datatype
        resp.outputs.add(name=name, datatype=datatype, shape=list(arr.shape))
        resp.raw_output_contents.append(_raw(arr, datatype))
    return resp


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    """Each call reads the shared state as REST's routes do; calls not overridden are UNIMPLEMENTED."""

    def __init__(self, state: ServerState):
        self.state = state

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.state.repo.ready())

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(name="bigmodel", version=__version__, extensions=EXTENSIONS)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:  # as tritonclient.http reads REST's 404: an unknown model is not ready
            self.state.repo.get(request.name, request.version or None)
        except ModelNotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        served = await _get(self.state, request.name, request.version, context)
        meta = served.runtime.metadata()
        resp = pb.ModelMetadataResponse(
            name=request.name, versions=self.state.repo.versions(request.name), platform=meta["platform"]
        )
        for key in ("inputs", "outputs"):
            for t in meta[key]:
                getattr(resp, key).add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        return resp

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        rows = await self.state.repo.index()
        if request.ready:
            rows = [r for r in rows if r["state"] == "READY"]
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**r) for r in rows])

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        try:
            await self.state.repo.load(request.model_name)
        except BigModelError as err:
            code = (
                grpc.StatusCode.NOT_FOUND
                if "no model named" in str(err)
                else grpc.StatusCode.INVALID_ARGUMENT
            )
            await context.abort(code, f"cannot load: {err}")
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        try:
            await self.state.repo.unload(request.model_name)
        except ModelNotFound as err:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(err))
        except BigModelError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot unload: {err}")
        return pb.RepositoryModelUnloadResponse()

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        t0 = time.perf_counter()
        state, name = self.state, request.model_name
        cfg, metrics = state.cfg, state.metrics
        metrics.in_flight += 1
        model, version, status, rows, queued, error = UNKNOWN, "", 200, 0, None, None
        try:
            try:  # no await between choosing a version and queueing on it (see infer.py)
                served = state.repo.get(name, request.model_version or None)
            except ModelNotFound as err:
                raise HTTPError(404, str(err)) from None
            model, version = served.name, served.version_str
            if served.batcher is None:
                raise _bad(f"model {name} has no infer route (it is a {served.runtime.family} model)")
            x = decode_infer(request, served, cfg.max_batch_size)
            wanted = {o.name for o in served.runtime.outputs}
            asked = [o.name for o in request.outputs]
            for o in asked:
                if o not in wanted:
                    raise _bad(f"unknown output {o!r}: model {name} gives {', '.join(sorted(wanted))}")
            if len(set(asked)) != len(asked):
                raise _bad(f"an output is asked for twice: {', '.join(asked)}")
            rows = len(x)
            left = context.time_remaining()  # the client's deadline, if it set one
            timeout = min(cfg.timeout_s, left if left is not None else math.inf)
            try:
                fut = served.batcher.submit(x, timeout)
            except QueueFull:
                raise HTTPError(
                    503, f"model {name} is overloaded: {cfg.max_queue} requests already queued; retry later"
                ) from None
            try:
                results, queued = await fut
            except Timeout:
                raise HTTPError(
                    504, f"request timed out after {timeout:g} s waiting for model {name}"
                ) from None
            return encode_infer(request, served, results)
        except HTTPError as err:
            status, error = err.status, err.message
            if model == UNKNOWN and name in state.repo.names():
                model = name
        except Exception as err:  # a bug: INTERNAL without a traceback to the client, logged here
            log.exception("gRPC infer on %s failed", name)
            status, error = 500, f"internal error: {type(err).__name__}"
        finally:
            metrics.in_flight -= 1
            seconds = time.perf_counter() - t0
            metrics.request(model, version, status, seconds, queued)
            record: dict[str, Any] = {
                "method": "gRPC",
                "path": SERVICE + "ModelInfer",
                "status": status,
                "model": model,
                "version": version,
                "rows": rows,
                "ms": round(seconds * 1000, 3),
                "client": context.peer(),
            }
            if queued is not None:
                record["queue_ms"] = round(queued * 1000, 3)
            if error is not None:
                record["error"] = error
            state.access.write(record)
        await context.abort(CODES.get(status, grpc.StatusCode.INTERNAL), error)


async def _get(state: ServerState, name: str, version: str, context: Any) -> Served:
    try:
        return state.repo.get(name, version or None)
    except ModelNotFound as err:
        await context.abort(grpc.StatusCode.NOT_FOUND, str(err))
        raise  # abort raises; this line only tells the type checker so


class Malformed:
    """A request whose bytes are not the message its method takes, kept so the method can answer
    INVALID_ARGUMENT (grpcio itself would answer UNKNOWN with a Python exception's name)."""

    def __init__(self, error: Exception):
        self.error = error


def _decoder(message: Any) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except Exception as err:  # protobuf's DecodeError, or anything its C parser raises
            return Malformed(err)

    return decode


def _checked(name: str, method: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
    async def handle(request: Any, context: Any) -> Any:
        if isinstance(request, Malformed):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"malformed {name} request: {request.error}"
            )
        return await method(request, context)

    return handle


def service_handlers(servicer: Servicer) -> grpc.GenericRpcHandler:
    """Every method of the service from its descriptor, as the generated ``add_..._to_server``
    registers them, but with a decoder that turns undecodable bytes into INVALID_ARGUMENT."""
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers = {
        m.name: grpc.unary_unary_rpc_method_handler(
            _checked(m.name, getattr(servicer, m.name)),
            request_deserializer=_decoder(getattr(pb, m.input_type.name)),
            response_serializer=getattr(pb, m.output_type.name).SerializeToString,
        )
        for m in service.methods
    }
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


class KeyCheck(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED for calls without ``authorization: Bearer <key>`` metadata (probes excepted)."""

    def __init__(self, api_key: str, on_refused: Callable[[dict[str, Any]], None]):
        self.expected = api_key.encode()
        self.on_refused = on_refused

        async def refuse(request: Any, context: Any) -> None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "missing or wrong API key: send 'authorization: Bearer KEY'"
            )

        self.refuse = grpc.unary_unary_rpc_method_handler(refuse)

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], details: Any) -> Any:
        if details.method in OPEN:
            return await continuation(details)
        given = next((v for k, v in details.invocation_metadata or () if k == "authorization"), "")
        given = given.encode() if isinstance(given, str) else given
        scheme, _, token = given.strip().partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.expected):
            return await continuation(details)
        self.on_refused({"method": "gRPC", "path": details.method, "status": 401, "error": "unauthorized"})
        return self.refuse


class GRPCServer:
    """``bind()`` before the models load (a taken port fails the start at once), ``start()`` once
    they are loaded, ``stop()`` on shutdown (calls under way get ``grace_s`` to finish)."""

    def __init__(self, state: ServerState, port: int):
        cfg = state.cfg
        self.host, self.port = cfg.host, port
        interceptors = [KeyCheck(cfg.api_key, state.access.write)] if cfg.api_key else []
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", cfg.max_body_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),  # a port in use is an error, not a second listener
            ],
        )
        self.server.add_generic_rpc_handlers((service_handlers(Servicer(state)),))
        self.grace_s = max(cfg.timeout_s, 5.0)

    @property
    def url(self) -> str:
        """What a gRPC client (``tritonclient.grpc``) takes as its url: ``host:port``."""
        return f"{self.host if ':' not in self.host else f'[{self.host}]'}:{self.port}"

    def bind(self) -> None:
        address = f"{self.host if ':' not in self.host else f'[{self.host}]'}:{self.port}"
        try:
            port = self.server.add_insecure_port(address)
        except RuntimeError:
            port = 0
        if not port:
            raise BigModelError(f"cannot listen for gRPC on {address}: the address is in use or not local")
        self.port = port

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop(self.grace_s)

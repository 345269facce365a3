"""Open Inference Protocol (KServe v2) REST bodies: decoding infer requests, encoding responses.

Both tensor encodings are supported: JSON (``"data": [...]``, row-major) and the binary tensor data
extension that tritonclient uses by default, where the JSON header is followed by raw little-endian
tensor bytes; the header's length travels in ``Inference-Header-Content-Length`` and each tensor's
byte count in its ``parameters.binary_data_size``. BYTES tensors are 4-byte-length-prefixed strings;
a model whose input is BYTES (a sentence encoder's sentences) is decoded by ``text_tensor``.

Every check that can fail raises ``HTTPError(400, "...")`` naming the tensor and what was expected:
a bad request never reaches the model.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from bigmodel.serve.http import HTTPError
from bigmodel.serve.text_tensor import decode_texts


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]  # -1: any size (the batch dimension)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


@dataclass
class InferRequest:
    x: np.ndarray  # (B, F) float32, or (B,) str objects for BYTES, checked against the input spec
    id: str | None = None
    outputs: list[str] = field(default_factory=list)  # names to return, in order
    binary: set[str] = field(default_factory=set)  # names to return as binary data
    timeout_s: float | None = None  # the client's ``parameters.timeout`` (microseconds on the wire)


def _bad(message: str) -> HTTPError:
    return HTTPError(400, message)


def _params(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """``obj["parameters"]``: absent is ``{}``; anything but an object (5, [], "") is a 400 naming ``where``."""
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        shown = orjson.dumps(params).decode()
        raise _bad(f"{where} must be an object, got {shown if len(shown) <= 40 else shown[:37] + '...'}")
    return params


def decode_request(
    body: bytes,
    header_length: int | None,
    model: str,
    inp: TensorSpec,
    outputs: list[TensorSpec],
    *,
    max_rows: int | None = None,
) -> InferRequest:
    """Parse and check an infer request for a model taking one (B, F) tensor ``inp``, or one (B,)
    BYTES tensor of strings (at most ``max_rows`` of them: a text batch's cost grows with it)."""
    if header_length is not None and not 0 < header_length <= len(body):
        raise _bad(f"Inference-Header-Content-Length {header_length} is outside the body ({len(body)} bytes)")
    head = body if header_length is None else body[:header_length]
    try:
        req = orjson.loads(head)
    except orjson.JSONDecodeError as err:
        raise _bad(f"request body is not valid JSON: {err}") from None
    if not isinstance(req, dict):
        raise _bad("request body must be a JSON object with an 'inputs' list")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        got = len(inputs) if isinstance(inputs, list) else "no"
        raise _bad(f"model {model} takes 1 input tensor named '{inp.name}'; the request has {got} inputs")
    t = inputs[0]
    if t.get("name") != inp.name:
        raise _bad(f"unknown input {t.get('name')!r}: model {model} takes one input named '{inp.name}'")
    if t.get("datatype") != inp.datatype:
        raise _bad(
            f"input '{inp.name}' has datatype {t.get('datatype')!r}; model {model} takes {inp.datatype}"
        )
    if inp.datatype == "BYTES":  # text: its own checks, one branch away from the FP32 hot path
        x = decode_texts(t, _params(t, "inputs[0].parameters"), body, header_length, model, max_rows)
        return _with_options(req, x, model, outputs)
    shape = t.get("shape")
    features = inp.shape[1]
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(type(d) is int for d in shape)
        or shape[0] < 1
        or shape[1] != features
    ):
        raise _bad(
            f"input '{inp.name}' has shape {shape}; model {model} takes [-1, {features}] (rows, features)"
        )
    rows = shape[0]
    params = _params(t, "inputs[0].parameters")
    size = params.get("binary_data_size")
    if size is not None:
        if header_length is None:
            raise _bad(
                f"input '{inp.name}' has binary_data_size but the request has no Inference-Header-Content-Length"
            )
        expect = rows * features * 4
        if size != expect or len(body) - header_length != expect:
            raise _bad(
                f"input '{inp.name}': binary data is {len(body) - header_length} bytes "
                f"(binary_data_size {size}); shape {shape} of FP32 needs {expect}"
            )
        x = np.frombuffer(body, dtype="<f4", offset=header_length).reshape(rows, features)
    else:
        data = t.get("data")
        if not isinstance(data, list):
            raise _bad(f"input '{inp.name}' has no 'data' list (and no binary_data_size)")
        try:  # as KServe's own server does, numbers sent as strings ("1.5") or booleans are taken:
            # checking each value's type would make decoding 2-3x slower on the hot path
            with np.errstate(over="ignore"):  # beyond FP32 becomes inf, refused below with its rows
                x = np.asarray(data, dtype=np.float32)
        except (ValueError, TypeError):
            raise _bad(
                f"input '{inp.name}': 'data' must hold only numbers, as a flat or nested list"
            ) from None
        if x.size != rows * features:
            raise _bad(f"input '{inp.name}' has {x.size} values; shape {shape} needs {rows * features}")
        x = x.reshape(rows, features)
    if not np.isfinite(x).all():
        raise _bad(
            f"input '{inp.name}' holds values that are not finite FP32 numbers (NaN, infinity, or "
            f"beyond +-3.4e38) at rows {_rows(~np.isfinite(x).all(axis=1))}"
        )
    return _with_options(req, x, model, outputs)


def _with_options(req: dict[str, Any], x: np.ndarray, model: str, outputs: list[TensorSpec]) -> InferRequest:
    """The request around the decoded input ``x``: its id, timeout and the outputs it asks for."""
    out = InferRequest(x, id=req.get("id") if isinstance(req.get("id"), str) else None)
    rparams = _params(req, "parameters")
    binary_all = bool(rparams.get("binary_data_output", False))
    timeout = rparams.get("timeout")
    if timeout is not None:
        if type(timeout) is not int or timeout <= 0:
            raise _bad(f"parameter 'timeout' must be a positive integer of microseconds, got {timeout!r}")
        out.timeout_s = timeout / 1e6
    names = [o.name for o in outputs]
    wanted = req.get("outputs")
    if wanted is None:
        out.outputs = names
        out.binary = set(names) if binary_all else set()
        return out
    if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
        raise _bad("'outputs' must be a list of objects with a 'name'")
    for i, o in enumerate(wanted):
        name = o.get("name")
        if name not in names:
            raise _bad(f"unknown output {name!r}: model {model} gives {', '.join(names)}")
        out.outputs.append(name)
        oparams = _params(o, f"outputs[{i}].parameters")
        if oparams.get("binary_data", binary_all):
            out.binary.add(name)
    return out


def _rows(mask: np.ndarray) -> str:
    """The first few row numbers where ``mask`` is set, for an error message."""
    where = np.flatnonzero(mask).tolist()
    return ", ".join(map(str, where[:5])) + (f" and {len(where) - 5} more" if len(where) > 5 else "")


def _bytes_tensor(values: np.ndarray) -> bytes:
    parts = []
    for v in values.ravel().tolist():
        b = v if isinstance(v, bytes) else str(v).encode()
        parts += [struct.pack("<I", len(b)), b]
    return b"".join(parts)


def encode_response(
    model: str,
    version: str,
    request: InferRequest,
    results: dict[str, np.ndarray],
    specs: dict[str, TensorSpec],
) -> tuple[bytes, int | None]:
    """Response body and, when any output travels as binary data, the JSON header's length."""
    tensors = []
    blobs = []
    for name in request.outputs:
        arr = results[name]
        spec = specs[name]
        t: dict[str, Any] = {"name": name, "datatype": spec.datatype, "shape": list(arr.shape)}
        json_fp32 = spec.datatype == "FP32" and name not in request.binary  # binary data carries NaN
        if json_fp32 and not np.isfinite(arr).all():  # JSON has no NaN or infinity: it would say null
            bad = ~np.isfinite(arr).reshape(len(arr), -1).all(axis=1)
            raise _bad(
                f"model {model} gives a non-finite '{name}' for rows {_rows(bad)}, which JSON cannot "
                "carry (features far outside the training range overflow a model; binary_data outputs "
                "carry such values)"
            )
        if name in request.binary:
            raw = _bytes_tensor(arr) if spec.datatype == "BYTES" else np.ascontiguousarray(arr).tobytes()
            t["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        elif spec.datatype == "BYTES":
            t["data"] = [v if isinstance(v, str) else str(v) for v in arr.ravel().tolist()]
        else:
            t["data"] = np.ascontiguousarray(arr).ravel()
        tensors.append(t)
    resp: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": tensors}
    if request.id is not None:
        resp["id"] = request.id
    head = orjson.dumps(resp, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)

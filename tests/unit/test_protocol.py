import numpy as np
import orjson
import pytest
from tritonclient.http import InferInput, InferRequestedOutput, InferResult
from tritonclient.http._utils import _get_inference_request

from bigmodel.serve.protocol import HTTPError, TensorSpec, decode_request, encode_response

INP = TensorSpec("input", "FP32", [-1, 3])
OUTS = [TensorSpec("probabilities", "FP32", [-1, 2]), TensorSpec("label", "BYTES", [-1])]


def _triton_body(x: np.ndarray, binary: bool, outputs=None, **kw) -> tuple[bytes, int | None]:
    """The exact bytes tritonclient sends (its own request encoder)."""
    i = InferInput("input", list(x.shape), "FP32")
    i.set_data_from_numpy(x, binary_data=binary)
    return _get_inference_request(
        [i], kw.pop("request_id", ""), outputs, 0, False, False, 0, kw.pop("timeout", None), None
    )


@pytest.mark.parametrize("binary", [True, False])
def test_decodes_what_tritonclient_sends(binary: bool):
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    body, header = _triton_body(x, binary, request_id="r1", timeout=2500)
    req = decode_request(body, header, "m", INP, OUTS)
    np.testing.assert_array_equal(req.x, x)
    assert req.id == "r1" and req.timeout_s == pytest.approx(0.0025)
    assert req.outputs == ["probabilities", "label"] and req.binary == {"probabilities", "label"}


def test_response_round_trips_through_tritonclient():
    x = np.zeros((2, 3), np.float32)
    outputs = [
        InferRequestedOutput("label", binary_data=True),
        InferRequestedOutput("probabilities", binary_data=False),
    ]
    body, header = _triton_body(x, True, outputs)
    req = decode_request(body, header, "m", INP, OUTS)
    results = {
        "probabilities": np.array([[0.25, 0.75], [0.5, 0.5]], np.float32),
        "label": np.array(["yes", "nö"], dtype=object),
    }
    out, hlen = encode_response("m", "3", req, results, {o.name: o for o in OUTS})
    res = InferResult.from_response_body(out, header_length=hlen)
    assert res.get_response()["model_version"] == "3"
    np.testing.assert_array_equal(res.as_numpy("probabilities"), results["probabilities"])
    assert res.as_numpy("label").tolist() == [b"yes", "nö".encode()]
    as_json = [
        InferRequestedOutput("probabilities", binary_data=False),
        InferRequestedOutput("label", binary_data=False),
    ]
    req = decode_request(*_triton_body(x, False, as_json), "m", INP, OUTS)
    json_only, none = encode_response("m", "3", req, results, {o.name: o for o in OUTS})
    assert none is None and orjson.loads(json_only)["outputs"][1]["data"] == ["yes", "nö"]


def _json(**t) -> bytes:
    base = {"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}
    return orjson.dumps({"inputs": [{**base, **t}]})


def _top(**keys) -> bytes:
    """A good one-input request with these top-level keys added."""
    return orjson.dumps({**orjson.loads(_json()), **keys})


_BIN = orjson.dumps(
    {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 12}}
        ]
    }
)


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        (b"{nope", None, "not valid JSON"),
        (b"[]", None, "must be a JSON object"),
        (orjson.dumps({"inputs": []}), None, "takes 1 input tensor named 'input'; the request has 0"),
        (_json(name="x"), None, "unknown input 'x'"),
        (_json(datatype="FP64"), None, "datatype 'FP64'; model m takes FP32"),
        (_json(shape=[1, 4], data=[1, 2, 3, 4]), None, r"shape \[1, 4\]; model m takes \[-1, 3\]"),
        (_json(shape=[0, 3], data=[]), None, r"shape \[0, 3\]"),
        (_json(shape=[2, 3]), None, r"has 3 values; shape \[2, 3\] needs 6"),
        (_json(data=["a", 2, 3]), None, "only numbers"),
        (_json(data=[[1, 2], [3]]), None, "only numbers"),
        (_json(data=[1, None, 3]), None, r"not finite FP32 numbers .* at rows 0$"),
        (_json(data=[1, {}, 3]), None, "only numbers"),
        (_json(data=[[1, 2, 3]] * 7 + [[1, 2, 1e39]], shape=[8, 3]), None, r"beyond \+-3.4e38\) at rows 7$"),
        (_json(parameters={"binary_data_size": 12}), None, "no Inference-Header-Content-Length"),
        (_BIN + b"\0" * 8, len(_BIN), "binary data is 8 bytes"),
        (
            orjson.dumps(
                {
                    "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}],
                    "outputs": [{"name": "logits"}],
                }
            ),
            None,
            "unknown output 'logits'",
        ),
        (_json(), 10_000, "outside the body"),
        (_json(parameters=[1]), None, r"inputs\[0\]\.parameters must be an object, got \[1\]"),
        (_json(parameters="x"), None, r"inputs\[0\]\.parameters must be an object"),
        (_top(parameters=[1]), None, r"^parameters must be an object, got \[1\]"),
        (_top(parameters=0), None, r"^parameters must be an object, got 0"),
        (_top(outputs=[{"name": "label", "parameters": 5}]), None, r"outputs\[0\]\.parameters .* got 5"),
        (
            _top(outputs=[{"name": "label"}, {"name": "probabilities", "parameters": [True]}]),
            None,
            r"outputs\[1\]\.parameters must be an object, got \[true\]",
        ),
    ],
)
def test_bad_requests_are_400_naming_the_problem(body: bytes, header: int | None, message: str):
    with pytest.raises(HTTPError, match=message) as info:
        decode_request(body, header, "m", INP, OUTS)
    assert info.value.status == 400


def test_binary_nan_is_refused_naming_its_rows():
    x = np.zeros((9, 3), np.float32)
    x[[1, 2, 3, 4, 5, 8], 1] = np.nan
    with pytest.raises(HTTPError, match=r"NaN.* at rows 1, 2, 3, 4, 5 and 1 more$"):
        decode_request(*_triton_body(x, True), "m", INP, OUTS)


def test_a_non_finite_output_is_a_400_naming_its_rows_not_a_null():
    req = decode_request(_json(shape=[2, 3], data=[1, 2, 3, 4, 5, 6]), None, "m", INP, OUTS)
    results = {
        "probabilities": np.array([[0.5, 0.5], [np.nan, np.nan]], np.float32),
        "label": np.array(["yes", "no"], dtype=object),
    }
    with pytest.raises(HTTPError, match=r"non-finite 'probabilities' for rows 1, which JSON cannot") as info:
        encode_response("m", "1", req, results, {o.name: o for o in OUTS})
    assert info.value.status == 400
    # binary data carries NaN as it is
    body, header = _triton_body(np.zeros((2, 3), np.float32), True, [InferRequestedOutput("probabilities")])
    req = decode_request(body, header, "m", INP, OUTS)
    out, hlen = encode_response("m", "1", req, results, {o.name: o for o in OUTS})
    assert np.isnan(
        InferResult.from_response_body(out, header_length=hlen).as_numpy("probabilities")[1]
    ).all()

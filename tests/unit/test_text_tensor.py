"""BYTES input tensors (sentences for a sentence encoder): what tritonclient sends, in binary and in
JSON, decodes to a (B,) object array of str; each malformed input is a 400 naming the problem."""

import struct

import numpy as np
import orjson
import pytest
from tritonclient.http import InferInput
from tritonclient.http._utils import _get_inference_request

from bigmodel.serve.openai_embeddings import _check_keys, _texts
from bigmodel.serve.protocol import HTTPError, TensorSpec, decode_request
from bigmodel.serve.text_tensor import MAX_CHARS

TEXT = TensorSpec("text", "BYTES", [-1])
OUTS = [TensorSpec("embedding", "FP32", [-1, 4])]
SENTENCES = ["A cat sat on the mat.", "Zürich liegt am See — 東京 too", "x"]


def _triton(texts: list, binary: bool, shape: list[int] | None = None) -> tuple[bytes, int | None]:
    """The exact bytes tritonclient sends (its own request encoder)."""
    arr = np.array(texts, dtype=object)
    i = InferInput("text", shape or [len(texts)], "BYTES")
    i.set_data_from_numpy(arr.reshape(shape or [len(texts)]), binary_data=binary)
    return _get_inference_request([i], "", None, 0, False, False, 0, None, None)


def _decode(body: bytes, header: int | None, max_rows: int | None = 8):
    return decode_request(body, header, "enc", TEXT, OUTS, max_rows=max_rows)


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("shape", [None, [3, 1]])
def test_decodes_what_tritonclient_sends(binary: bool, shape):
    req = _decode(*_triton(SENTENCES, binary, shape))
    assert req.x.dtype == object and req.x.shape == (3,) and req.x.tolist() == SENTENCES
    assert req.outputs == ["embedding"]
    # the batcher concatenates requests: object arrays of str stay what they are
    assert np.concatenate([req.x, req.x]).tolist() == SENTENCES * 2


def _json(**t) -> bytes:
    base = {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}
    return orjson.dumps({"inputs": [{**base, **t}]})


def test_json_nested_rows_and_the_default_are_taken():
    assert _decode(_json(), None).x.tolist() == ["a", "b"]
    assert _decode(_json(shape=[2, 1], data=[["a"], ["b"]]), None).x.tolist() == ["a", "b"]


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"data": ["a", 5]}, "element 1 is a number, not a string"),
        ({"data": ["a", None]}, "element 1 is null, not a string"),
        ({"data": ["a", ["b"]]}, "element 1 is a list, not a string"),
        ({"data": ["a", True]}, "element 1 is a boolean"),
        ({"data": ["a", ""]}, "element 1 is an empty string"),
        ({"data": ["a", "b" * (MAX_CHARS + 1)]}, f"element 1 has {MAX_CHARS + 1} characters; at most"),
        ({"data": ["a"]}, r"has 1 elements; shape \[2\] needs 2"),
        ({"shape": [2, 3]}, r"shape \[2, 3\]; model enc takes \[-1\] or \[-1, 1\]"),
        ({"shape": [0], "data": []}, r"shape \[0\]"),
        ({"shape": "2"}, "shape 2;"),
        ({"shape": [9], "data": ["a"] * 9}, "has 9 rows; this server takes at most 8 per request"),
        ({"data": "ab"}, "has no 'data' list"),
        ({"datatype": "FP32"}, "datatype 'FP32'; model enc takes BYTES"),
    ],
)
def test_bad_json_tensors_are_400s_naming_the_problem(tensor, message):
    with pytest.raises(HTTPError, match=message) as info:
        _decode(_json(**tensor), None)
    assert info.value.status == 400 and "\n" not in info.value.message


def _binary(elements: list[bytes], rows: int, size_delta: int = 0) -> tuple[bytes, int]:
    raw = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    size = len(raw) + size_delta
    t = {"name": "text", "datatype": "BYTES", "shape": [rows], "parameters": {"binary_data_size": size}}
    head = orjson.dumps({"inputs": [t]})
    return head + raw, len(head)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_binary([b"ok", b"\xff\xfe bad"], 2), "element 1 is not valid UTF-8"),
        (_binary([b"ok", "\ud800".encode("utf-8", "surrogatepass")], 2), "element 1 is not valid UTF-8"),
        (_binary([b"ok", b""], 2), "element 1 is an empty string"),
        (_binary([b"a", b"b", b"c"], 2), "more than the 2 elements"),
        (_binary([b"a"], 2), r"has 1 elements; shape \[2\] needs 2"),
        (_binary([b"a"], 1, size_delta=3), r"binary data is 5 bytes \(binary_data_size 8\)"),
    ],
)
def test_bad_binary_tensors_are_400s_naming_the_problem(body, message):
    with pytest.raises(HTTPError, match=message) as info:
        _decode(*body)
    assert info.value.status == 400


def test_cut_off_binary_elements_are_400s():
    body, header = _binary([b"hello"], 1)
    head = orjson.loads(body[:header])
    for cut, message in (
        (2, "inside the 4-byte length of element 0"),
        (7, "element 0 says 5 bytes but only 3"),
    ):
        head["inputs"][0]["parameters"]["binary_data_size"] = cut
        h = orjson.dumps(head)
        with pytest.raises(HTTPError, match=message):
            _decode(h + body[header : header + cut], len(h))
    with pytest.raises(HTTPError, match="no Inference-Header-Content-Length"):
        _decode(orjson.dumps(head), None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "m", "input": "a", "dimensions": 8}, "'dimensions' is not supported"),
        ({"model": "m", "input": "a", "temperature": 1}, "unknown key 'temperature'"),
        ({"model": "m", "input": "a", "encoding_format": "int8"}, "'encoding_format' must be one of"),
        ({"model": "m", "input": "a", "user": 5}, "'user' must be a string"),
        ({"input": "a"}, "'model' must be a model name"),
    ],
)
def test_embeddings_request_keys_are_checked(body, message):
    with pytest.raises(HTTPError, match=message):
        _check_keys(body)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "'input' is required"),
        ([], "'input' is an empty list"),
        ([1, 2, 3], "'input' holds token ids"),
        ([[1, 2], [3]], "'input' holds token ids"),
        ({"a": 1}, "must be a string or a list of strings"),
        (["a", None], "'input': element 1 is null"),
        ("", "'input': element 0 is an empty string"),
        (["a"] * 9, "'input' has 9 strings; model m takes at most 8"),
    ],
)
def test_embeddings_inputs_are_checked(value, message):
    with pytest.raises(HTTPError, match=message):
        _texts(value, "m", 8)
    assert _texts("one", "m", 8) == ["one"] and _texts(["a", "b"], "m", 8) == ["a", "b"]

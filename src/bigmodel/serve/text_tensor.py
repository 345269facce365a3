"""BYTES input tensors: the sentences a text model (a sentence encoder) takes, one string per row.

Both encodings of the Open Inference Protocol arrive here: JSON (``"data": ["a sentence", ...]``,
shape ``[B]`` or ``[B, 1]``, nested ``[["a"], ["b"]]`` for the latter) and the binary tensor
extension, where each element is a 4-byte little-endian length followed by that many bytes (what
``tritonclient``'s ``set_data_from_numpy(..., binary_data=True)`` sends). Every element must be a
non-empty UTF-8 string of at most ``MAX_CHARS`` characters, and a request holds at most the
server's ``--max-batch-size`` rows: anything else is a 400 naming the tensor, the element and the
problem, so nothing malformed reaches the tokenizer (which would fail the whole batch it joined).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from bigmodel.serve.http import HTTPError

# The encoder reads at most max_length (256) tokens, about 1,000-1,500 characters of English; the
# rest is truncated. A sentence far longer than that is almost surely a mistake (a whole document),
# and tokenizing it still costs time before truncation (~10 ms per 100,000 characters), so it is
# refused rather than silently cut to its first paragraph's worth. The body limit still applies.
MAX_CHARS = 100_000
_LENGTH = struct.Struct("<I")


def _bad(message: str) -> HTTPError:
    return HTTPError(400, message)


def _kind(v: Any) -> str:
    """How an element that is not a string reads in an error message."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, list):
        return "a list"
    return "an object" if isinstance(v, dict) else type(v).__name__


def check_texts(texts: list[Any], where: str) -> list[str]:
    """``texts`` if every one is a non-empty string of at most ``MAX_CHARS`` characters, else a 400
    naming ``where`` (e.g. "input 'text'") and the first bad element."""
    for i, s in enumerate(texts):
        if type(s) is not str:
            raise _bad(f"{where}: element {i} is {_kind(s)}, not a string")
        if not s:
            raise _bad(f"{where}: element {i} is an empty string; there is nothing to embed")
        if len(s) > MAX_CHARS:
            raise _bad(
                f"{where}: element {i} has {len(s)} characters; at most {MAX_CHARS} per string "
                "(the model reads only its first few hundred tokens)"
            )
    return texts


def as_rows(texts: list[str]) -> np.ndarray:
    """A 1-D object array of the strings: what the batcher concatenates and the runtime reads."""
    x = np.empty(len(texts), dtype=object)
    x[:] = texts
    return x


def _split(data: bytes, rows: int, where: str) -> list[str]:
    """The binary tensor extension's BYTES elements: (4-byte LE length, bytes) repeated."""
    out: list[str] = []
    off, end = 0, len(data)
    while off < end:
        i = len(out)
        if i == rows:
            raise _bad(f"{where}: binary data holds more than the {rows} elements its shape says")
        if off + 4 > end:
            raise _bad(f"{where}: binary data ends inside the 4-byte length of element {i}")
        (n,) = _LENGTH.unpack_from(data, off)
        off += 4
        if off + n > end:
            raise _bad(f"{where}: element {i} says {n} bytes but only {end - off} remain in the binary data")
        try:
            out.append(data[off : off + n].decode("utf-8"))
        except UnicodeDecodeError:
            raise _bad(f"{where}: element {i} is not valid UTF-8") from None
        off += n
    return out


def decode_texts(
    t: dict[str, Any],
    params: dict[str, Any],
    body: bytes,
    header_length: int | None,
    model: str,
    max_rows: int | None,
) -> np.ndarray:
    """The strings of the request's input tensor ``t`` (already checked: its name and datatype)
    as a (B,) object array; ``params`` are its parameters, ``max_rows`` the most rows allowed."""
    name = t.get("name")
    where = f"input '{name}'"
    shape = t.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) not in (1, 2)
        or not all(type(d) is int for d in shape)
        or shape[0] < 1
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise _bad(f"{where} has shape {shape}; model {model} takes [-1] or [-1, 1] (one string per row)")
    rows = shape[0]
    if max_rows is not None and rows > max_rows:
        raise _bad(f"{where} has {rows} rows; this server takes at most {max_rows} per request")
    size = params.get("binary_data_size")
    if size is not None:
        if header_length is None:
            raise _bad(f"{where} has binary_data_size but the request has no Inference-Header-Content-Length")
        if size != len(body) - header_length:
            raise _bad(f"{where}: binary data is {len(body) - header_length} bytes (binary_data_size {size})")
        texts: list[Any] = _split(body[header_length:], rows, where)
    else:
        data = t.get("data")
        if not isinstance(data, list):
            raise _bad(f"{where} has no 'data' list (and no binary_data_size)")
        if len(shape) == 2 and data and all(type(v) is list and len(v) == 1 for v in data):
            data = [v[0] for v in data]  # [B, 1] written nested, row by row
        texts = data
    if len(texts) != rows:
        raise _bad(f"{where} has {len(texts)} elements; shape {shape} needs {rows}")
    return as_rows(check_texts(texts, where))

"""``predict``: a client for people. Rows from a CSV or JSON file -> the server -> answers.

It speaks plain Open Inference Protocol JSON over the standard library's HTTP client, matching
columns to the model's feature names from the model metadata, so any OIP server with this
package's models answers it.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from bigmodel.errors import BigModelError
from bigmodel.registry import parse_ref

DEFAULT_URL = "http://127.0.0.1:8000"


class Client:
    """A small synchronous OIP client (JSON tensors) with an optional API key."""

    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 60.0):
        self.url = url or os.environ.get("BIGMODEL_URL") or DEFAULT_URL
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BigModelError(f"bad server URL {self.url!r} (expected http://HOST:PORT)")
        self.parts = parts
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json"}
        key = api_key or os.environ.get("BIGMODEL_API_KEY")
        if key:
            self.headers["Authorization"] = f"Bearer {key}"

    def request(self, method: str, path: str, body: Any = None) -> Any:
        cls = http.client.HTTPSConnection if self.parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.parts.hostname or "", self.parts.port, timeout=self.timeout)
        try:
            conn.request(
                method,
                self.parts.path.rstrip("/") + path,
                None if body is None else json.dumps(body),
                self.headers,
            )
            resp = conn.getresponse()
            raw = resp.read()
        except OSError as err:
            raise BigModelError(
                f"cannot reach the server at {self.url}: {err} (is `bigmodel serve` running?)"
            ) from None
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            data = {"error": raw[:200].decode(errors="replace")}
        if resp.status != 200:
            raise BigModelError(
                f"server answered {resp.status}: {data.get('error', data) if isinstance(data, dict) else data}"
            )
        return data

    def metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        return dict(self.request("GET", _model_path(name, version)))

    def infer(self, name: str, x: np.ndarray, version: str | None = None) -> dict[str, Any]:
        body = {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
            ]
        }
        return dict(self.request("POST", _model_path(name, version) + "/infer", body))


def _model_path(name: str, version: str | None) -> str:
    q = urllib.parse.quote
    return f"/v2/models/{q(name)}" + (f"/versions/{q(version)}" if version else "")


def read_rows(path: str | Path, features: list[str]) -> np.ndarray:
    """(N, F) float32 from a CSV with a header, or a JSON list of rows (lists) or of objects."""
    path = Path(path)
    if not path.is_file():
        raise BigModelError(f"input file not found: {path}")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise BigModelError(f"{path} is not valid JSON: {err}") from None
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list) or not data:
            raise BigModelError(f"{path}: expected a list of rows (lists of numbers or objects of features)")
        if all(isinstance(r, dict) for r in data):
            missing = [f for f in features if f not in data[0]]
            if missing:
                raise BigModelError(
                    f"{path}: row 0 has no feature {missing[0]!r} (the model takes {', '.join(features)})"
                )
            data = [[r.get(f) for f in features] for r in data]
        for i, row in enumerate(data):  # numpy would also read "1.5" and true as numbers
            if not isinstance(row, list):
                raise BigModelError(f"{path}: row {i} must be a list of numbers or an object of features")
            for j, v in enumerate(row):
                if isinstance(v, bool | str | dict | list):
                    name = repr(features[j]) if j < len(features) else f"value {j}"
                    raise BigModelError(f"{path}: feature {name} in row {i} must be a number, got {v!r:.40}")
        try:
            x = np.asarray(data, dtype=np.float32)
        except (ValueError, TypeError):
            raise BigModelError(f"{path}: rows must hold only numbers") from None
    elif path.suffix.lower() == ".csv":
        import pyarrow.csv as pcsv

        try:
            table = pcsv.read_csv(path)
        except Exception as err:  # pyarrow raises ArrowInvalid with the line number
            raise BigModelError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
        missing = [f for f in features if f not in table.column_names]
        if missing:
            raise BigModelError(f"{path}: no column {missing[0]!r} (the model takes {', '.join(features)})")
        try:
            x = np.stack(
                [table.column(f).to_numpy(zero_copy_only=False).astype(np.float32) for f in features], axis=1
            )
        except (ValueError, TypeError):
            raise BigModelError(f"{path}: feature columns must be numeric") from None
    else:
        raise BigModelError(f"{path}: use a .csv or .json file")
    if x.ndim != 2 or x.shape[1] != len(features):
        raise BigModelError(
            f"{path}: rows have {x.shape[-1] if x.ndim else 0} values; the model takes {len(features)}"
        )
    bad = np.argwhere(~np.isfinite(x))  # JSON has no NaN or Infinity, and no model wants them
    if len(bad):
        i, j = (int(v) for v in bad[0])
        raise BigModelError(f"{path}: feature {features[j]!r} is missing, NaN or infinite in row {i}")
    return x


def predict(
    ref: str, input: str | Path, *, url: str | None = None, api_key: str | None = None
) -> dict[str, Any]:
    """Send the rows of ``input`` to model ``NAME[:VERSION|@ALIAS]`` on the server at ``url``.

    Returns ``{"model", "version", "url", "rows", "outputs": {name: list}, "predictions": [...]}``.
    """
    r = parse_ref(ref)
    client = Client(url, api_key)
    version = str(r.version) if r.version is not None else None
    meta = client.metadata(r.name, version)
    if r.alias is not None:
        served = meta.get("parameters", {}).get("aliases", {})
        if r.alias not in served:
            raise BigModelError(
                f"the server at {client.url} does not serve {r.name}@{r.alias} "
                f"(serves: {', '.join(f'{r.name}@{a}' for a in served if not a.startswith('@')) or 'no aliases'}); "
                f"start it with --models {r.name}@{r.alias}"
            )
        version = served[r.alias]
        meta = client.metadata(r.name, version)
    features = meta.get("parameters", {}).get("features") or [
        f"f{i}" for i in range(meta["inputs"][0]["shape"][1])
    ]
    x = read_rows(input, features)
    resp = client.infer(r.name, x, version)
    outputs = {o["name"]: o["data"] for o in resp["outputs"]}
    shapes = {o["name"]: o["shape"] for o in resp["outputs"]}
    predictions = []
    for i in range(len(x)):
        row: dict[str, Any] = {"row": i}
        if "label" in outputs:
            k = shapes["probabilities"][1]
            probs = outputs["probabilities"][i * k : (i + 1) * k]
            row.update(label=outputs["label"][i], probability=max(probs))
        else:
            row["prediction"] = outputs["prediction"][i]
        predictions.append(row)
    return {
        "model": r.name,
        "version": resp["model_version"],
        "url": client.url,
        "rows": len(x),
        "outputs": outputs,
        "predictions": predictions,
    }

"""A hostile client against the real server process, loopback only, bounded in count and time.

Malformed bodies, header bombs, slow and partial connections, a lying Content-Length, a body
budget, and the API key's edges: every answer is a 4xx (or the budget's 503) with a JSON error,
nothing hangs past the configured timeouts, and the server is ready after.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from bigmodel.registry import Registry
from bigmodel.serve.launch import ServerProcess
from tests.models import make_model_dir

KEY = "hostile-test-key"
TIMEOUT_S = 1.0  # header and body timeouts the server runs with here


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("hostile")
    reg = Registry(tmp / "registry")
    reg.register(make_model_dir(tmp / "m", features=3), "m")
    (tmp / "key").write_text(KEY + "\n")
    args = ["--registry", str(reg.location), "--api-key-file", str(tmp / "key"), "--access-log", "off"]
    args += ["--header-timeout-s", str(TIMEOUT_S), "--body-timeout-s", str(TIMEOUT_S)]
    args += ["--max-header-bytes", "16384", "--max-buffered-mb", "8"]
    with ServerProcess(args, env={"BIGMODEL_HOME": str(tmp / "home")}) as s:
        host, port = s.url.removeprefix("http://").rsplit(":", 1)
        yield host, int(port)
        assert s.stop() == 0


def exchange(addr: tuple[str, int], data: bytes, *, wait: float = 10.0) -> tuple[int, dict, float]:
    """Send ``data`` raw; return (status, JSON body or {}, seconds until the answer or the close)."""
    t0 = time.monotonic()
    with socket.create_connection(addr, timeout=wait) as s:
        if data:
            s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            out += chunk
            head, sep, body = out.partition(b"\r\n\r\n")
            if sep:
                length = next(
                    (int(v) for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n")[1:])
                     if k.strip().lower() == b"content-length"),
                    None,
                )  # fmt: skip
                if length is not None and len(body) >= length:
                    break
    elapsed = time.monotonic() - t0
    if not out:
        return 0, {}, elapsed
    head, _, body = out.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(body), elapsed
    except ValueError:
        return status, {}, elapsed


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    h = {"Host": "x", "Authorization": f"Bearer {KEY}", "Content-Length": str(len(body)), **(headers or {})}
    return (
        f"{method} {path} HTTP/1.1\r\n".encode()
        + "".join(f"{k}: {v}\r\n" for k, v in h.items()).encode()
        + b"\r\n"
        + body
    )


def infer_body(rows: int = 2) -> bytes:
    data = [0.5] * (3 * rows)
    return json.dumps(
        {"inputs": [{"name": "input", "shape": [rows, 3], "datatype": "FP32", "data": data}]}
    ).encode()


def ready(addr: tuple[str, int]) -> bool:
    return exchange(addr, request("GET", "/v2/health/ready"), wait=5)[0] == 200


def test_malformed_bodies_are_4xx_with_a_json_error(server):
    url = "/v2/models/m/infer"
    good = infer_body()
    cases = [
        b"",
        b"{",
        b"\xff\xfe\x00garbage",
        b"[]",
        b'{"inputs": 5}',
        b'{"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [1]}]}',
        b'{"inputs": [{"name": "input", "shape": [-1, 3], "datatype": "FP32", "data": []}]}',
        b'{"inputs": [{"name": "input", "shape": [1, 3], "datatype": "BYTES", "data": ["a", "b", "c"]}]}',
        b'{"inputs": [{"name": "input", "shape": [1e9, 3], "datatype": "FP32", "data": [1, 2, 3]}]}',
        json.dumps(
            {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1e400, 0, 0]}]}
        ).encode(),
    ]
    for body in cases:
        status, err, _ = exchange(server, request("POST", url, body))
        assert 400 <= status < 500 and "error" in err, (body[:60], status, err)
    truncated = gzip.compress(good)[:-12]  # cut-off gzip once passed as a shorter body
    status, err, _ = exchange(server, request("POST", url, truncated, {"Content-Encoding": "gzip"}))
    assert status == 400 and "truncated" in err["error"], err
    status, _, _ = exchange(server, request("POST", url, gzip.compress(good), {"Content-Encoding": "gzip"}))
    assert status == 200
    assert ready(server)


def test_a_header_bomb_is_431_and_costs_nothing(server):
    bomb = request("GET", "/v2/health/ready", headers={"X-Bomb": "a" * 2_000_000})
    status, err, elapsed = exchange(server, bomb)
    assert status == 431 and "headers larger than 16384 bytes" in err["error"]
    many = request("GET", "/v2/health/ready", headers={f"X-{i}": "b" * 100 for i in range(400)})
    assert exchange(server, many)[0] == 431
    assert elapsed < 5 and ready(server)


def test_partial_headers_and_a_lying_content_length_are_closed_after_the_timeout(server):
    status, err, elapsed = exchange(server, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n")
    assert status == 408 and TIMEOUT_S * 0.8 < elapsed < TIMEOUT_S + 4, (status, elapsed)
    status, _, elapsed = exchange(server, b"")  # connects, sends nothing
    assert status == 408 and elapsed < TIMEOUT_S + 4
    lying = request("POST", "/v2/models/m/infer", infer_body(), {"Content-Length": "100000"})
    status, err, elapsed = exchange(server, lying)
    assert status == 408 and "body not received" in err["error"] and elapsed < TIMEOUT_S + 4


def test_many_partial_connections_are_all_closed_while_health_answers(server):
    socks = []
    for _ in range(150):
        s = socket.create_connection(server, timeout=10)
        s.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        socks.append(s)
    t0 = time.monotonic()
    assert ready(server) and time.monotonic() - t0 < 2  # probes are not starved meanwhile
    time.sleep(TIMEOUT_S + 1.5)
    closed = 0
    for s in socks:
        s.settimeout(5)
        try:
            data = s.recv(65536)
            while data and not data.endswith(b"}"):
                more = s.recv(65536)
                if not more:
                    break
                data += more
            closed += data.startswith(b"HTTP/1.1 408") or data == b""
        except (ConnectionResetError, TimeoutError):
            pass
        finally:
            s.close()
    assert closed == len(socks)
    assert ready(server)


def test_request_bodies_held_at_once_are_bounded(server):
    """8 MB budget: six concurrent ~3 MB bodies cannot all be held; the rest get 503 + Retry-After."""
    payload = b'{"inputs": [], "pad": "' + b"x" * 3_000_000 + b'"}'
    statuses: list[int] = []
    started = threading.Barrier(6)

    def slow_sender() -> None:
        with socket.create_connection(server, timeout=10) as s:
            req = request("POST", "/v2/models/m/infer", payload)
            started.wait()
            s.sendall(req[: len(req) - 10])  # everything but the end: the body is held
            time.sleep(0.5)
            s.sendall(req[len(req) - 10 :])
            head = s.recv(65536)
            statuses.append(int(head.split(b" ", 2)[1]) if head else 0)

    threads = [threading.Thread(target=slow_sender) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert 503 in statuses, statuses
    assert all(s in (400, 503) for s in statuses), statuses  # 400: held, read, not a valid request
    assert ready(server)
    assert exchange(server, request("POST", "/v2/models/m/infer", infer_body()))[0] == 200  # budget returned


def test_the_api_key_scheme_is_case_insensitive_and_nothing_else_passes(server):
    url = "/v2/models/m/infer"
    body = infer_body()
    assert exchange(server, request("POST", url, body, {"Authorization": f"bearer {KEY}"}))[0] == 200
    assert exchange(server, request("POST", url, body, {"Authorization": f"BEARER  {KEY}"}))[0] == 200
    for bad in (f"Basic {KEY}", KEY, f"Bearer {KEY}x", "Bearer", f"Bearer{KEY}", ""):
        status, err, _ = exchange(server, request("POST", url, body, {"Authorization": bad}))
        assert status == 401 and "API key" in err["error"], bad
    assert ready(server)


def test_the_key_file_must_hold_one_key(tmp_path: Path):
    from tests.conftest import run_cli

    (tmp_path / "k").write_text("two words\n")
    proc = run_cli("serve", "--registry", str(tmp_path / "r"), "--api-key-file", str(tmp_path / "k"))
    assert proc.returncode == 2 and "expected one key without spaces" in proc.stderr
    proc = run_cli("serve", "--api-key-file", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "cannot read it" in proc.stderr


def test_numbers_too_long_for_int_are_4xx_not_500(server):
    digits = "9" * 5000  # Python refuses int() of strings past 4,300 digits
    for method, path in (
        ("POST", f"/v2/models/m/versions/{digits}/infer"),
        ("GET", f"/v2/models/m/versions/{digits}"),
        ("POST", f"/v2/repository/models/m:{digits}/load"),
    ):
        status, err, _ = exchange(server, request(method, path, infer_body() if method == "POST" else b""))
        assert status in (400, 404) and "error" in err, (path[:40], status, err)
    status, err, _ = exchange(
        server,
        request("POST", "/v2/models/m/infer", infer_body(), {"Inference-Header-Content-Length": digits}),
    )
    assert status == 400 and "Inference-Header-Content-Length" in err["error"]


def test_the_header_limit_holds_for_a_pipelined_and_a_kept_alive_request(server):
    small = request("GET", "/v2/health/ready")
    big = request("GET", "/v2/health/ready", headers={"X-A": "a" * 40000, "X-B": "b" * 40000})
    with socket.create_connection(server, timeout=10) as s:
        s.sendall(small + big)  # one read: the second request's bytes once escaped the count
        out = b""
        while out.count(b"HTTP/1.1 ") < 2:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    # The oversized request is never served: refused with 431 or, while the first answer is still
    # being written, the connection closed (it was once answered 200).
    assert out.count(b"HTTP/1.1 200") <= 1, out[:300]
    assert ready(server)


def test_a_slow_second_request_on_a_kept_alive_connection_gets_its_408(server):
    with socket.create_connection(server, timeout=10) as s:
        s.sendall(request("GET", "/v2/health/ready"))
        first = b""
        while not first.endswith(b"}"):  # the whole first answer ({"ready": true})
            first += s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        t0 = time.monotonic()
        out = b""
        while not out.endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    assert out.startswith(b"HTTP/1.1 408") and b'"error"' in out, out[:200]
    assert time.monotonic() - t0 < TIMEOUT_S + 4


def test_a_client_that_never_reads_its_answer_is_cut_off(server):
    rows = 200_000  # a ~9 MB answer, more than the kernel's socket buffers hold
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(5)
        s.connect(server)
        s.sendall(request("POST", "/v2/models/m/infer", infer_body(rows)))
        time.sleep(TIMEOUT_S + 2.5)  # never read meanwhile: the server gives up on us
        got = b""
        try:
            while chunk := s.recv(1 << 16):
                got += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    head, _, _ = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), got[:200]
    length = int(
        next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length"))
    )
    assert length > 3_000_000 and len(got) < len(head) + 4 + length, (len(got), length)  # cut short
    assert ready(server)


def test_what_the_http_parser_refuses_is_a_json_error_too(server):
    for raw in (
        b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v2 HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET /v2 HTTP/1.1\r\nHost : x\r\n\r\n",
    ):
        status, err, _ = exchange(server, raw)
        assert status == 400 and err["error"].startswith("malformed HTTP request"), (raw, status, err)
    assert ready(server)

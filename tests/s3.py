"""A throwaway S3 server for the tests: moto's server on 127.0.0.1 on a free port, as s3fs's own
test-suite runs it. Clients find it the way users point at MinIO or another S3: ``AWS_ENDPOINT_URL``
and the usual ``AWS_*`` credentials in the environment (botocore and s3fs read them).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.pg import _free_port

# What a test (and every process it starts) needs in its environment to reach the server.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def server() -> Iterator[tuple[str | None, str]]:
    """``(endpoint URL, "")`` while moto's server runs, or ``(None, why not)``."""
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    try:
        import s3fs  # noqa: F401
    except ImportError:
        yield None, "s3fs is not installed (pip install 's3fs')"
        return
    if exe is None:
        yield None, "moto's server is not installed (pip install 'moto[server]')"
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    yield None, f"moto_server did not start on port {port}"
                    return
                time.sleep(0.2)
        yield url, ""
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


_counter = iter(range(1, 1 << 30))


def new_bucket(endpoint: str) -> str:
    """A fresh, empty bucket on the server; its name."""
    import os

    import s3fs

    name = f"bucket-{os.getpid()}-{next(_counter)}"
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, key="testing", secret="testing")
    fs.mkdir(name)
    return name

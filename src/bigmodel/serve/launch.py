"""``bigmodel serve`` as a child process: start it on a free port, wait until it answers, stop it.

Used by the demo, the benchmarks and the tests, which all need the real server in its own process.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from typing import IO, Any

from bigmodel.errors import BigModelError


class ServerProcess:
    """``with ServerProcess(["--registry", R, ...]) as s: s.url`` (e.g. ``http://127.0.0.1:41234``)."""

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None, timeout: float = 120.0):
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr: IO[bytes] | None = None
        self.url = ""
        self.info: dict[str, Any] = {}

    def start(self) -> ServerProcess:
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the server)
        cmd = [sys.executable, "-m", "bigmodel", "serve", "--port", "0", "--json", *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, env=self.env)
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if sel.select(timeout=0.2):
                line = self.proc.stdout.readline()
                if line:
                    self.info = json.loads(line)
                    self.url = self.info["url"]
                    return self
            if self.proc.poll() is not None:
                break
        self.stop()
        raise BigModelError(f"bigmodel serve did not start: {self.log()[-2000:]}")

    def log(self) -> str:
        """What the server wrote to stderr so far (its ready line, errors, access log if on stderr)."""
        if self.stderr is None:
            return ""
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGINT (a clean shutdown: in-flight requests finish, queues drain); SIGKILL if it hangs."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""A throwaway PostgreSQL server for the tests: initdb in a temp dir, 127.0.0.1 on a free port.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` system user.
``start()`` returns None (and why) where the binaries, that user or the driver are missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name or 0))
    return Path(dirs[-1]) if dirs and (Path(dirs[-1]) / "pg_ctl").exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server() -> Iterator[tuple[str | None, str]]:
    """``(admin URL, "")`` while a server runs, or ``(None, why not)``."""
    bindir = _bindir()
    if bindir is None:
        yield None, "PostgreSQL is not installed (apt-get install postgresql)"
        return
    try:
        import psycopg  # noqa: F401
    except ImportError:
        yield None, "the psycopg driver is not installed (pip install 'psycopg[binary]')"
        return
    prefix: list[str] = []
    user = pwd.getpwuid(os.getuid()).pw_name
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            yield None, "running as root and there is no postgres user to run PostgreSQL as"
            return
        prefix, user = ["runuser", "-u", "postgres", "--"], "postgres"
    tmp = Path(tempfile.mkdtemp(prefix="bigmodel-pg-"))
    if prefix:
        os.chown(tmp, owner.pw_uid, owner.pw_gid)
    data, port = tmp / "data", _free_port()
    started = False
    try:
        subprocess.run(
            [
                *prefix,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                user,
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        opts = f"-h 127.0.0.1 -p {port} -k {tmp} -F -c max_connections=200"
        subprocess.run(
            [
                *prefix,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                opts,
                "-l",
                str(tmp / "log"),
                "-w",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        started = True
        yield f"postgresql+psycopg://{user}@127.0.0.1:{port}", ""
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        log = (tmp / "log").read_text(errors="replace")[-2000:] if (tmp / "log").exists() else ""
        stderr = getattr(err, "stderr", b"") or b""
        yield None, f"PostgreSQL did not start: {err}: {stderr.decode(errors='replace')[-2000:]}{log}"
    finally:
        if started:
            subprocess.run(
                [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(tmp, ignore_errors=True)


_counter = iter(range(1, 1 << 30))


@contextlib.contextmanager
def database(admin_url: str) -> Iterator[str]:
    """A fresh, empty database on the server for one test; dropped after."""
    import psycopg

    name = f"t{os.getpid()}_{next(_counter)}_{int(time.time() * 1000) % 100000}"
    dsn = admin_url.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url}/{name}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

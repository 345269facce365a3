"""Process groups and launching: N local workers, or whatever torchrun started.

``bigmodel train --workers N`` starts N processes through torch's elastic launcher (the engine
behind torchrun) on a free local port; under ``torchrun ... -m bigmodel train`` each process finds
RANK/WORLD_SIZE in its environment and joins directly. Both paths run the same worker function.

Failures: with ``max_restarts`` the launcher restarts every worker when one dies, and the
restarted workers see ``TORCHELASTIC_RESTART_COUNT > 0`` and resume from the last checkpoint. A
worker whose peer hangs fails after ``timeout_s`` with a one-line error instead of waiting forever.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import resource
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist

from bigmodel.errors import BigModelError


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world: int
    local_rank: int
    local_world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def under_launcher() -> bool:
    """True inside a process started by torchrun (or our own launcher)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def pick_device(kind: str, local_rank: int) -> torch.device:
    if kind == "cuda" and not torch.cuda.is_available():
        raise BigModelError("--device cuda asked for, but no CUDA device is available")
    if kind != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def restart_count() -> int:
    """How often the elastic launcher has restarted this job's workers (0: first attempt)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def cpu_threads(configured: int, local_world: int) -> int:
    """Torch threads for one CPU worker: ``dist.threads`` when set; else ``OMP_NUM_THREADS``, PyTorch's
    own knob (torchrun sets it to 1 for several workers), which a user who runs several processes
    sets; else the cores shared among this machine's workers. Several processes that each take every
    core leave OpenMP's spinning threads waiting on one another: two tune processes on 2 cores, each
    with 2 threads, ran the same trials ~10x slower than with one each."""
    if configured:
        return configured
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (os.cpu_count() or 1) // local_world)


def setup(
    device: str = "auto",
    backend: str = "auto",
    timeout_s: float = 300.0,
    threads: int = 0,
    *,
    group_of_one: bool = False,
) -> DistEnv:
    """Join the process group named by the environment. A single process gets no group, unless
    ``group_of_one`` (FSDP wants a device mesh even on one worker, so a run saved on N workers
    resumes on 1 through the same code)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    dev = pick_device(device, local_rank)
    if dev.type == "cpu":
        torch.set_num_threads(cpu_threads(threads, local_world))
    else:
        torch.cuda.set_device(dev)
    name = backend if backend != "auto" else ("nccl" if dev.type == "cuda" else "gloo")
    if world > 1 and not tdist.is_initialized():
        tdist.init_process_group(
            name, timeout=dt.timedelta(seconds=timeout_s), device_id=dev if dev.type == "cuda" else None
        )
    elif group_of_one and not tdist.is_initialized():
        tdist.init_process_group(name, store=tdist.HashStore(), rank=0, world_size=1)
    return DistEnv(rank, world, local_rank, local_world, dev)


@contextlib.contextmanager
def fail_on_timeout(env: DistEnv, timeout_s: float) -> Iterator[None]:
    """Turn a collective that timed out (a peer hung or vanished) into a one-line error."""
    try:
        yield
    except RuntimeError as err:  # gloo and NCCL raise DistBackendError, a RuntimeError
        text = str(err)
        if "timed out" not in text.lower() and "timeout" not in text.lower():
            raise
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        raise BigModelError(
            f"rank {env.rank}: a collective waited longer than dist.timeout_s={timeout_s:g}s; "
            f"a peer worker is stuck or gone ({first[:160]})"
        ) from None


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB. On Linux it is /proc's VmHWM:
    getrusage's ru_maxrss survives exec, so a worker would report its launcher's peak when that
    was larger (a benchmark holding 1.2 GB made every worker it started "peak" at 1.2 GB)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def teardown() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.world > 1:
        tdist.barrier()


def all_reduce_sum(t: torch.Tensor, env: DistEnv, op: str = "sum") -> torch.Tensor:
    """Sum (or ``op="max"``) a tensor over ranks (float64 stays float64: gloo reduces it exactly enough)."""
    if env.world > 1:
        dev = t.device
        buf = t.to(env.device)
        tdist.all_reduce(buf, op=tdist.ReduceOp.MAX if op == "max" else tdist.ReduceOp.SUM)
        t = buf.to(dev)
    return t


def launch(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    nprocs: int,
    *,
    max_restarts: int = 0,
    env: dict[str, str] | None = None,
) -> Any:
    """Run ``fn(*args)`` in ``nprocs`` local processes; return rank 0's result. ``env`` holds
    defaults for the workers' environment (read when each worker process starts)."""
    for key, value in (env or {}).items():
        os.environ.setdefault(key, value)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # Each restart gets a fresh store: with the launcher's shared store (torch's default), restarted
    # workers can read their dead predecessors' gloo addresses and fail with "Connection refused".
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nprocs,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=max_restarts,
        monitor_interval=0.1,
        start_method="spawn",
    )
    logs = [
        logging.getLogger(f"torch.{m}")
        for m in ("distributed.elastic.multiprocessing.api", "multiprocessing.spawn")
    ]
    for log in logs:
        log.addFilter(_quiet_user_errors)
    try:
        results = elastic_launch(config, fn)(*args)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        raise BigModelError(f"worker {rank} failed: {_summary(failure.message)}") from None
    finally:
        for log in logs:
            log.removeFilter(_quiet_user_errors)
    return results[0]


def _quiet_user_errors(record: logging.LogRecord) -> bool:
    """Keep the launcher's log to what a user needs when a worker fails: a worker that stopped on bad
    input is re-raised by the parent as one line, so torch's copy of its traceback is dropped, and
    so is the notice that the other workers were stopped. A crash keeps its traceback."""
    exc = record.exc_info[1] if record.exc_info else None  # holds the worker's traceback as text
    text = f"{record.getMessage()} {exc}"
    return "bigmodel.errors.BigModelError" not in text and not text.startswith("Terminating process")


def _summary(message: object) -> str:
    if isinstance(message, dict):
        message = message.get("message", message)
    text = str(message).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message (killed?)"

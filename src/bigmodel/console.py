"""What people see: progress bars (stderr, like tqdm), result tables (stdout) and ``--json`` lines."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

PIPED_WIDTH = 160  # rich's 80 columns cut model names and figures in tables sent to a file or pipe


def _width(stream: Any) -> int | None:
    """None (rich decides: the terminal's width, or $COLUMNS) unless the output is piped."""
    if os.environ.get("COLUMNS") or stream.isatty():
        return None
    return PIPED_WIDTH


out = Console(highlight=False, width=_width(sys.stdout))
err = Console(stderr=True, highlight=False, width=_width(sys.stderr))

Advance = Callable[..., None]


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, *, enabled: bool = True) -> Iterator[Advance]:
    """Yield ``advance(n=1, info=None)``. Shown on stderr only when it is a terminal, so logs and
    pipes stay clean; callers pass ``enabled=False`` on every rank but 0."""
    if not (enabled and err.is_terminal):
        yield lambda n=1, info=None: None
        return
    with Progress(*_bar_columns("{task.description}"), console=err, transient=False) as p:
        task = p.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str | None = None) -> None:
            if info is None:
                p.update(task, advance=n)
            else:
                p.update(task, advance=n, info=info)

        yield advance


@contextlib.contextmanager
def steps_bar(*, enabled: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """Yield ``show(step, done, total)``: one bar whose step and total change as the work moves on
    (a Spark job's stages). Shown on stderr only when it is a terminal."""
    if not (enabled and err.is_terminal):
        yield lambda step, done, total: None
        return
    with Progress(*_bar_columns("{task.description}"), console=err, transient=False) as p:
        task = p.add_task("", total=None, info="")

        def show(step: str, done: int, total: int) -> None:
            p.update(task, description=step, completed=done, total=total or None)

        yield show


class RunProgress:
    """Two bars for a training run: epochs overall, and batches of the current epoch with its loss and
    throughput. A no-op when disabled (ranks other than 0, or stderr not a terminal)."""

    def __init__(self, progress: Progress | None, epochs: int, first_epoch: int):
        self._p = progress
        self._epochs = epochs
        if progress is not None:
            self._run = progress.add_task("run", total=epochs, completed=first_epoch, info="")
            self._epoch = progress.add_task("epoch", total=1, info="")

    def start_epoch(self, epoch: int, batches: int) -> None:
        if self._p is not None:
            self._p.reset(
                self._epoch, total=batches, description=f"epoch {epoch + 1}/{self._epochs}", info=""
            )

    def advance(self, n: int, info: str) -> None:
        if self._p is not None:
            self._p.update(self._epoch, advance=n, info=info)

    def end_epoch(self, info: str) -> None:
        if self._p is not None:
            self._p.update(self._run, advance=1, info=info)


@contextlib.contextmanager
def run_progress(epochs: int, first_epoch: int = 0, *, enabled: bool = True) -> Iterator[RunProgress]:
    if not (enabled and err.is_terminal):
        yield RunProgress(None, epochs, first_epoch)
        return
    with Progress(*_bar_columns("{task.description:>12}"), console=err, transient=False) as p:
        yield RunProgress(p, epochs, first_epoch)


def _bar_columns(description: str) -> tuple[ProgressColumn, ...]:
    """Description, bar, done/total, the task's ``info`` field, elapsed time and ETA."""
    return (
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )


def fmt(v: Any) -> str:
    """Numbers as people read them: 4 significant digits, thousands separators for counts."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.3e}"
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def kv_table(title: str, rows: Mapping[str, Any]) -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for k, v in rows.items():
        t.add_row(k, fmt(v))
    return t


def grid_table(title: str, header: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*(fmt(v) for v in r))
    return t


def show(*renderables: Any, json_mode: bool = False) -> None:
    """Tables go to stdout for people; in --json mode to stderr, keeping stdout for the JSON line."""
    target = err if json_mode else out
    for r in renderables:
        target.print(r)


def print_json(obj: Any) -> None:
    """The machine-readable result: one JSON object as the last line of stdout."""
    sys.stdout.write(json.dumps(obj, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)

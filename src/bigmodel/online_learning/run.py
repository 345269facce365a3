"""``online(model, stream)``: keep a registered model learning from a stream of labelled rows."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from bigmodel import console
from bigmodel.errors import BigModelError
from bigmodel.online_learning.policy import OnlineConfig


def online_config(**settings: Any) -> OnlineConfig:
    """An ``OnlineConfig``, or a one-line error naming the bad setting."""
    try:
        return OnlineConfig(**settings)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(map(str, e["loc"])) or "settings"
        raise BigModelError(f"bad online setting '{where}': {e['msg']}") from None


def online(
    model: str,
    stream: str | Path | IO[bytes],
    *,
    registry: str | None = None,
    config: OnlineConfig | None = None,
    plot: str | Path | None = None,
    progress: bool = True,
    **settings: Any,
) -> dict[str, Any]:
    """Prequential online learning of registry model ``model`` (``NAME`` or ``NAME@ALIAS``) on
    ``stream``: a CSV or JSON-lines file of labelled rows (the model's feature columns and its
    label column), ``-`` for stdin, or a binary file object.

    Starts from the version the alias (default ``production``) points at, else the latest; every
    row is scored by the serving version and by the learner before the learner takes an SGD step
    on it; a drift detector watches the serving version's errors; the policy in
    ``bigmodel.online_learning.policy`` registers new versions and moves the alias, or rolls it back.
    ``settings`` are ``OnlineConfig`` fields (``window``, ``min_samples``, ``margin``, ``lr``,
    ``detector``, ``publish=False`` for a dry run, ...). ``plot``: a PNG of prequential accuracy.

    Returns the learner's summary (prequential and window scores, every event) with ``model``,
    ``alias``, ``started_from`` and ``aliases`` (the model's aliases after the run).
    """
    # Imported here: torch loads only when something is learned, not with `bigmodel`.
    from bigmodel.online_learning.learner import OnlineLearner, Publisher, describe
    from bigmodel.online_learning.rows import read_stream
    from bigmodel.registry import Registry, parse_ref

    ref = parse_ref(model)
    if ref.version is not None:
        raise BigModelError(
            f"online learning follows an alias: use {ref.name} or {ref.name}@ALIAS, not a pinned version"
        )
    cfg = config or online_config(**settings)
    if ref.alias:
        cfg = cfg.model_copy(update={"alias": ref.alias})
    if plot is not None and Path(plot).exists():
        raise BigModelError(f"{plot} already exists (choose another --plot; nothing was overwritten)")
    reg = Registry(registry, create=False)
    publisher = Publisher(reg, ref.name, cfg.alias)
    start = publisher.start_version()
    loaded = publisher.load(start)
    learner = OnlineLearner(loaded, start, cfg, publisher)
    metric = "mse" if loaded.spec.task == "regression" else "acc"
    alias_before = reg.aliases(ref.name).get(cfg.alias)
    with console.progress_bar(f"online {ref.name}@{cfg.alias}", None, enabled=progress) as advance:
        try:
            for x, y in read_stream(stream, loaded.meta):
                for e in learner.learn(x, y):
                    if progress and e["event"] != "confirm":
                        console.err.print(describe(e))
                s, lr, _ = learner.window_scores()
                advance(len(x), info=f"version {learner.version} window {metric} {s:.3f} (learner {lr:.3f})")
        except BigModelError as err:
            # a stream is checked as it is read, so what the rows before a bad one published stands
            # (as in any stream processor); say where that left the alias
            now = reg.aliases(ref.name).get(cfg.alias)
            if now != alias_before:
                raise BigModelError(
                    f"{err} (learned from the first {learner.rows} rows, which moved "
                    f"{ref.name}@{cfg.alias} to version {now})"
                ) from None
            raise
    if learner.rows == 0:
        raise BigModelError(f"{stream}: the stream has no rows")
    result = {
        "model": ref.name,
        "alias": cfg.alias,
        "started_from": start,
        **learner.summary(),
        "aliases": reg.aliases(ref.name),
        "registry": reg.location,
        "config": cfg.model_dump(),
    }
    if plot is not None:
        from bigmodel.online_learning.plot import prequential_plot

        per = f"{result['metric']}, per {learner.curve_every} rows"
        prequential_plot(learner.curve, result["events"], plot, metric=per, title=model)
        result["plot"] = str(plot)
    return result

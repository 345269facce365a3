"""Which model versions the server holds, and keeping them in step with the registry.

A *target* is what the operator asked for: ``iris`` (the ``production`` alias, else the latest
version), ``iris@staging`` (that alias) or ``iris:3`` (pinned). Each target points at one loaded
version; a version loaded for several targets is loaded once. Every ``poll_interval_s`` the targets
are re-resolved; when an alias moved, the new version is loaded and warmed up beside the old one,
the target switches in one step on the event loop, and the old version answers every request it
already queued before it is released. No request fails or is dropped during a switch.

With ``model_dir`` (``bigmodel serve --model-dir``, what KServe mounts at ``/mnt/models``) there is
no registry: the one target is that directory, served as ``model_name`` version 1, with no aliases
and nothing to poll.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigmodel.errors import BigModelError
from bigmodel.registry import DEFAULT_ALIAS, Ref, Registry, parse_ref
from bigmodel.registry.refs import parse_version
from bigmodel.serve.batcher import Batcher
from bigmodel.serve.config import ServeConfig
from bigmodel.serve.lm import LanguageModelRuntime
from bigmodel.serve.metrics import Metrics
from bigmodel.serve.runtime import Runtime, open_runtime

log = logging.getLogger("bigmodel.serve")


class ModelNotFound(BigModelError):
    """No such model (or version) is served here; the HTTP layer answers it with a 404."""


@dataclass
class Served:
    """One loaded model version."""

    name: str
    version: int
    runtime: Runtime
    batcher: Batcher | None  # the infer route's dynamic batching (tabular models, sentence encoders)
    generator: Any = None  # the generate routes' continuous batching (language models)
    users: int = 0

    @property
    def version_str(self) -> str:
        return str(self.version)


@dataclass
class Target:
    ref: Ref
    current: int | None = None
    error: str | None = None

    @property
    def tracks(self) -> bool:
        """Follows an alias (or the default rule) rather than a pinned version."""
        return self.ref.version is None


class Repository:
    def __init__(self, cfg: ServeConfig, metrics: Metrics):
        self.cfg = cfg
        self.metrics = metrics
        # a fixed model directory (--model-dir) replaces the registry: version 1 is that directory
        self.fixed = Path(cfg.model_dir) if cfg.model_dir is not None else None
        self.fixed_name = cfg.model_name or (self.fixed.resolve().name if self.fixed else "")
        self.registry = Registry(cfg.registry, create=False) if self.fixed is None else None
        self.targets: list[Target] = []
        self.loaded: dict[tuple[str, int], Served] = {}
        self.registry_aliases: dict[str, dict[str, int]] = {}  # as last read from the registry
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None
        self.skipped: dict[str, str] = {}  # model -> why it is not served (whole-registry start)

    # ---- lookups on the hot path (no awaits: a lookup and the submit that follows are atomic) ----

    def get(self, name: str, version: str | None) -> Served:
        if version is None:
            for t in self.targets:
                if t.ref.name == name and t.tracks and t.current is not None:
                    return self.loaded[(name, t.current)]
            versions = [v for (n, v) in self.loaded if n == name]
            if versions:
                return self.loaded[(name, max(versions))]
            raise ModelNotFound(f"unknown model '{name}' (serving: {', '.join(self.names()) or 'none'})")
        number = parse_version(version)  # "²" or "x": not a version, so none is loaded (a 404 naming it)
        served = self.loaded.get((name, number)) if number is not None else None
        if served is None:
            have = sorted(v for (n, v) in self.loaded if n == name)
            if not have:
                raise ModelNotFound(f"unknown model '{name}' (serving: {', '.join(self.names()) or 'none'})")
            raise ModelNotFound(
                f"model '{name}' has no version '{version}' loaded (loaded: {', '.join(map(str, have))})"
            )
        return served

    def names(self) -> list[str]:
        return sorted({n for (n, _) in self.loaded})

    def versions(self, name: str) -> list[str]:
        return [str(v) for (n, v) in sorted(self.loaded) if n == name]

    def followed_alias(self, name: str) -> str | None:
        """The alias this server follows for ``name`` (``production`` by default); None when every
        target of ``name`` is pinned to a version."""
        for t in self.targets:
            if t.ref.name == name and t.tracks:
                return t.ref.alias or DEFAULT_ALIAS
        return None

    def ready(self) -> bool:
        return all(t.current is not None for t in self.targets)

    def aliases_served(self, name: str) -> dict[str, str]:
        """``{"production": "2"}``: the registry's aliases of ``name`` whose version is loaded here."""
        return {
            a: str(v)
            for a, v in sorted(self.registry_aliases.get(name, {}).items())
            if (name, v) in self.loaded
        }

    # ---- changes -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the models asked for (``--models``: any failure stops the start, in one line) or,
        with none named, every model in the registry that can be served: one that cannot (a
        family without an infer route, a broken version) is named in one line and skipped."""
        if self.registry is None:  # a fixed model directory: loaded once, nothing to watch
            self.targets = [Target(Ref(self.fixed_name, version=1))]  # pinned: no alias to follow
            await self.refresh(raise_errors=True)
            return
        if self.cfg.models:
            self.targets = [Target(parse_ref(text)) for text in self.cfg.models]
            await self.refresh(raise_errors=True)
        else:
            for name in await asyncio.to_thread(self.registry.models):
                target = Target(parse_ref(name))
                try:
                    async with self._lock:
                        await self._refresh([target], raise_errors=True)
                except BigModelError as err:
                    self.skipped[name] = str(err)
                    print(f"bigmodel serve: skipping {name}: {err}", file=sys.stderr, flush=True)
                    continue
                self.targets.append(target)
        self._watch = asyncio.get_running_loop().create_task(self._watch_loop())

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        async with self._lock:
            for served in list(self.loaded.values()):
                await self._drop(served)

    async def load(self, name: str) -> None:
        """The repository extension's load: start serving ``name`` (or re-check its versions).

        As in Triton, a load that fails answers the error and leaves the model unavailable: a target
        that serves nothing yet is dropped again, so readiness never waits for it and the watch loop
        does not retry it every poll. A target that already serves keeps serving its version.
        """
        ref = parse_ref(name)
        if self.registry is None:
            self._fixed_version(ref, raise_error=True)
        else:
            await asyncio.to_thread(self.registry.version_of, ref)  # unknown name: a clear error now
        async with self._lock:
            target = next((t for t in self.targets if t.ref == ref), None)
            if target is None:
                target = Target(ref)
                self.targets.append(target)
            try:
                await self._refresh([target], raise_errors=True)
            except BigModelError:
                if target.current is None:
                    self.targets = [t for t in self.targets if t is not target]
                raise

    async def unload(self, name: str) -> None:
        """Stop serving ``name``: every target of that model, or just ``NAME:VERSION`` / ``NAME@ALIAS``."""
        ref = parse_ref(name) if ":" in name or "@" in name else None

        def named(t: Target) -> bool:
            return t.ref == ref if ref is not None else t.ref.name == name

        async with self._lock:
            mine = [t for t in self.targets if named(t)]
            if not mine:
                raise ModelNotFound(f"model '{name}' is not loaded")
            self.targets = [t for t in self.targets if not named(t)]
            for t in mine:
                if t.current is not None:
                    await self._release(t.ref.name, t.current)

    async def refresh(self, *, raise_errors: bool = False) -> None:
        """Re-resolve every target against the registry and switch those whose version moved."""
        async with self._lock:
            await self._refresh(list(self.targets), raise_errors=raise_errors)

    async def _refresh(self, targets: list[Target], *, raise_errors: bool) -> None:
        # the caller holds the lock
        wanted, aliases = await asyncio.to_thread(self._resolve_all, targets)
        # merged, not replaced: a load reads only its own model's aliases
        self.registry_aliases = {**self.registry_aliases, **aliases}
        for t, want in zip(targets, wanted, strict=True):
            if isinstance(want, BigModelError):
                t.error = str(want)
                if raise_errors:
                    raise want
                log.error("cannot resolve %s: %s", t.ref, want)
                continue
            if want == t.current:
                continue
            try:
                await self._acquire(t.ref.name, want)
            except BigModelError as err:
                t.error = str(err)
                if raise_errors:
                    raise
                log.error("cannot load %s:%s (still serving %s): %s", t.ref.name, want, t.current, err)
                continue
            old, t.current, t.error = t.current, want, None
            if old is not None:
                log.warning("%s now serves %s:%s (was %s)", t.ref, t.ref.name, want, old)
                await self._release(t.ref.name, old)

    def _resolve_all(
        self, targets: list[Target]
    ) -> tuple[list[int | BigModelError], dict[str, dict[str, int]]]:
        if self.registry is None:
            return [self._fixed_version(t.ref) for t in targets], {}
        heads = self.registry.heads(sorted({t.ref.name for t in targets}))
        out: list[int | BigModelError] = []
        for t in targets:
            versions, aliases = heads[t.ref.name]
            r = t.ref
            want = r.version if r.version is not None else aliases.get(r.alias or DEFAULT_ALIAS)
            if want is None and r.alias is None and versions:
                want = versions[-1]
            if want is None or want not in versions:
                try:  # the registry's own lookup words the error
                    want = self.registry.version_of(r)
                except BigModelError as err:
                    out.append(err)
                    continue
            out.append(want)
        return out, {name: aliases for name, (_, aliases) in heads.items()}

    def _fixed_version(self, ref: Ref, *, raise_error: bool = False) -> int | BigModelError:
        """What ``ref`` resolves to beside a fixed model directory: version 1 of its one name."""
        err: BigModelError | None = None
        if ref.name != self.fixed_name:
            err = BigModelError(
                f"no model named '{ref.name}' here (serving {self.fixed} as '{self.fixed_name}')"
            )
        elif ref.alias is not None or ref.version not in (None, 1):
            err = BigModelError(f"{ref}: a model directory is served as version 1, without aliases")
        if err is not None and raise_error:
            raise err
        return err or 1

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.poll_interval_s)
            try:
                await self.refresh()
            except Exception:  # the registry being briefly unreachable must not stop serving
                log.exception("registry refresh failed; still serving the loaded versions")

    async def _acquire(self, name: str, version: int) -> Served:
        served = self.loaded.get((name, version))
        if served is None:
            runtime, forward_s = await asyncio.to_thread(self._open, name, version)
            batcher = None
            if not isinstance(runtime, LanguageModelRuntime):  # tabular models and encoders
                batcher = Batcher(
                    runtime.predict,
                    max_batch_size=self.cfg.max_batch_size,
                    max_delay_s=self.cfg.max_queue_delay_ms / 1000,
                    max_queue=self.cfg.max_queue,
                    on_batch=self.metrics.batch_observer(name, str(version)),
                    forward_s=forward_s,
                )
                batcher.start()
            generator = None
            if isinstance(runtime, LanguageModelRuntime):
                stats = self.metrics.generation_observer(name, str(version))
                generator = stats.scheduler = runtime.scheduler(self.cfg, stats)
                generator.start()
            served = Served(name, version, runtime, batcher, generator)
            self.loaded[(name, version)] = served
            self.metrics.loaded[(name, str(version))] = runtime.kind
        served.users += 1
        return served

    def _open(self, name: str, version: int) -> tuple[Runtime, float]:
        """The version's runtime, warmed up, and the CPU seconds of one warm-up forward (the
        batcher's first guess at where forwards should run)."""
        if self.registry is None:
            assert self.fixed is not None
            path = self.fixed
        else:
            path = self.registry.resolve(Ref(name, version=version))
        try:
            runtime = open_runtime(path, self.cfg.runtime, self.cfg.threads)
            if isinstance(runtime, LanguageModelRuntime):
                runtime.slots(self.cfg)  # a KV cache budget too small for one sequence: say so now
            t0 = time.thread_time()
            runtime.warm_up(self.cfg.max_batch_size)  # two forwards: batch 1 and the largest
            forward_s = (time.thread_time() - t0) / 2
        except BigModelError as err:
            raise BigModelError(f"{name}:{version}: {err}") from None
        except Exception as err:  # a model that loads but cannot run: one line, never a crash
            raise BigModelError(f"{name}:{version} cannot be served: {type(err).__name__}: {err}") from None
        return runtime, forward_s

    async def _release(self, name: str, version: int) -> None:
        served = self.loaded[(name, version)]
        served.users -= 1
        if served.users <= 0:
            await self._drop(served)

    async def _drop(self, served: Served) -> None:
        # Unreachable first (no new requests), then answer everything already queued.
        self.loaded.pop((served.name, served.version), None)
        self.metrics.loaded.pop((served.name, served.version_str), None)
        if served.batcher is not None:
            await served.batcher.stop()
        if served.generator is not None:
            await served.generator.stop()

    async def index(self) -> list[dict[str, Any]]:
        """Every version in the registry with its state here (the repository extension)."""
        if self.registry is None:
            records: list[dict[str, Any]] = [{"name": self.fixed_name, "version": 1}]
        else:
            records = await asyncio.to_thread(self.registry.versions)
        return [
            {
                "name": r["name"],
                "version": str(r["version"]),
                "state": "READY" if (r["name"], r["version"]) in self.loaded else "UNAVAILABLE",
                "reason": "" if (r["name"], r["version"]) in self.loaded else "not loaded",
            }
            for r in records
        ]

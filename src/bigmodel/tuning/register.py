"""``--register NAME``: the study's winners into the model registry, each remembering where it came
from (study, trial number, the trial's parameters and objective values) in its model.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from bigmodel import artifacts
from bigmodel.errors import BigModelError


def register_winners(study: optuna.Study, summary: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Register the best trial (one objective) or every trial of the Pareto front (several, in trial
    order) as versions of ``name``; returns ``[{"trial", "version", "digest"}]``."""
    from bigmodel.registry import Registry

    winners = [summary["best"]] if "best" in summary else summary.get("pareto", [])
    if not winners:
        raise BigModelError(f"study {study.study_name!r} has no completed trial to register")
    reg = Registry()
    out = []
    for w in winners:
        model_dir = Path(str(w.get("model_dir") or ""))
        if not (model_dir / artifacts.META).is_file():
            raise BigModelError(
                f"trial {w['number']}'s model directory {model_dir} is gone (it was written by another "
                "machine, or removed); register from the machine that ran it"
            )
        tune = {
            "study": study.study_name,
            "trial": w["number"],
            "params": w["params"],
            "objectives": {o: w.get(o) for o in summary["objectives"]},
        }
        artifacts.add_files(model_dir, [], tune=tune)
        digest = artifacts.digest(model_dir)
        known = {v["digest"]: v["version"] for v in reg.versions(name)} if name in reg.models() else {}
        if digest in known:  # the same winner, registered by an earlier run of this command
            out.append({"trial": w["number"], "version": known[digest], "digest": digest, "new": False})
            continue
        rec = reg.register(model_dir, name)
        out.append({"trial": w["number"], "version": rec["version"], "digest": rec["digest"], "new": True})
    return out

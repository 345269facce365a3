"""The demo's federated and explanation step: a few simulated clients, then why one answer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bigmodel import console


def federated_and_explain(
    work: Path, dataset: str | Path, csv: str | Path, *, say: Callable[..., None], json_mode: bool = False
) -> dict[str, Any]:
    """Train on ``dataset`` across 5 simulated clients with label-skewed shards (a few seconds),
    then explain the model's answer for the first row of ``csv`` with Integrated Gradients."""
    from bigmodel.explanations import explain
    from bigmodel.federation import federated

    say(
        "[bold]8. federated[/bold] 5 simulated clients, each with its own label-skewed shard "
        "(Dirichlet 0.5), FedAvg over Flower, 8 rounds; clients send weights, never rows"
    )
    fed = federated(
        dataset=str(dataset),
        hidden=[16],
        clients=5,
        rounds=8,
        partition="dirichlet:0.5",
        local_epochs=2,
        out=str(work / "runs" / "federated"),
        progress=not json_mode,
    )
    say(
        f"   {fed['rounds']} rounds, val accuracy {fed['metrics']['accuracy']:.3f} "
        f"(no client's rows left its process); model in {fed['run_dir']}"
    )
    say("[bold]9. explain[/bold] why the federated model answered as it did for the first patient")
    ex = explain(fed["run_dir"], csv, rows=1, out=work / "runs" / "federated" / "explain-row0.png")
    row = ex["rows"][0]
    top = [[name, value] for name, value in row["top"]]
    say(
        f"row 0: predicted {row['predicted']} (p={row['probability']:.3f}); attributions to its log-odds "
        f"against the training mean (convergence delta {row['convergence_delta']:.2g}), bar chart in {ex['png']}"
    )
    console.show(console.grid_table("top features", ["feature", "attribution"], top), json_mode=json_mode)
    return {"federated": fed, "explain": {"row": row, "png": ex["png"]}}

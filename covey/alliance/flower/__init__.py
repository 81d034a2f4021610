"""Covey's alliance client and robust rule inside Flower (flwr 1.42), for scale-out beyond one chain's committee.

    from covey.alliance.flower import FlowerDeployment
    with FlowerDeployment(supernodes=5) as flower:      # flower-superlink + 5 flower-supernode on 127.0.0.1
        report = flower.run(RunConfig(dataset="digits", behaviours=("honest",) * 5, rounds=3))
    report.accuracies, report.round_s                  # the held-out accuracy per round, seconds per round

`covey.alliance.flower.apps` holds the ClientApp (`Participant.local_update` on the node's private
partition) and the ServerApp (`CoveyStrategy`: Flower's FedAvg orchestration, Covey's `next_model`
for the aggregate). Those two import flwr and run inside Flower's processes; this package and its
`deployment` module do not, so the main environment can drive a Flower environment that pins
different versions of typer, rich, fastapi and uvicorn (see `deployment.flower_bin_dir`).
"""

from __future__ import annotations

from covey.alliance.flower.deployment import (
    FlowerDeployment,
    FlowerError,
    FlowerRunReport,
    flower_bin_dir,
)

__all__ = ["FlowerDeployment", "FlowerError", "FlowerRunReport", "flower_bin_dir"]

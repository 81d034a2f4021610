"""Flower scale-out: the alliance's participant training and robust rule run as Flower's ClientApp and Strategy.

A real, offline Flower deployment: `flower-superlink --insecure` and one `flower-supernode` per hospital on
127.0.0.1, the run submitted with `flwr run` and judged by its status (its exit code is 0 even when the run fails).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from covey.alliance.flower import FlowerDeployment, FlowerError, deployment, flower_bin_dir
from covey.alliance.runner import RunConfig

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def flower_installed() -> Path:
    try:
        return flower_bin_dir()
    except FlowerError as error:
        pytest.skip(f"{error}")


def test_a_flower_run_with_a_sign_flipper_still_learns_and_cleans_up(flower_installed: Path, tmp_path: Path) -> None:
    # Three hospitals, one sending its update sign-flipped and scaled 4x; all three train every round (the
    # held-out set, not a voter, judges the model here).
    config = RunConfig(
        dataset="digits", behaviours=("honest", "honest", "sign_flip"), rounds=2, proposers=3, voters=0, lr=0.05
    )
    with FlowerDeployment(supernodes=3, workdir=tmp_path) as flower:
        pids = flower.process_ids
        port = flower.port
        report = flower.run(config)

    assert report.status == "finished:completed"
    assert report.details["failures"] == {}, "a ClientApp raised"
    assert report.details["rule"] == "covey_default"
    assert len(report.round_s) == config.rounds and all(s > 0 for s in report.round_s)
    before, after = report.accuracies[0], report.accuracies[-1]
    assert after > 0.8 > before, f"held-out accuracy went from {before:.3f} to {after:.3f}"
    for pid in pids:  # every process group the deployment started is gone
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_a_failed_run_raises_although_flwr_run_exits_0(
    flower_installed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A ServerApp reference that loads but is not a ServerApp: `flwr run` submits it and exits 0, the run fails.
    monkeypatch.setitem(deployment.APP_COMPONENTS, "serverapp", "covey.alliance.flower.apps:client_app")
    config = RunConfig(dataset="digits", behaviours=("honest",), rounds=1, proposers=1, voters=0)
    with FlowerDeployment(supernodes=1, workdir=tmp_path) as flower, pytest.raises(FlowerError) as failed:
        flower.run(config, timeout_s=300)
    assert "finished:failed" in str(failed.value)
    assert "is not of type" in str(failed.value)  # the ServerApp's own error, from the run's log

"""The Covey Flower app: a ClientApp that trains like an alliance proposer, a ServerApp that aggregates like the chain.

Components for `[tool.flwr.app.components]` (`FlowerDeployment` writes that pyproject):

    clientapp = "covey.alliance.flower.apps:client_app"
    serverapp = "covey.alliance.flower.apps:server_app"

Run config (`[tool.flwr.app.config]`):
    covey-config   a `RunConfig` as JSON: dataset, split, one behaviour per SuperNode, rounds,
                   proposers (nodes that train per round), voters (nodes that evaluate), rule, lr, seed
    report-path    where the ServerApp writes its JSON report (accuracy and seconds per round)
Node config (`flower-supernode --node-config partition-id=<i>`): the node's member index.

A node's ClientApp loads only its own partition (`runner.private_partition`) and trains it with
`Participant.local_update`, the very code an alliance proposer runs, behaviours and DP-SGD included.
Only the trained model and counts leave the node, as on chain.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
from eth_account import Account
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from covey.alliance.client import AllianceClient
from covey.alliance.flower.strategy import NUM_EXAMPLES_KEY, CoveyStrategy, model_record, model_vector
from covey.alliance.ledger import ModelLedger
from covey.alliance.participant import Behaviour, Participant
from covey.alliance.rules import rule_id
from covey.alliance.runner import RunConfig, held_out_set, private_partition
from covey.ml import evaluate, unflatten
from covey.ml.datasets import Dataset
from covey.storage import ArtifactStore

CONFIG_KEY = "covey-config"
REPORT_KEY = "report-path"
PARTITION_KEY = "partition-id"
REPLY_TIMEOUT_S = 600.0  # how long the ServerApp waits for a round's replies
NODE_WAIT_S = 120.0  # how long the ServerApp waits for every SuperNode to connect
FLOWER_ALLIANCE_ID = 0  # no alliance on chain; the id only enters the participant's training seed

client_app = ClientApp()
server_app = ServerApp()


# -- ClientApp ----------------------------------------------------------------------------------------


class _MessageModel:
    """Stands in for `ModelLedger`: in Flower the round's global model arrives in the message, not from the chain."""

    def __init__(self, model: np.ndarray) -> None:
        self._model = model

    def model_for_round(self, round_number: int) -> np.ndarray:
        return self._model.copy()


class _RuleOnly:
    """Stands in for `AllianceClient`: off chain, a participant only needs the alliance's aggregation rule."""

    def __init__(self, rule: int) -> None:
        self._info = SimpleNamespace(aggregation_rule=rule)

    def alliance(self, alliance_id: int) -> SimpleNamespace:
        return self._info


def _member(context: Context) -> tuple[RunConfig, int]:
    config = RunConfig.from_json(str(context.run_config[CONFIG_KEY]))
    index = int(context.node_config[PARTITION_KEY])
    if not 0 <= index < len(config.behaviours):
        raise ValueError(f"partition-id {index} is outside the run's {len(config.behaviours)} members")
    return config, index


def _participant(config: RunConfig, index: int, data: Dataset, model: np.ndarray) -> Participant:
    """Member `index` as an alliance `Participant` holding its private `data`, starting from `model`."""
    key = hashlib.sha256(f"covey-flower:{config.seed}:{index}".encode()).digest()
    return Participant(
        Account.from_key(key),
        cast(AllianceClient, _RuleOnly(rule_id(config.rule))),
        cast(ArtifactStore, None),  # Flower carries the models; nothing goes to a store
        FLOWER_ALLIANCE_ID,
        data,
        config.spec(),
        behaviour=Behaviour.named(config.behaviours[index]),
        ledger=cast(ModelLedger, _MessageModel(model)),
        privacy=config.privacy(),
    )


@client_app.train()
def train(message: Message, context: Context) -> Message:
    """Train the global model on this node's partition, as a proposer would; reply with the trained model."""
    config, index = _member(context)
    base = model_vector(message.content["arrays"])
    round_number = int(message.content["config"]["server-round"])
    data = private_partition(config, index)
    participant = _participant(config, index, data, base)
    update = participant.local_update(round_number)
    metrics: dict[str, Any] = {NUM_EXAMPLES_KEY: len(data)}
    if participant.privacy_spent:
        metrics["epsilon"] = float(participant.privacy_spent[-1][0])
    content = RecordDict({"arrays": model_record(base + update), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=message)


@client_app.evaluate()
def evaluate_global(message: Message, context: Context) -> Message:
    """The global model's accuracy on this node's partition, as a voter would score it."""
    config, index = _member(context)
    data = private_partition(config, index)
    model = unflatten(config.spec().build_model(), model_vector(message.content["arrays"]).astype(np.float32))
    metrics = MetricRecord({"accuracy": evaluate(model, data, "accuracy"), NUM_EXAMPLES_KEY: len(data)})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=message)


# -- ServerApp ----------------------------------------------------------------------------------------


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """Wait for every member's SuperNode, run `CoveyStrategy` for the configured rounds, write the report."""
    config = RunConfig.from_json(str(context.run_config[CONFIG_KEY]))
    report_path = Path(str(context.run_config[REPORT_KEY]))
    members = len(config.behaviours)
    strategy = CoveyStrategy(config.rule, members=members, train_nodes=config.proposers, evaluate_nodes=config.voters)
    _wait_for_nodes(grid, members)
    spec = config.spec()
    held_out = held_out_set(config)
    model = spec.build_model()
    accuracies: list[float] = []
    marks: list[float] = []

    def evaluate_on_held_out(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        unflatten(model, model_vector(arrays).astype(np.float32))
        accuracies.append(evaluate(model, held_out, "accuracy"))
        marks.append(time.perf_counter())
        return MetricRecord({"accuracy": accuracies[-1]})

    result = strategy.start(
        grid,
        model_record(spec.initial_model()),
        num_rounds=config.rounds,
        timeout=REPLY_TIMEOUT_S,
        evaluate_fn=evaluate_on_held_out,
    )
    report = {
        "rule": config.rule,
        "members": members,
        "rounds": config.rounds,
        "accuracies": accuracies,
        "round_s": [later - earlier for earlier, later in itertools.pairwise(marks)],
        "failures": {str(r): reasons for r, reasons in strategy.failures.items()},
        "train_metrics": {str(r): dict(m) for r, m in result.train_metrics_clientapp.items()},
        "evaluate_metrics": {str(r): dict(m) for r, m in result.evaluate_metrics_clientapp.items()},
    }
    partial = report_path.with_suffix(".partial")
    partial.write_text(json.dumps(report, indent=2))
    os.replace(partial, report_path)


def _wait_for_nodes(grid: Grid, members: int) -> None:
    """Block until `members` SuperNodes are connected, so round 1's time is not spent waiting for them."""
    deadline = time.monotonic() + NODE_WAIT_S
    while len(list(grid.get_node_ids())) < members:
        if time.monotonic() > deadline:
            connected = len(list(grid.get_node_ids()))
            raise TimeoutError(f"only {connected} of {members} SuperNodes connected within {NODE_WAIT_S:.0f}s")
        time.sleep(0.5)

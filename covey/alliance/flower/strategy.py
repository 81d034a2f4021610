"""`CoveyStrategy`: Flower's FedAvg node sampling and messaging, with Covey's robust rule for the aggregate.

A Covey model travels as one flat float64 vector (`covey.ml.flatten`) in an `ArrayRecord`. Clients
reply with their trained model, as Flower expects; the strategy turns each reply into the update a
Covey proposer would commit (trained minus the global model it sent) and takes the next global
model from `covey.alliance.rules.next_model`, the same function every alliance voter replays.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from covey.alliance.errors import AggregationError
from covey.alliance.rules import needs_reference, next_model, rule_id, trust_reference

NUM_EXAMPLES_KEY = "num-examples"  # FedAvg's default `weighted_by_key`; Covey's rules ignore the weights


def model_record(vector: np.ndarray) -> ArrayRecord:
    """An `ArrayRecord` carrying one flat model vector as float64."""
    return ArrayRecord([np.ascontiguousarray(vector, dtype=np.float64)])


def model_vector(record: ArrayRecord) -> np.ndarray:
    """The flat float64 model in `record`; `AggregationError` unless it holds exactly one 1-D array."""
    arrays = record.to_numpy_ndarrays()
    if len(arrays) != 1 or arrays[0].ndim != 1:
        shapes = [array.shape for array in arrays]
        raise AggregationError(f"a Covey model is one flat vector; the record holds arrays of shapes {shapes}")
    return arrays[0].astype(np.float64)


class CoveyStrategy(FedAvg):
    """FedAvg's orchestration; the aggregate is `next_model(global, updates, rule)` instead of a weighted mean.

    Each round trains on `train_nodes` sampled nodes (an alliance's proposers) and evaluates on
    `evaluate_nodes` (its voters; 0 skips federated evaluation). Replies that carry an error are
    left out of the aggregate and listed in `failures` by round.
    """

    def __init__(self, rule: str = "covey_default", *, members: int, train_nodes: int, evaluate_nodes: int) -> None:
        if not 1 <= train_nodes <= members or not 0 <= evaluate_nodes <= members:
            raise ValueError(
                f"cannot sample {train_nodes} training and {evaluate_nodes} evaluating nodes from {members} members"
            )
        super().__init__(
            fraction_train=train_nodes / members,
            fraction_evaluate=evaluate_nodes / members,
            min_train_nodes=train_nodes,
            min_evaluate_nodes=evaluate_nodes,
            min_available_nodes=members,
        )
        self.rule_name = rule
        self.rule = rule_id(rule)
        self.failures: dict[int, list[str]] = {}
        self._sent: dict[int, np.ndarray] = {}  # round -> the global model it started from

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's training messages; remembers the global model sent, which the updates are measured from."""
        self._sent[server_round] = model_vector(arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The next global model under the Covey rule, and FedAvg's training metrics; (None, None) without replies."""
        valid, failed = self._check_and_log_replies(replies, is_train=True)
        if failed:
            self.failures[server_round] = [str(message.error.reason) for message in failed]
        if not valid:
            return None, None
        base = self._sent[server_round]
        contents = [message.content for message in valid]
        updates = [model_vector(content[self.arrayrecord_key]) - base for content in contents]
        # covey_trust compares updates with the last global step, replayed from the rounds' start models.
        reference = trust_reference(self._sent.__getitem__, server_round) if needs_reference(self.rule) else None
        model = next_model(base, updates, self.rule, reference)
        return model_record(model), self.train_metrics_aggr_fn(contents, self.weighted_by_key)

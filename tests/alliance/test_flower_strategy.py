"""`CoveyStrategy` inside Flower's Python: replies become Covey updates and the aggregate is `rules.next_model`.

flwr lives in its own environment (see the Makefile), so the strategy runs there in a subprocess and
reports back as JSON; no SuperLink is needed, the grid is a stand-in listing node ids.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from covey.alliance.flower import FlowerError, flower_bin_dir
from covey.alliance.rules import next_model, rule_id

REPO = Path(__file__).resolve().parents[2]
BASE = [1.0, -2.0, 0.5, 3.0]
HONEST = [[0.1, 0.2, -0.1, 0.0], [0.12, 0.18, -0.08, 0.01], [0.09, 0.21, -0.12, -0.01]]
SIGN_FLIPPED = [-0.4, -0.8, 0.4, 0.0]

SCRIPT = """
import json, sys
from types import SimpleNamespace
import numpy as np
from flwr.app import ConfigRecord, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from covey.alliance.flower.strategy import CoveyStrategy, model_record, model_vector

base, updates = (np.array(v) for v in json.loads(sys.argv[1]))
TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # what a ServerApp process knows
grid = SimpleNamespace(get_node_ids=lambda: [11, 12, 13, 14, 15])

def reply(update):
    content = RecordDict({"arrays": model_record(base + update), "metrics": MetricRecord({"num-examples": 10})})
    return SimpleNamespace(has_error=lambda: False, content=content)

failed = SimpleNamespace(
    has_error=lambda: True, error=SimpleNamespace(reason="boom"), metadata=SimpleNamespace(src_node_id=15)
)
strategy = CoveyStrategy("covey_default", members=5, train_nodes=4, evaluate_nodes=3)
to_train = list(strategy.configure_train(1, model_record(base), ConfigRecord(), grid))
to_evaluate = list(strategy.configure_evaluate(1, model_record(base), ConfigRecord(), grid))
arrays, _ = strategy.aggregate_train(1, [reply(u) for u in updates] + [failed])
print(json.dumps({
    "train": len(to_train), "evaluate": len(to_evaluate),
    "model": model_vector(arrays).tolist(), "failures": strategy.failures,
}))
"""


@pytest.fixture(scope="module")
def flower_python() -> Path:
    try:
        return flower_bin_dir() / "python"
    except FlowerError as error:
        pytest.skip(f"{error}")


def test_four_replies_one_sign_flipped_and_one_error_give_covey_defaults_next_model(flower_python: Path) -> None:
    updates = [*HONEST, SIGN_FLIPPED]
    done = subprocess.run(
        [str(flower_python), "-c", SCRIPT, json.dumps([BASE, updates])],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert (result["train"], result["evaluate"]) == (4, 3)  # proposers train, voters evaluate
    expected = next_model(np.array(BASE), [np.array(u) for u in updates], rule_id("covey_default"))
    np.testing.assert_allclose(result["model"], expected, rtol=0, atol=1e-12)
    plain_mean = np.array(BASE) + np.mean(updates, axis=0)
    assert np.abs(np.array(result["model"]) - plain_mean).max() > 0.05  # not FedAvg: the flip lost its pull
    assert result["failures"] == {"1": ["boom"]}


TWO_ROUNDS = """
import json, sys
from types import SimpleNamespace
import numpy as np
from flwr.app import ConfigRecord, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from covey.alliance.flower.strategy import CoveyStrategy, model_record, model_vector

base, first, second = (np.array(v) for v in json.loads(sys.argv[1]))
TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
grid = SimpleNamespace(get_node_ids=lambda: [11, 12, 13, 14, 15])
strategy = CoveyStrategy("covey_trust", members=5, train_nodes=4, evaluate_nodes=0)
models = []
for server_round, updates in ((1, first), (2, second)):
    list(strategy.configure_train(server_round, model_record(base), ConfigRecord(), grid))
    replies = [
        SimpleNamespace(has_error=lambda: False, content=RecordDict(
            {"arrays": model_record(base + u), "metrics": MetricRecord({"num-examples": 10})}))
        for u in updates
    ]
    arrays, _ = strategy.aggregate_train(server_round, replies)
    base = model_vector(arrays)
    models.append(base.tolist())
print(json.dumps(models))
"""


def test_covey_trust_in_flower_compares_round_two_with_round_ones_step(flower_python: Path) -> None:
    first = [*HONEST, SIGN_FLIPPED]
    second = [[0.11, 0.19, -0.1, 0.0], [0.1, 0.2, -0.09, 0.01], [0.08, 0.22, -0.11, 0.0], SIGN_FLIPPED]
    done = subprocess.run(
        [str(flower_python), "-c", TWO_ROUNDS, json.dumps([BASE, first, second])],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=True,
    )
    after_first, after_second = (np.array(m) for m in json.loads(done.stdout.strip().splitlines()[-1]))

    rule = rule_id("covey_trust")
    expected_first = next_model(np.array(BASE), [np.array(u) for u in first], rule, None)
    np.testing.assert_allclose(after_first, expected_first, rtol=0, atol=1e-12)
    reference = expected_first - np.array(BASE)  # the step round 1 took, as every alliance voter replays it
    expected_second = next_model(expected_first, [np.array(u) for u in second], rule, reference)
    np.testing.assert_allclose(after_second, expected_second, rtol=0, atol=1e-12)
    honest_mean = expected_first + np.mean(second[:3], axis=0)
    np.testing.assert_allclose(after_second, honest_mean, rtol=0, atol=1e-9)  # the flip is dropped against the step

"""Metrics, task specs, and scoring untrusted submissions: bad ones get the worst score and a reason."""

from __future__ import annotations

import io
import math
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_safetensors

from covey.errors import ValidationError
from covey.ml import METRICS, Split, TaskSpec, build_model, default_spec, evaluate, save_weights, score_submission
from covey.ml.evaluate import Score
from tests.support import REPO_ROOT

from .test_weights import with_deep_metadata

TrainedDigits = Any  # the fixture in conftest.py (a dataclass: spec, split, model, weights)


def test_accuracy_counts_correct_labels(trained_digits: TrainedDigits) -> None:
    validation = trained_digits.split.private_validation
    expected = (
        trained_digits.model(torch.from_numpy(validation.inputs)).argmax(1).numpy() == validation.targets
    ).mean()

    assert evaluate(trained_digits.model, validation, "accuracy", batch_size=50) == pytest.approx(expected)


def test_an_untrained_char_gpt_scores_about_the_uniform_8_bits(shakespeare_split: Split) -> None:
    torch.manual_seed(0)
    model = build_model("char_gpt", {"block_size": 32, "n_embd": 32, "n_head": 2})

    bits = evaluate(model, shakespeare_split.private_validation, "bits_per_char", max_tokens=5_000, progress=True)

    assert bits == pytest.approx(math.log2(256), abs=0.05)


def test_metrics_know_which_way_is_better() -> None:
    assert METRICS["accuracy"].better(0.9, 0.8) and METRICS["accuracy"].worst == 0.0
    assert METRICS["bits_per_char"].better(2.1, 2.5) and METRICS["bits_per_char"].worst == 8.0
    with pytest.raises(ValidationError, match="unknown metric"):
        evaluate(build_model("mlp", {}), default_spec("digits").load_split().private_validation, "f1")


def test_a_task_spec_round_trips_as_canonical_json() -> None:
    spec = default_spec("shakespeare", split_seed=3)

    data = spec.to_bytes()

    assert TaskSpec.from_bytes(data) == spec
    assert data == TaskSpec.from_bytes(data).to_bytes()
    assert b" " not in data and data.index(b'"architecture"') < data.index(b'"dataset"')
    assert spec.train.to_train_config(seed=9).max_steps == 2000


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"metric": "accuracy"}, "cannot be scored"),
        ({"family": "mlp", "architecture": {}}, "does not fit"),
        ({"architecture": {"n_embd": 30}}, "multiple of n_head"),
        ({"size_limit_bytes": 0}, "greater than 0"),
        ({"secret": 1}, "Extra inputs"),
    ],
)
def test_inconsistent_specs_are_validation_errors(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        default_spec("shakespeare", **changes)


def test_a_spec_that_is_not_json_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="not a valid task spec"):
        TaskSpec.from_bytes(b"{not json")


def test_a_good_submission_gets_its_real_score(trained_digits: TrainedDigits) -> None:
    score = score_submission(trained_digits.weights, trained_digits.spec, trained_digits.split.private_validation)

    assert score == Score("accuracy", score.value, valid=True, reason=None, parameters=64 * 64 + 64 + 64 * 10 + 10)
    assert score.value > 0.9


def test_a_submission_may_resize_its_model_within_the_size_limit(trained_digits: TrainedDigits) -> None:
    smaller = build_model("mlp", {"input_dim": 64, "hidden_sizes": [8, 8], "num_classes": 10})
    score = score_submission(save_weights(smaller), trained_digits.spec, trained_digits.split.private_validation)
    assert score.valid and score.parameters == 64 * 8 + 8 + 8 * 8 + 8 + 8 * 10 + 10


def _pickled(model: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def _with_nan(model: torch.nn.Module) -> bytes:
    tensors = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    tensors["net.3.bias"][3] = float("nan")
    return save_safetensors(tensors, metadata={"covey.family": "mlp"})


@pytest.mark.parametrize(
    ("make_submission", "reason"),
    [
        (lambda model: pickle.dumps(model.state_dict()), "pickle"),
        (_pickled, "zip archive"),
        (lambda model: save_weights(model)[:-100], "not valid safetensors"),
        (lambda model: b"", "only 0 bytes"),
        (lambda model: np.random.default_rng(0).bytes(2000), "not valid safetensors"),
        (_with_nan, "NaN"),
        (lambda model: save_weights(model) + bytes(600_000), "over the task's limit"),
        (lambda model: save_weights(build_model("cnn", {})), "model family cnn"),
        (lambda model: save_weights(build_model("mlp", {"input_dim": 64, "num_classes": 9})), "num_classes is fixed"),
        (lambda model: with_deep_metadata(save_weights(model)), "its header nests more than 8 levels deep"),
    ],
    ids=[
        "pickle",
        "torch-save",
        "truncated",
        "empty",
        "random-bytes",
        "nan",
        "oversized",
        "wrong-family",
        "wrong-classes",
        "metadata-nested-100000-deep",
    ],
)
def test_bad_submissions_get_the_worst_score_and_a_reason(
    trained_digits: TrainedDigits, make_submission: object, reason: str
) -> None:
    submission = make_submission(trained_digits.model)  # type: ignore[operator]

    score = score_submission(submission, trained_digits.spec, trained_digits.split.private_validation)

    assert (score.valid, score.value) == (False, 0.0)
    assert score.reason is not None and reason in score.reason


SCORE_IN_A_RAISED_LIMIT = """
import sys
from pathlib import Path

import covey.chain  # noqa: F401  # what every validator process imports
from covey.ml import TaskSpec, score_submission

# Whatever an import did to the recursion limit (py_ecc once set 100,000, past the C stack), the bounds hold.
sys.setrecursionlimit(100_000)
spec = TaskSpec.from_bytes(Path(sys.argv[1]).read_bytes())
score = score_submission(Path(sys.argv[2]).read_bytes(), spec, spec.load_split().private_validation)
print(score.valid, score.reason)
"""


def test_deep_metadata_cannot_crash_a_validator_process(trained_digits: TrainedDigits, tmp_path: Path) -> None:
    spec, weights = tmp_path / "spec.json", tmp_path / "weights.safetensors"
    spec.write_bytes(trained_digits.spec.to_bytes())
    weights.write_bytes(with_deep_metadata(trained_digits.weights))

    done = subprocess.run(
        [sys.executable, "-c", SCORE_IN_A_RAISED_LIMIT, str(spec), str(weights)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-2000:]  # a segfault would be -11
    assert done.stdout.strip() == (
        "False weights file is not valid safetensors: its header nests more than 8 levels deep"
    )


def test_a_config_claiming_a_huge_model_is_refused_without_building_it(trained_digits: TrainedDigits) -> None:
    tensors = trained_digits.model.state_dict()
    claim = '{"input_dim": 64, "hidden_sizes": [1000000000000], "num_classes": 10}'
    submission = save_safetensors(tensors, metadata={"covey.family": "mlp", "covey.config": claim})

    score = score_submission(submission, trained_digits.spec, trained_digits.split.private_validation)

    assert (score.valid, score.value, score.parameters) == (False, 0.0, 64 * 10**12 + 10**12 + 10 * 10**12 + 10)
    assert score.reason is not None and "over the task's size limit" in score.reason


def test_language_submissions_score_in_bits_and_junk_gets_8(shakespeare_split: Split) -> None:
    spec = default_spec(
        "shakespeare",
        architecture={"block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 32},
        max_eval_tokens=3_000,
    )
    torch.manual_seed(0)
    model = spec.build_model()
    validation = shakespeare_split.private_validation

    fair = score_submission(save_weights(model), spec, validation)
    with torch.no_grad():
        model.lm_head.weight.mul_(1e4)  # confidently wrong: far worse than a uniform guess
    overconfident = score_submission(save_weights(model), spec, validation)
    pickled = score_submission(pickle.dumps({"x": 1}), spec, validation)

    assert fair.valid and fair.value == pytest.approx(8.0, abs=0.05)
    assert overconfident == Score("bits_per_char", 8.0, valid=True, parameters=overconfident.parameters)
    assert (pickled.valid, pickled.value) == (False, 8.0)

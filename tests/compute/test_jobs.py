"""Job specs in the store, unit plans, result manifests and reproducible weights files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from covey.arena.manifest import encode_dataset
from covey.compute.jobs import (
    CommandJob,
    TrainingJob,
    TrainUnit,
    canonical_weights,
    fetch_job,
    job_to_bytes,
    parse_job,
    plan_unit,
    publish_job,
    resolve_task,
    run_unit,
    weights_distance,
)
from covey.compute.sandbox import Limits, Sandbox
from covey.errors import ValidationError
from covey.ml import build_model, default_spec, load_split, load_weights

DIGEST = "ab" * 32


def test_job_specs_are_canonical_and_round_trip(store) -> None:
    job = TrainingJob(task=DIGEST, units=[TrainUnit(seed=1, lr=0.01), TrainUnit(seed=2)])
    assert job_to_bytes(job) == job_to_bytes(parse_job(job_to_bytes(job)))
    ref = publish_job(store, job)
    assert fetch_job(store, ref.digest) == job
    command = CommandJob(argv=["python", "x.py"], outputs=["o"], units=3)
    assert isinstance(parse_job(job_to_bytes(command)), CommandJob)
    assert command.unit_count == 3 and job.unit_count == 2


@pytest.mark.parametrize(
    "bad",
    [
        b"not json",
        b'{"kind": "train", "task": "xyz", "units": [{"seed": 1}]}',
        b'{"kind": "train", "task": "' + DIGEST.encode() + b'", "units": []}',
        b'{"kind": "command", "argv": [], "outputs": ["o"]}',
        b'{"kind": "shell", "argv": ["ls"]}',
        b'{"kind": "command", "argv": ["ls"], "outputs": ["o"], "units": 257}',
        b'{"kind": "command", "argv": ["ls"], "outputs": ["../../etc/passwd"]}',
    ],
)
def test_bad_job_specs_are_refused(bad: bytes) -> None:
    with pytest.raises(ValidationError, match="not a valid compute job spec"):
        parse_job(bad)


def test_canonical_weights_are_reproducible_and_loadable() -> None:
    torch.manual_seed(3)
    model = build_model("mlp", {"input_dim": 4, "hidden_sizes": [5], "num_classes": 2})
    first, second = canonical_weights(model), canonical_weights(model)
    assert first == second
    clone = load_weights(build_model("mlp", {"input_dim": 4, "hidden_sizes": [5], "num_classes": 2}), first)
    assert canonical_weights(clone) == first
    assert weights_distance(first, second) == 0.0
    with torch.no_grad():
        next(clone.parameters()).add_(0.5)
    assert weights_distance(first, canonical_weights(clone)) == pytest.approx(0.5)


def test_a_training_unit_plan_stages_the_task_and_the_unit_parameters(store) -> None:
    spec = default_spec("digits")
    task = store.put(spec.to_bytes())
    job = TrainingJob(task=task.digest, units=[TrainUnit(seed=5, max_steps=3)], architecture={"hidden_sizes": [8]})
    plan = plan_unit(store, job, 0)
    assert plan.inputs == {"task.json": task.digest}
    assert plan.outputs == ["weights.safetensors"]
    assert json.loads(plan.files["unit.json"])["unit"]["seed"] == 5
    with pytest.raises(ValidationError, match="outside the job's 1 units"):
        plan_unit(store, job, 1)


def test_an_arena_manifest_task_stages_its_public_training_data(store) -> None:
    spec = default_spec("breast_cancer")
    train = load_split("breast_cancer").public_train
    data = store.put(encode_dataset(train))
    manifest = json.dumps({"spec": spec.model_dump(mode="json"), "train_data": data.digest}).encode()
    task = store.put(manifest)
    plan = plan_unit(store, TrainingJob(task=task.digest, units=[TrainUnit(seed=0)]), 0)
    assert plan.inputs == {"task.json": task.digest, "train_data.bin": data.digest}
    resolved_spec, dataset = resolve_task(manifest, store.get(data.digest))
    assert resolved_spec == spec
    assert np.array_equal(dataset.inputs, train.inputs) and np.array_equal(dataset.targets, train.targets)


def test_a_command_unit_gets_its_index_and_a_result_manifest(store, sandbox_root) -> None:
    program = store.put(b"import sys; open('out.txt', 'w').write('unit ' + sys.argv[1])")
    job = CommandJob(argv=["python", "p.py", "{unit}"], inputs={"p.py": program.digest}, outputs=["out.txt"], units=3)
    ref = publish_job(store, job)
    sandbox = Sandbox(store, Limits(wall_clock_s=30), root=sandbox_root)

    outcome = run_unit(sandbox, job, ref.digest, 2)
    assert outcome.manifest["unit"] == 2 and outcome.manifest["exit_code"] == 0
    assert store.get(outcome.outputs["out.txt"].digest) == b"unit 2"
    assert store.get(outcome.result_digest) == outcome.manifest_bytes
    assert len(outcome.result_hash) == 32

    checked = run_unit(sandbox, job, ref.digest, 2, publish=False)
    assert checked.result_hash == outcome.result_hash
    assert run_unit(sandbox, job, ref.digest, 1, publish=False).result_hash != outcome.result_hash

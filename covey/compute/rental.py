"""Renting training from the compute market: post a training job, collect its sealed weights, and `Rental`.

`rent_training` does it in one call; `post_training` and `collect_training` are its two halves, for a caller
that must remember the job between them. `Rental` is the Arena's other training backend: a trainer node given
one (`covey arena train --rent`) rents its training here instead of training on its own machine. It fits the
Arena's `TrainingBackend` protocol with types of `covey.ml`, `covey.storage` and eth-account only, so neither
capability imports the other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount

from covey.chain import Chain, reverts
from covey.chain.deploy import Deployment
from covey.compute.client import MarketClient, UnitOutput, job_lineage, wait_for_units
from covey.compute.errors import NoBids, RentalError, SealError
from covey.compute.records import JobStatus, JobTerms
from covey.compute.resources import Resources
from covey.compute.sealing import recipient_of, sealing_key, unit_context, unseal
from covey.compute.specs import TrainingJob, TrainUnit, fetch_job, publish_job
from covey.compute.units import WEIGHTS_OUTPUT, fetch_result
from covey.errors import ChainError, ModelError, ValidationError
from covey.ml import Dataset, TaskSpec, TrainConfig, score_submission
from covey.ml.evaluate import get_metric
from covey.storage import ArtifactRef, ArtifactStore, parse_digest, sha256_hex

RENTED_JOB_NOTE = "rented_job"  # a trainer's note: the job it paid for, collected again after a restart
RENTAL_NOTE = "rental"  # a trainer's note: which job, unit and provider trained the weights it committed


@dataclass(frozen=True)
class RentedTraining:
    """What `rent_training` returns: the job, the first unit's weights, and every unit's weights.

    The weights were sealed to the buyer: `unit_weights` describes the opened plaintext (digest and size; the
    URI is empty because nobody but the buyer holds it until the buyer publishes it) and `unit_bytes` holds it.
    """

    job_id: int
    weights: bytes
    weights_ref: ArtifactRef
    unit_weights: dict[int, ArtifactRef]
    units: dict[int, UnitOutput]
    unit_bytes: dict[int, bytes]


_TRAIN_UNIT_KEYS = frozenset({"epochs", "lr", "batch_size", "max_steps", "weight_decay"})
_IGNORED_KEYS = frozenset({"num_threads"})  # units always train at one thread, so results are checkable


def rent_training(
    chain: Chain,
    deployment: Deployment,
    store: ArtifactStore,
    spec_digest: str,
    hyperparams: Mapping[str, Any],
    buyer: LocalAccount,
    *,
    seeds: Sequence[int] | None = None,
    max_price_per_unit_second: int = 100,
    seconds_per_unit: int = 60,
    needs: Resources = Resources(1, 2048, 0),
    bid_window_s: int = 10,
    heartbeat_interval_s: int = 30,
    wait_verified: bool = False,
    timeout_s: float = 900.0,
    market_address: str | None = None,
) -> RentedTraining:
    """Rent a provider to train an Arena task's model instead of training locally; return the weights.

    `spec_digest` is the task's spec hash (an Arena manifest or a bare `TaskSpec` in the store);
    `hyperparams` may hold `epochs`, `lr`, `batch_size`, `max_steps`, `weight_decay`, `seed` and
    `architecture` (None values keep the task's hints). One unit per seed (default: `hyperparams["seed"]`
    or 0). The buyer escrows `max_price_per_unit_second * units * seconds_per_unit` µUSD and gets the
    weights as soon as every unit is committed, or, with `wait_verified`, once the sample is verified.
    The weights are sealed to the buyer's key on the provider, so nobody watching the store can take (or
    commit to the Arena) what the buyer paid for. The caller (the trainer) submits the weights itself.
    `post_training` and `collect_training` are the two halves, for a caller that must remember the job between them.
    """
    client = MarketClient.from_deployment(chain, deployment, market_address)
    job_id = post_training(
        client,
        store,
        spec_digest,
        hyperparams,
        buyer,
        seeds=seeds,
        max_price_per_unit_second=max_price_per_unit_second,
        seconds_per_unit=seconds_per_unit,
        needs=needs,
        bid_window_s=bid_window_s,
        heartbeat_interval_s=heartbeat_interval_s,
    )
    return collect_training(client, store, job_id, buyer, wait_verified=wait_verified, timeout_s=timeout_s)


def post_training(
    client: MarketClient,
    store: ArtifactStore,
    spec_digest: str,
    hyperparams: Mapping[str, Any],
    buyer: LocalAccount,
    *,
    seeds: Sequence[int] | None = None,
    max_price_per_unit_second: int = 100,
    seconds_per_unit: int = 60,
    needs: Resources = Resources(1, 2048, 0),
    bid_window_s: int = 10,
    heartbeat_interval_s: int = 30,
) -> int:
    """Publish a training job (one unit per seed) and post it with escrow; return the job id.

    The job seals its weights to `buyer` (`sealed_to`): only the buyer's key opens what the provider publishes.
    A buyer whose USD balance is below the escrow gets `RentalError` and no job is posted.
    """
    params = {key: value for key, value in dict(hyperparams).items() if value is not None}
    unknown = set(params) - _TRAIN_UNIT_KEYS - _IGNORED_KEYS - {"seed", "architecture"}
    if unknown:
        raise ValidationError(f"unknown hyper-parameters {sorted(unknown)} for a rented training job")
    chosen_seeds = list(seeds) if seeds is not None else [int(params.get("seed", 0))]
    unit_params = {key: params[key] for key in _TRAIN_UNIT_KEYS if key in params}
    job_spec = TrainingJob(
        task=parse_digest(spec_digest),
        units=[TrainUnit(seed=seed, **unit_params) for seed in chosen_seeds],
        architecture=dict(params.get("architecture") or {}),
        sealed_to=recipient_of(buyer.key),
    )
    escrow = max_price_per_unit_second * job_spec.unit_count * seconds_per_unit

    def escrow_short(balance: int) -> RentalError:
        return RentalError(
            f"escrow short: {job_spec.unit_count} unit(s) x {seconds_per_unit} s at up to "
            f"{max_price_per_unit_second} µUSD/unit-s needs {escrow} µUSD escrowed, but {buyer.address} holds "
            f"{balance} µUSD; lower the max price or the units, or get USD"
        )

    if client.usd_balance(buyer.address) < escrow:
        raise escrow_short(client.usd_balance(buyer.address))
    terms = JobTerms(
        spec_hash=publish_job(store, job_spec).bytes32,
        units=job_spec.unit_count,
        max_price_per_unit_second=max_price_per_unit_second,
        seconds_per_unit=seconds_per_unit,
        needs=needs,
        bid_window_s=bid_window_s,
        heartbeat_interval_s=heartbeat_interval_s,
    )
    try:
        # Enough allowance to re-post every unit once at the same price if a provider fails.
        return client.post_job(buyer, terms, extra_allowance=terms.escrow)
    except ChainError as exc:
        if exc.reason == reverts.MARKET_ESCROW_SHORT:  # the balance moved since we looked
            raise escrow_short(client.usd_balance(buyer.address)) from exc
        raise


def collect_training(
    client: MarketClient,
    store: ArtifactStore,
    job_id: int,
    buyer: LocalAccount | None = None,
    *,
    wait_verified: bool = False,
    timeout_s: float = 900.0,
) -> RentedTraining:
    """Wait for a posted training job's units, fetch their weights (hash-checked by the store) and open them.

    Raises `NoBids` (after cancelling the job, refunding the `buyer`) when nobody bid, `ComputeTimeout`
    when the units are not in by `timeout_s` (the job stays: collect it again later), and `RentalError`
    when a unit failed on the provider (out of memory, out of time...), with the unit's own error, or when
    its weights do not open with the `buyer`'s key (the job was sealed to someone else).
    """
    spec_digest = client.job(job_id).spec_digest
    spec = fetch_job(store, spec_digest)
    units_wanted = spec.unit_count
    key = None
    if spec.sealed_to is not None:
        if buyer is None:
            raise RentalError(f"job {job_id}'s weights are sealed to its buyer: collect them with the buyer's account")
        key = sealing_key(buyer.key)
    try:
        units = wait_for_units(client, job_id, units_wanted, verified_only=wait_verified, timeout_s=timeout_s)
    except NoBids:
        unbid = job_lineage(client, job_id)[-1]
        if buyer is not None and unbid.buyer == buyer.address:
            client.cancel_job(buyer, unbid.job_id)  # the escrow comes back; nobody can ever win it
        raise
    unit_weights: dict[int, ArtifactRef] = {}
    unit_bytes: dict[int, bytes] = {}
    for index, output in sorted(units.items()):
        manifest = fetch_result(store, output.result_hash)
        digest = manifest["outputs"].get(WEIGHTS_OUTPUT)
        if manifest.get("exit_code") != 0 or digest is None:
            why = manifest.get("error") or f"exit code {manifest.get('exit_code')}, no weights"
            raise RentalError(f"job {output.job_id} unit {index} failed on provider {output.provider}: {why}")
        data = store.get(digest)  # hash-checked: what the provider committed is what the trainer gets
        if key is not None:
            try:
                data = unseal(data, key, unit_context(spec_digest, index, WEIGHTS_OUTPUT))
            except SealError as exc:
                raise RentalError(f"job {output.job_id} unit {index}: {exc}") from exc
            unit_weights[index] = ArtifactRef(sha256_hex(data), "", len(data))
        else:
            unit_weights[index] = ArtifactRef(digest, store.uri_for(digest), len(data))
        unit_bytes[index] = data
    first = min(unit_weights)
    return RentedTraining(job_id, unit_bytes[first], unit_weights[first], unit_weights, units, unit_bytes)


@dataclass(frozen=True)
class Rental:
    """Rent the training from the compute market instead of training on this machine.

    The trainer's account buys: it escrows `max_price_per_unit_second x units x seconds_per_unit` µUSD
    (the Market refunds what the winning bid does not use). Each unit trains the task's model with the
    node's hyper-parameters and its own seed; with several units the best on the public training split
    is submitted. The provider seals the weights to the trainer's key before it publishes anything, so, like
    local weights, nobody else can read them (or commit to their hash) before the trainer reveals them.
    """

    market: MarketClient
    max_price_per_unit_second: int = 100
    units: int = 1
    seconds_per_unit: int = 60
    needs: Resources = field(default_factory=lambda: Resources(1, 2048, 0))
    bid_window_s: int = 10
    heartbeat_interval_s: int = 30
    timeout_s: float = 900.0

    def train(
        self,
        spec_hash: bytes,
        spec: TaskSpec,
        data: Callable[[], Dataset],
        config: TrainConfig,
        architecture: Mapping[str, Any],
        *,
        trainer: LocalAccount,
        store: ArtifactStore,
        notes: MutableMapping[str, Any],
        log: Callable[[str], None],
    ) -> bytes:
        """Have a provider train the task's model; return the weights to commit (the Arena's `TrainingBackend`).

        The job id goes into `notes` before the wait, so a restart (or a second try after a time-out)
        collects the job already paid for instead of posting another. A `RentalError` (nobody bid, escrow
        short, a unit failed) forgets the job, so a later try posts again; a `ComputeTimeout` keeps it, since a
        timed-out job may still deliver.
        """
        try:
            job_id = int(notes.get(RENTED_JOB_NOTE, 0))
            if not job_id or self.market.job(job_id).status == JobStatus.CANCELLED:
                job_id = self._post(spec_hash, config, architecture, trainer, store, log)
                notes[RENTED_JOB_NOTE] = job_id
            else:
                log(f"collecting rented job {job_id} again")
            rented = collect_training(
                self.market, store, job_id, trainer, timeout_s=self.timeout_s, wait_verified=False
            )
        except RentalError:
            notes.pop(RENTED_JOB_NOTE, None)
            raise
        unit, weights = _best_unit(spec, data, rented)
        output = rented.units[unit]
        notes[RENTAL_NOTE] = {"job": output.job_id, "unit": unit, "provider": output.provider}
        log(
            f"rented job {job_id}: provider {output.provider[:10]} trained unit {unit} "
            f"({rented.unit_weights[unit].digest[:12]}…)"
        )
        return weights

    def _post(
        self,
        spec_hash: bytes,
        config: TrainConfig,
        architecture: Mapping[str, Any],
        trainer: LocalAccount,
        store: ArtifactStore,
        log: Callable[[str], None],
    ) -> int:
        hyperparams = {
            "epochs": config.epochs,
            "lr": config.lr,
            "batch_size": config.batch_size,
            "max_steps": config.max_steps,
            "weight_decay": config.weight_decay,
            "architecture": dict(architecture),
        }
        job_id = post_training(
            self.market,
            store,
            spec_hash.hex(),
            hyperparams,
            trainer,
            seeds=[(config.seed + offset) % 2**31 for offset in range(self.units)],
            max_price_per_unit_second=self.max_price_per_unit_second,
            seconds_per_unit=self.seconds_per_unit,
            needs=self.needs,
            bid_window_s=self.bid_window_s,
            heartbeat_interval_s=self.heartbeat_interval_s,
        )
        log(f"posted compute job {job_id}: {self.units} unit(s) at up to {self.max_price_per_unit_second} µUSD/unit-s")
        return job_id


def _best_unit(spec: TaskSpec, data: Callable[[], Dataset], rented: RentedTraining) -> tuple[int, bytes]:
    """The unit whose weights score best on the public training split (the only unit, if just one).

    No valid unit is a `ModelError`, not a `RentalError`: the job delivered, but nothing it delivered is a
    submission, and renting it again would buy the same weights.
    """
    if len(rented.unit_weights) == 1:
        return min(rented.unit_weights), rented.weights
    metric = get_metric(spec.metric)
    dataset = data()
    best: tuple[int, bytes, float] | None = None
    for unit, weights in sorted(rented.unit_bytes.items()):
        score = score_submission(weights, spec, dataset)
        if score.valid and (best is None or metric.better(score.value, best[2])):
            best = (unit, weights, score.value)
    if best is None:
        raise ModelError(f"no rented unit of job {rented.job_id} gave weights valid for the task")
    return best[0], best[1]

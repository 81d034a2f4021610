"""The compute market (DePIN): offers, jobs with escrow, sandboxed deterministic units, providers, verifiers, C2D.

A buyer publishes a job spec (`TrainingJob`, `CommandJob`) and posts it with `MarketClient.post_job`
(or rents training in one call with `rent_training`); a `ProviderAgent` (`covey provider run`) bids,
runs units in the `Sandbox` and commits result hashes; a `VerifierAgent` re-runs the sampled units.
`PrivateDataset` lets a provider sell compute next to data that never leaves it, for algorithms it approved
by code hash (`algorithm_digest`). Units run in namespace isolation where the machine allows it
(`probe_namespaces`), and a job's outputs can be sealed to its buyer (`covey.compute.sealing`).

Names load on first use (only the exceptions load at once): a training unit runs
`python -m covey.compute.training` in a fresh process, and importing the chain client there would only slow
every unit down. `Rental` is the Arena's other training backend (`covey arena train --rent`).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from covey.compute.errors import (
    ComputeError,
    ComputeTimeout,
    InconclusiveCheck,
    NoBids,
    NotApproved,
    RentalError,
    SandboxError,
    SealError,
)

_EXPORTS = {
    "MarketClient": "covey.compute.client",
    "JobTerms": "covey.compute.records",
    "Job": "covey.compute.records",
    "JobStatus": "covey.compute.records",
    "Offer": "covey.compute.records",
    "Resources": "covey.compute.resources",
    "Rental": "covey.compute.rental",
    "Verdict": "covey.compute.records",
    "RentedTraining": "covey.compute.rental",
    "collect_training": "covey.compute.rental",
    "post_training": "covey.compute.rental",
    "delivered_units": "covey.compute.client",
    "job_lineage": "covey.compute.client",
    "rent_training": "covey.compute.rental",
    "wait_for_units": "covey.compute.client",
    "TrainingJob": "covey.compute.specs",
    "TrainUnit": "covey.compute.specs",
    "CommandJob": "covey.compute.specs",
    "UnitLimits": "covey.compute.specs",
    "UnitOutcome": "covey.compute.units",
    "fetch_job": "covey.compute.specs",
    "fetch_result": "covey.compute.units",
    "publish_job": "covey.compute.specs",
    "run_unit": "covey.compute.units",
    "Isolation": "covey.compute.sandbox",
    "Limits": "covey.compute.sandbox",
    "probe_namespaces": "covey.compute.sandbox",
    "Sandbox": "covey.compute.sandbox",
    "SandboxResult": "covey.compute.sandbox",
    "Fault": "covey.compute.provider",
    "PricingRule": "covey.compute.offers",
    "ProviderAgent": "covey.compute.provider",
    "Check": "covey.compute.verifier",
    "VerifierAgent": "covey.compute.verifier",
    "Approval": "covey.compute.c2d",
    "PrivateDataset": "covey.compute.c2d",
    "algorithm_digest": "covey.compute.c2d",
    "recipient_of": "covey.compute.sealing",
    "sealing_key": "covey.compute.sealing",
    "save_private_dataset": "covey.compute.c2d",
    "stats_job": "covey.compute.c2d",
    "train_job": "covey.compute.c2d",
}

__all__ = [
    "Approval",
    "Check",
    "CommandJob",
    "ComputeError",
    "ComputeTimeout",
    "Fault",
    "InconclusiveCheck",
    "Isolation",
    "Job",
    "JobStatus",
    "JobTerms",
    "Limits",
    "MarketClient",
    "NoBids",
    "NotApproved",
    "Offer",
    "PricingRule",
    "PrivateDataset",
    "ProviderAgent",
    "Rental",
    "RentalError",
    "RentedTraining",
    "Resources",
    "Sandbox",
    "SandboxError",
    "SandboxResult",
    "SealError",
    "TrainUnit",
    "TrainingJob",
    "UnitLimits",
    "UnitOutcome",
    "Verdict",
    "VerifierAgent",
    "algorithm_digest",
    "collect_training",
    "delivered_units",
    "fetch_job",
    "fetch_result",
    "job_lineage",
    "post_training",
    "probe_namespaces",
    "publish_job",
    "recipient_of",
    "rent_training",
    "run_unit",
    "save_private_dataset",
    "sealing_key",
    "stats_job",
    "train_job",
    "wait_for_units",
]

if TYPE_CHECKING:
    from covey.compute.c2d import (
        Approval,
        PrivateDataset,
        algorithm_digest,
        save_private_dataset,
        stats_job,
        train_job,
    )
    from covey.compute.client import MarketClient, delivered_units, job_lineage, wait_for_units
    from covey.compute.offers import PricingRule
    from covey.compute.provider import Fault, ProviderAgent
    from covey.compute.records import Job, JobStatus, JobTerms, Offer, Verdict
    from covey.compute.rental import Rental, RentedTraining, collect_training, post_training, rent_training
    from covey.compute.resources import Resources
    from covey.compute.sandbox import Isolation, Limits, Sandbox, SandboxResult, probe_namespaces
    from covey.compute.sealing import recipient_of, sealing_key
    from covey.compute.specs import CommandJob, TrainingJob, TrainUnit, UnitLimits, fetch_job, publish_job
    from covey.compute.units import UnitOutcome, fetch_result, run_unit
    from covey.compute.verifier import Check, VerifierAgent


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'covey.compute' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value

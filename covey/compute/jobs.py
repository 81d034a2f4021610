"""Compute jobs, as buyers and providers use them: the specs, how a unit runs, and the training program.

The names live in `covey.compute.specs` (job specs in the store), `covey.compute.units` (one unit in the
sandbox and its result manifest) and `covey.compute.training` (the deterministic training program); this
module gathers them. `python -m covey.compute.jobs train-unit ...` still runs the training program, and
programs that import `canonical_weights` from here (approved compute-to-data algorithms are hashed by their
code) keep working.
"""

from __future__ import annotations

import sys

from covey.compute.specs import (
    MAX_JOB_SPEC_BYTES,
    MAX_UNITS,
    CommandJob,
    JobSpec,
    TrainingJob,
    TrainUnit,
    UnitLimits,
    fetch_job,
    job_to_bytes,
    parse_job,
    publish_job,
)
from covey.compute.training import (
    canonical_weights,
    decode_dataset,
    main,
    resolve_task,
    train_unit_weights,
    weights_distance,
)
from covey.compute.units import (
    MAX_MANIFEST_BYTES,
    MAX_TASK_BYTES,
    TRAIN_PROGRAM,
    WEIGHTS_OUTPUT,
    OutputFilter,
    UnitOutcome,
    UnitPlan,
    fetch_result,
    plan_unit,
    run_unit,
)

__all__ = [
    "MAX_JOB_SPEC_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_TASK_BYTES",
    "MAX_UNITS",
    "TRAIN_PROGRAM",
    "WEIGHTS_OUTPUT",
    "CommandJob",
    "JobSpec",
    "OutputFilter",
    "TrainUnit",
    "TrainingJob",
    "UnitLimits",
    "UnitOutcome",
    "UnitPlan",
    "canonical_weights",
    "decode_dataset",
    "fetch_job",
    "fetch_result",
    "job_to_bytes",
    "parse_job",
    "plan_unit",
    "publish_job",
    "resolve_task",
    "run_unit",
    "train_unit_weights",
    "weights_distance",
]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Arena: a task market where staked trainers submit models and staked validators score them on hidden data.

client = ArenaClient.from_deployment(chain, deployment)
posted = post_task(client, creator, store, home, default_spec("digits"), reward_pool=..., deadlines=...)
NodeRunner(TrainerNode(client, account, store, home)).run()     # or ValidatorNode(...)
task_report(client, posted.task_id)                               # ranks, scores, payouts, slashes
"""

from __future__ import annotations

from covey.arena.client import ArenaClient, Deadlines, Phase, Submission, TaskInfo, ValidatorRecord
from covey.arena.creator import PostedTask, post_task
from covey.arena.errors import NotReady
from covey.arena.manifest import TaskManifest, ValidationKey
from covey.arena.node import NodeRunner, RunSummary
from covey.arena.report import task_report
from covey.arena.scoring import settle, weighted_median
from covey.arena.trainer import Hyperparams, TrainerNode
from covey.arena.validator import ValidatorNode

__all__ = [
    "ArenaClient",
    "Deadlines",
    "Hyperparams",
    "NodeRunner",
    "NotReady",
    "Phase",
    "PostedTask",
    "RunSummary",
    "Submission",
    "TaskInfo",
    "TaskManifest",
    "TrainerNode",
    "ValidationKey",
    "ValidatorNode",
    "ValidatorRecord",
    "post_task",
    "settle",
    "task_report",
    "weighted_median",
]

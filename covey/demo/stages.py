"""The demo's stages in story order: the token economy, then one chapter per capability (each a module here)."""

from __future__ import annotations

from covey.demo.alliance_stage import alliance_stage
from covey.demo.arena_stage import arena_stage
from covey.demo.compute_stage import compute_stage
from covey.demo.gateway_stage import gateway_stage
from covey.demo.runner import Stage
from covey.demo.token_stage import token_stage

STAGES: list[Stage] = [
    Stage("token", "Token economy: stake, delegate, commission, slash, reward, unbond", token_stage),
    Stage("arena", "Arena: a training task with staked trainers, validators and adversaries", arena_stage),
    Stage("alliance", "Alliance: hospitals train one model, a poisoner is slashed", alliance_stage),
    Stage("gateway", "Gateway: an agent pays per request with x402 for the network's model", gateway_stage),
    Stage("compute", "Compute market: rent a provider for training, one is killed mid-job", compute_stage),
]

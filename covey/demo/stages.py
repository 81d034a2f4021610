"""The demo's stages in story order; each capability adds its own."""

from __future__ import annotations

from covey.alliance.demo_stage import alliance_stage
from covey.demo.runner import Stage
from covey.demo.token_stage import token_stage

STAGES: list[Stage] = [
    Stage("token", "Token economy: stake, delegate, commission, slash, reward, unbond", token_stage),
    Stage("alliance", "Alliance: hospitals train one model, a poisoner is slashed", alliance_stage),
]

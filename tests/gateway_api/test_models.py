"""Model discovery reads the chain and the store: the Arena is found even when no manifest names it, and only
finalised tasks with a winner become models."""

from __future__ import annotations

import dataclasses

from covey.gateway.models import find_arena, find_contract, model_id_for_task

from .conftest import COV, PHASE_S, World


def test_the_arena_is_found_in_the_manifest_or_else_among_the_staking_modules(world: World) -> None:
    assert find_arena(world.chain, world.deployment) == world.arena.address
    # A suite from before the Arena: neither its manifest nor its Registry knows one deployed onto it since.
    older = {name: address for name, address in world.deployment.contracts.items() if name not in ("Arena", "Registry")}
    older_suite = dataclasses.replace(world.deployment, contracts=older)
    assert find_contract(world.chain, older_suite, "Arena") is None

    assert find_arena(world.chain, older_suite) == world.arena.address


def test_only_finalised_tasks_with_a_winner_are_served(world: World) -> None:
    catalog = world.catalog()
    pool = 1 * COV
    world.chain.transact(world.cov.functions.approve(world.arena.address, pool), world.owner)
    now = world.chain.timestamp()
    deadlines = [now + PHASE_S * step for step in (1, 2, 3, 4)]
    spec_hash = bytes(32)  # nothing in the store: such a task could never be served anyway
    create = world.arena.functions.createTask(spec_hash, pool, *deadlines, 1, 0, 0, 1, 1)
    world.chain.transact(create, world.owner)

    served = {model.model_id for model in catalog.refresh()}

    assert model_id_for_task(world.task_id) in served
    open_task = int(world.arena.functions.taskCount().call())
    assert model_id_for_task(open_task) not in served

"""Revert reasons that callers act on, named: each is its contract's own `assert` message, word for word.

Code compares `ChainError.reason` with these constants, never with a literal. Each constant is named after its
contract (`ARENA_...` in `Arena.vy`, `MARKET_...` in `Market.vy`); tests/contracts/test_reverts.py checks that
every one still occurs in its contract's source, so a reworded revert fails there instead of silently here.
"""

from __future__ import annotations

from typing import Final

# -- Arena: a trainer's submission -----------------------------------------------------------------------

ARENA_SUBMISSIONS_CLOSED: Final = "arena: submissions closed"
ARENA_TASK_FULL: Final = "arena: task full"
ARENA_TRAINER_STAKE_TOO_LOW: Final = "arena: trainer stake too low"
ARENA_REVEAL_CLOSED: Final = "arena: reveal closed"
ARENA_BAD_REVEAL: Final = "arena: bad reveal"
ARENA_DUPLICATE_WEIGHTS: Final = "arena: duplicate weights"
ARENA_NO_SUBMISSION: Final = "arena: no submission"

# -- Arena: a validator's scores -------------------------------------------------------------------------

ARENA_SCORING_CLOSED: Final = "arena: scoring closed"
ARENA_TRAINER_CANNOT_VALIDATE: Final = "arena: trainer cannot validate"
ARENA_VALIDATORS_FULL: Final = "arena: validators full"
ARENA_VALIDATOR_STAKE_TOO_LOW: Final = "arena: validator stake too low"
ARENA_NO_VALIDATOR_STAKE: Final = "arena: no validator stake"
ARENA_SCORE_REVEAL_CLOSED: Final = "arena: score reveal closed"
ARENA_WRONG_SCORE_COUNT: Final = "arena: wrong score count"
ARENA_NOTHING_TO_SCORE: Final = "arena: nothing to score"

# -- Arena: settlement -----------------------------------------------------------------------------------

ARENA_ALREADY_FINALISED: Final = "arena: already finalised"
ARENA_NOT_FINALISABLE_YET: Final = "arena: not finalisable yet"
ARENA_NOT_FINALISED: Final = "arena: not finalised"
ARENA_NO_CONSENSUS_MODEL: Final = "arena: no consensus model"

# -- Market ----------------------------------------------------------------------------------------------

MARKET_ESCROW_SHORT: Final = "market: escrow short"
MARKET_NOT_RUNNING: Final = "market: not running"
MARKET_HEARTBEAT_MISSED: Final = "market: heartbeat missed"
MARKET_SAMPLE_BLOCK_NOT_MINED: Final = "market: sample block not mined"

"""A member's memory of its votes, one small file per member: `COVEY_HOME/alliance/members/<alliance>/<member>.json`.

A vote commitment is worthless without its salt, so the vote (accept mask, model hash, salt) is written
(atomically, fsynced) *before* the commit transaction is sent: a member killed at any point after that can
still reveal once it is back, as the Arena's nodes do (`covey.arena.state`). Until the reveal the salt is a
secret (with it anyone could read the vote early), so the file is readable by its owner only. Each vote is
kept with its round's seed (the draw's on-chain randomness): a record left by another chain at the same
addresses (a dev chain started afresh in the same data directory) never passes for this one's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from covey.errors import ValidationError
from covey.storage import atomic_writer

MAX_STATE_BYTES = 1 << 20  # a vote is ~200 bytes; a file this large was not written by us


@dataclass(frozen=True)
class VoteRecord:
    """The vote a member committed (or is about to commit) in one round."""

    round: int
    seed: bytes  # the round's on-chain seed: which chain's round this vote belongs to
    accept_mask: int
    model_hash: bytes
    salt: bytes


class MemberState:
    """One member's durable record for one alliance; every method reads or writes the file."""

    def __init__(self, data_dir: Path, alliance_address: str, alliance_id: int, member: str) -> None:
        folder = Path(data_dir) / "alliance" / "members" / f"{alliance_address.lower()}-{alliance_id}"
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        self.path = folder / f"{member.lower()}.json"

    def vote(self, round_number: int, seed: bytes) -> VoteRecord | None:
        """The vote saved for the round `round_number` with this seed, or None if there is none."""
        entry = self._load().get(str(round_number))
        if entry is None:
            return None
        try:
            record = VoteRecord(
                round_number,
                bytes.fromhex(str(entry["seed"])),
                int(str(entry["acceptMask"])),
                bytes.fromhex(str(entry["modelHash"])),
                bytes.fromhex(str(entry["salt"])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"{self.path}: the vote of round {round_number} is malformed: {exc}") from exc
        return record if record.seed == seed else None

    def save_vote(self, record: VoteRecord) -> None:
        """Write `record` to disk (fsynced) before its commitment goes on chain."""
        votes = self._load()
        votes[str(record.round)] = {
            "seed": record.seed.hex(),
            "acceptMask": record.accept_mask,
            "modelHash": record.model_hash.hex(),
            "salt": record.salt.hex(),
        }
        with atomic_writer(self.path) as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(json.dumps({"votes": votes}, indent=2, sort_keys=True).encode())

    def _load(self) -> dict[str, dict[str, object]]:
        if not self.path.exists():
            return {}
        if self.path.stat().st_size > MAX_STATE_BYTES:
            raise ValidationError(f"{self.path} is larger than {MAX_STATE_BYTES} bytes: not a member's state file")
        try:
            votes = json.loads(self.path.read_text())["votes"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValidationError(f"{self.path} is not a member's state file: {exc}") from exc
        if not isinstance(votes, dict):
            raise ValidationError(f"{self.path} is not a member's state file: 'votes' is not an object")
        return votes

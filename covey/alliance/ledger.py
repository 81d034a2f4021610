"""`ModelLedger`: the global model of every round, recomputed from the chain and the store, with no aggregator.

The model a round starts from is a pure function of public facts: the initial model (by its on-chain
hash), and for each earlier round the updates the chain accepted and the alliance's rule
(`covey.alliance.rules.next_model`; for covey_trust also `trust_reference`, the last step earlier
rounds made). Every participant replays it, and the next round's voters put its hash in their
vote, which is how the chain comes to confirm it.
"""

from __future__ import annotations

import numpy as np

from covey.alliance.canonical import FloatDtype, decode_update, encode_update, update_hash
from covey.alliance.client import AllianceClient
from covey.alliance.errors import AggregationError
from covey.alliance.rules import needs_reference, next_model, trust_reference
from covey.errors import ValidationError
from covey.storage import ArtifactStore

MODEL_DTYPE: FloatDtype = "float64"


class ModelLedger:
    """Replays and caches the global model per round of one alliance."""

    def __init__(self, client: AllianceClient, store: ArtifactStore, alliance_id: int, *, publish: bool = True) -> None:
        self.client = client
        self.store = store
        self.alliance_id = alliance_id
        self.publish = publish  # put each new global model in the store, for explorers and the gateway
        info = client.alliance(alliance_id)
        self.rule = info.aggregation_rule
        self._initial_hash = info.initial_model_hash
        self._models: dict[int, np.ndarray] = {}

    def model_for_round(self, round_number: int) -> np.ndarray:
        """The model round `round_number` starts from (float64), i.e. the one round `round_number - 1` produced.

        Needs every earlier round finalised; raises `ValidationError` otherwise, and `AggregationError`
        when an accepted update in the store is malformed (only a dishonest majority of voters could cause it).
        """
        if round_number < 1:
            raise ValidationError(f"rounds start at 1, got {round_number}")
        if 1 not in self._models:
            self._models[1] = self._fetch_vector(self._initial_hash, "the initial model")
        done = max(r for r in self._models if r <= round_number)
        model = self._models[done]
        for previous in range(done, round_number):
            if not self.client.round(self.alliance_id, previous).finalized:
                raise ValidationError(f"round {previous} of alliance {self.alliance_id} is not finalised yet")
            accepted = [
                self._fetch_vector(digest, f"accepted update {digest.hex()[:12]}", size=model.shape[0])
                for digest in self.client.accepted_updates(self.alliance_id, previous)
            ]
            # covey_trust compares the updates to the last step that moved the model: rounds before
            # `previous`, already replayed and cached here, so every voter derives the same reference.
            reference = trust_reference(self.model_for_round, previous) if needs_reference(self.rule) else None
            model = next_model(model, accepted, self.rule, reference)
            self._models[previous + 1] = model
            if self.publish and accepted:
                self.store.put(encode_update(model, MODEL_DTYPE))
        return model.copy()

    def hash_for_round(self, round_number: int) -> bytes:
        """The 32-byte hash of `model_for_round(round_number)`: what this round's voters put in their votes."""
        return update_hash(self.model_for_round(round_number), MODEL_DTYPE)

    def _fetch_vector(self, digest: bytes, what: str, size: int | None = None) -> np.ndarray:
        data = self.store.get(digest.hex(), max_bytes=self._byte_limit(size))
        vector = decode_update(data)
        if vector.ndim != 1 or (size is not None and vector.shape[0] != size):
            raise AggregationError(f"{what} has shape {vector.shape}, expected ({size},)")
        return vector.astype(np.float64)

    @staticmethod
    def _byte_limit(size: int | None) -> int | None:
        # A header plus float64 values: anything bigger is not an update of this model.
        return None if size is None else 64 + 8 * size

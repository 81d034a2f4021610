"""Accuracy of each alliance's global models, evaluated from the artifact store, off the request path.

The chain holds only hashes: the spec (`specHash`) and the model after each round (`ModelConfirmed`).
Participants publish both to the store, so the explorer can fetch them, rebuild the model from the
spec and score it on the dataset's standard hold-out split (`load_split(dataset).private_validation`,
seed 0, the split the demo's coordinator reports on). Pages only read the cache; the indexer thread
does the work (importing torch takes seconds), and what cannot be evaluated stays unscored.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from typing import Any

import numpy as np

from covey.bounds import loads_json
from covey.errors import CoveyError
from covey.storage import ArtifactStore

log = logging.getLogger("covey.explorer.model_scores")

SPEC_FORMAT = "covey-alliance-spec/1"
MAX_SPEC_BYTES = 1 << 20
MAX_MODEL_BYTES = 256 << 20
_HEADER = struct.Struct("<4sBB")  # the store's canonical update bytes: magic, item size, dimensions
_DIM = struct.Struct("<Q")
_DTYPES = {4: "<f4", 8: "<f8"}
RETRY_S = 30.0  # a model not in the store yet may be published a moment later


def decode_vector(data: bytes) -> np.ndarray:
    """The flat float vector in canonical update bytes (`CVU1`); `ValueError` if they are not such bytes."""
    if len(data) < _HEADER.size:
        raise ValueError("too short for a canonical model")
    magic, itemsize, ndim = _HEADER.unpack_from(data)
    if magic != b"CVU1" or itemsize not in _DTYPES:
        raise ValueError("not a canonical model (magic or item size)")
    start = _HEADER.size + ndim * _DIM.size
    shape = [_DIM.unpack_from(data, _HEADER.size + i * _DIM.size)[0] for i in range(ndim)]
    count = int(np.prod(shape)) if shape else 1
    if len(data) != start + count * itemsize:
        raise ValueError("canonical model length does not match its shape")
    return np.frombuffer(data, dtype=_DTYPES[itemsize], offset=start).reshape(-1)


class ModelScorer:
    """Caches accuracy per (spec hash, model hash); `request` queues, `work` evaluates."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self._scores: dict[tuple[str, str], float] = {}
        self._failed: dict[tuple[str, str], float] = {}  # key -> when evaluation last failed
        self._pending: dict[tuple[str, str], None] = {}
        self._lock = threading.Lock()

    @property
    def scored(self) -> int:
        """How many models have an accuracy (the explorer's pages refresh when it grows)."""
        return len(self._scores)

    def accuracy(self, spec_hash: str, model_hash: str) -> float | None:
        """The cached accuracy, or None (and the pair is queued) when not evaluated yet or not evaluable."""
        key = (spec_hash.lower(), model_hash.lower())
        with self._lock:
            if key in self._scores:
                return self._scores[key]
            failed_at = self._failed.get(key)
            if int(key[1], 16) != 0 and (failed_at is None or time.monotonic() - failed_at > RETRY_S):
                self._pending[key] = None
        return None

    def work(self, budget_s: float = 2.0) -> int:
        """Evaluate queued models for up to `budget_s` seconds; returns how many were scored."""
        done = 0
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    break
                key = next(iter(self._pending))
                del self._pending[key]
            value = self._evaluate(*key)
            with self._lock:
                if value is None:
                    self._failed[key] = time.monotonic()
                else:
                    self._scores[key] = value
                    done += 1
        return done

    def _evaluate(self, spec_hash: str, model_hash: str) -> float | None:
        try:
            raw_spec = self.store.get(spec_hash[2:], max_bytes=MAX_SPEC_BYTES)
            spec: dict[str, Any] = loads_json(raw_spec, max_bytes=MAX_SPEC_BYTES, what="model spec")
            if spec.get("format") != SPEC_FORMAT:
                return None
            vector = decode_vector(self.store.get(model_hash[2:], max_bytes=MAX_MODEL_BYTES))
            from covey.ml import build_model, evaluate, load_split, unflatten

            model = unflatten(build_model(str(spec["family"]), spec.get("architecture")), vector.astype(np.float32))
            return float(evaluate(model, load_split(str(spec["dataset"])).private_validation, "accuracy"))
        except (CoveyError, ValueError, KeyError, TypeError) as exc:
            # Missing from this store, or a model the explorer cannot rebuild: leave it unscored.
            log.info("cannot score model %s: %s", model_hash, exc)
            return None
        except Exception as exc:  # untrusted bytes may break torch in any way; the explorer carries on
            log.warning("scoring model %s failed: %s: %s", model_hash, type(exc).__name__, exc)
            return None

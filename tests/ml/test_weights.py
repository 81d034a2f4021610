"""Weights as safetensors: exact round trips, clear refusals of unsafe or broken files, flat vectors."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_safetensors

from covey.errors import ModelError
from covey.ml import build_model, flatten, load_weights, save_weights, unflatten
from covey.ml.weights import read_architecture, read_header
from tests.untrusted import ATTACK_DEPTH, nested_arrays

CONFIG = {"input_dim": 64, "hidden_sizes": [16], "num_classes": 10}


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", CONFIG)


def test_weights_round_trip_exactly_and_name_their_architecture() -> None:
    source, target = _model(seed=1), _model(seed=2)
    data = save_weights(source)

    load_weights(target, data, max_bytes=len(data))

    inputs = torch.rand(4, 64)
    assert torch.equal(source(inputs), target(inputs))
    assert read_architecture(data) == ("mlp", CONFIG | {"dropout": 0.0})


class _Exploit:
    """A pickle payload that would create a file if anything ever unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit(marker))

    with pytest.raises(ModelError, match="pickle"):
        load_weights(_model(), payload)
    assert not marker.exists()


def test_a_torch_save_file_is_refused() -> None:
    buffer = io.BytesIO()
    torch.save(_model().state_dict(), buffer)
    with pytest.raises(ModelError, match=r"zip archive \(torch.save"):
        load_weights(_model(), buffer.getvalue())


@pytest.mark.parametrize("cut", [4, 40, -7])
def test_a_truncated_file_is_a_model_error(cut: int) -> None:
    data = save_weights(_model())
    with pytest.raises(ModelError, match=r"not valid safetensors|only"):
        load_weights(_model(), data[:cut])


def test_a_forged_header_length_is_refused_before_allocating() -> None:
    forged = (2**62).to_bytes(8, "little") + b"{}"
    with pytest.raises(ModelError, match="header claims"):
        load_weights(_model(), forged)


def test_an_oversized_file_is_refused() -> None:
    data = save_weights(_model())
    with pytest.raises(ModelError, match="more than the limit"):
        load_weights(_model(), data, max_bytes=len(data) - 1)


def test_weights_for_another_shape_or_dtype_or_names_are_refused() -> None:
    wider = save_weights(build_model("mlp", CONFIG | {"hidden_sizes": [17]}))
    doubles = save_safetensors({name: t.double() for name, t in _model().state_dict().items()})
    renamed = save_safetensors({f"x.{name}": t for name, t in _model().state_dict().items()})

    with pytest.raises(ModelError, match="shape"):
        load_weights(_model(), wider)
    with pytest.raises(ModelError, match="dtype"):
        load_weights(_model(), doubles)
    with pytest.raises(ModelError, match=r"missing net\.0\.bias"):
        load_weights(_model(), renamed)


def test_nan_weights_are_refused_and_the_model_is_left_unchanged() -> None:
    poisoned = _model(seed=3)
    with torch.no_grad():
        poisoned.state_dict()["net.0.weight"][0, 0] = float("nan")
    target = _model(seed=4)
    before = flatten(target)

    with pytest.raises(ModelError, match="NaN"):
        load_weights(target, save_weights(poisoned))
    assert np.array_equal(flatten(target), before)


def test_metadata_that_is_not_json_is_a_model_error() -> None:
    data = save_safetensors(_model().state_dict(), metadata={"covey.family": "mlp", "covey.config": "{oops"})
    with pytest.raises(ModelError, match="not valid JSON"):
        read_architecture(data)
    header = json.dumps({"__metadata__": [1]}).encode()
    with pytest.raises(ModelError, match="not a JSON object"):
        read_architecture(len(header).to_bytes(8, "little") + header)


def with_deep_metadata(weights: bytes, depth: int = ATTACK_DEPTH) -> bytes:
    """`weights` with its safetensors `__metadata__` replaced by arrays nested `depth` deep (tensors intact)."""
    length = int.from_bytes(weights[:8], "little")
    header = json.loads(weights[8 : 8 + length])
    header["__metadata__"] = "DEEP"
    text = json.dumps(header).encode().replace(b'"DEEP"', nested_arrays(depth))
    return len(text).to_bytes(8, "little") + text + weights[8 + length :]


def test_a_header_nested_100000_deep_is_refused_before_it_is_parsed() -> None:
    deep = with_deep_metadata(save_weights(_model()))

    for read in (read_header, read_architecture, lambda data: load_weights(_model(), data)):
        with pytest.raises(ModelError, match="its header nests more than 8 levels deep"):
            read(deep)


def test_a_config_nested_too_deep_is_refused() -> None:
    config = '{"hidden_sizes": ' + "[" * 1000 + "]" * 1000 + "}"
    data = save_safetensors(_model().state_dict(), metadata={"covey.family": "mlp", "covey.config": config})

    with pytest.raises(ModelError, match=r"covey\.config nests more than 8 levels deep"):
        read_architecture(data)


def test_flatten_and_unflatten_move_a_model_through_a_numpy_vector() -> None:
    source, target = _model(seed=5), _model(seed=6)
    vector = flatten(source)

    unflatten(target, vector)

    assert vector.dtype == np.float32 and vector.shape == (64 * 16 + 16 + 16 * 10 + 10,)
    assert np.array_equal(flatten(target), vector)
    assert torch.equal(source(torch.ones(1, 64)), target(torch.ones(1, 64)))
    with pytest.raises(ModelError, match="has 1210 numbers"):
        unflatten(target, vector[:-1])
    with pytest.raises(ModelError, match="numbers"):
        unflatten(target, np.array(["a"] * len(vector)))

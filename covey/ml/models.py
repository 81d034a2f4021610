"""The model families tasks can name: an MLP, a small CNN and a nanoGPT-style character GPT.

Each family is a `@dataclass` config plus an `nn.Module`; `build_model(family, config)` makes
one from a plain dict (as found in a task spec or a weights file's metadata).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from covey.errors import ModelError

# ---------------------------------------------------------------------------- MLP


@dataclass
class MLPConfig:
    input_dim: int = 64
    hidden_sizes: tuple[int, ...] = (128,)
    num_classes: int = 10
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.hidden_sizes = _int_tuple("hidden_sizes", self.hidden_sizes)
        _positive_ints(self, "input_dim", "num_classes")
        _probability("dropout", self.dropout)


class MLP(nn.Module):
    """Flattens its input, then Linear -> ReLU -> Dropout per hidden layer, then a linear head."""

    family = "mlp"

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = config.input_dim
        for hidden in config.hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(config.dropout)]
            width = hidden
        layers.append(nn.Linear(width, config.num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


# ---------------------------------------------------------------------------- CNN


@dataclass
class CNNConfig:
    in_channels: int = 1
    image_size: int = 8
    channels: tuple[int, ...] = (16, 32)
    num_classes: int = 10
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.channels = _int_tuple("channels", self.channels, allow_empty=False)
        _positive_ints(self, "in_channels", "image_size", "num_classes")
        _probability("dropout", self.dropout)
        if self.image_size >> len(self.channels) < 1:
            raise ModelError(
                f"a {self.image_size}px image cannot be halved {len(self.channels)} times; use fewer conv blocks"
            )


class ConvBlock(nn.Module):
    """3x3 convolution, ReLU, then 2x2 max-pooling (halves the image)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.conv(x)), 2)


class CNN(nn.Module):
    """A stack of `ConvBlock`s and a linear head over the flattened feature map."""

    family = "cnn"

    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.config = config
        widths = (config.in_channels, *config.channels)
        self.blocks = nn.Sequential(*(ConvBlock(a, b) for a, b in itertools.pairwise(widths)))
        side = config.image_size >> len(config.channels)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.channels[-1] * side * side, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.blocks(x).flatten(1)
        return self.head(self.dropout(features))


# ---------------------------------------------------------------------------- CharGPT (after nanoGPT)


@dataclass
class GPTConfig:
    block_size: int = 64
    vocab_size: int = 256
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self) -> None:
        _positive_ints(self, "block_size", "vocab_size", "n_layer", "n_head", "n_embd")
        _probability("dropout", self.dropout)
        if not isinstance(self.bias, bool):
            raise ModelError(f"bias must be true or false, got {self.bias!r}")
        if self.n_embd % self.n_head:
            raise ModelError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class FeedForward(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = FeedForward(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class CharGPT(nn.Module):
    """A GPT over byte tokens: `forward(idx (B, T)) -> logits (B, T, vocab_size)`.

    Unlike nanoGPT, the output head is not tied to the token embedding: untied
    weights map one-to-one onto safetensors entries, which keeps submissions simple.
    """

    family = "char_gpt"

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        # GPT-2's scaled init of residual projections keeps the residual stream's variance flat with depth.
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        seq_len = idx.size(1)
        if seq_len > self.config.block_size:
            raise ModelError(f"a sequence of {seq_len} tokens is longer than block_size {self.config.block_size}")
        pos = torch.arange(seq_len, dtype=torch.long, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Extend `idx (B, T)` by `max_new_tokens` sampled tokens, feeding back the last `block_size`."""
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.block_size :]
            logits = self(context)[:, -1, :] / max(temperature, 1e-6)
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                logits[logits < kth] = -float("inf")
            next_token = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=generator)
            idx = torch.cat((idx, next_token), dim=1)
        return idx


# ---------------------------------------------------------------------------- registry

MODEL_FAMILIES: dict[str, tuple[type[Any], type[nn.Module]]] = {
    "mlp": (MLPConfig, MLP),
    "cnn": (CNNConfig, CNN),
    "char_gpt": (GPTConfig, CharGPT),
}

# Config fields fixed by the dataset: a submission may resize a model but not change its inputs or outputs.
DATA_BOUND_FIELDS: dict[str, tuple[str, ...]] = {
    "mlp": ("input_dim", "num_classes"),
    "cnn": ("in_channels", "image_size", "num_classes"),
    "char_gpt": ("vocab_size",),
}


def make_config(family: str, config: Mapping[str, Any] | None = None) -> Any:
    """The family's config dataclass from a plain dict; `ModelError` names any bad field."""
    if family not in MODEL_FAMILIES:
        raise ModelError(f"unknown model family {family!r}; choose one of {', '.join(MODEL_FAMILIES)}")
    config_class, _ = MODEL_FAMILIES[family]
    values = dict(config or {})
    known = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ModelError(f"{family} config has unknown fields {unknown}; known fields are {sorted(known)}")
    return config_class(**values)


def build_model(family: str, config: Mapping[str, Any] | None = None) -> nn.Module:
    """A freshly initialised model of `family` (`mlp`, `cnn`, `char_gpt`) from a config dict."""
    typed_config = make_config(family, config)
    _, model_class = MODEL_FAMILIES[family]
    return model_class(typed_config)


def config_dict(model: nn.Module) -> dict[str, Any]:
    """A model's config as a JSON-ready dict (the inverse of `build_model`'s `config`)."""
    config = getattr(model, "config", None)
    if config is None or isinstance(config, type) or not dataclasses.is_dataclass(config):
        raise ModelError(f"{type(model).__name__} has no dataclass config; build it with build_model")
    return {
        field.name: list(value) if isinstance(value := getattr(config, field.name), tuple) else value
        for field in dataclasses.fields(config)
    }


def family_of(model: nn.Module) -> str:
    """The registry name of a model's family."""
    family = getattr(model, "family", None)
    if family not in MODEL_FAMILIES:
        raise ModelError(f"{type(model).__name__} is not one of the model families {list(MODEL_FAMILIES)}")
    return str(family)


def parameter_count(model: nn.Module) -> int:
    """How many numbers the model's parameters hold."""
    return sum(param.numel() for param in model.parameters())


def _int_tuple(name: str, value: Any, allow_empty: bool = True) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise ModelError(f"{name} must be a list of positive integers, got {value!r}")
    items = tuple(value)
    if not allow_empty and not items:
        raise ModelError(f"{name} must not be empty")
    if not all(isinstance(item, int) and not isinstance(item, bool) and item > 0 for item in items):
        raise ModelError(f"{name} must be a list of positive integers, got {value!r}")
    return items


def _positive_ints(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ModelError(f"{name} must be a positive integer, got {value!r}")


def _probability(name: str, value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ModelError(f"{name} must be a number in [0, 1), got {value!r}")

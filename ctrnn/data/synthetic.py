"""Synthetic tasks: long-memory benchmarks (the adding problem, the copy task), irregularly
sampled spirals, and the 2-D classification sets of the Hamiltonian deep networks paper.

Every generator is seeded: the same arguments give the same data.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._dataset import TimeSeriesDataset

__all__ = [
    "COPY_CLASSES",
    "PLANAR_SETS",
    "adding_problem",
    "copy_task",
    "double_circles",
    "double_moons",
    "planar_dataset",
    "spirals",
    "swiss_roll",
]


def _check_int(owner: str, name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{owner}: {name} must be an integer ≥ {low}, got {value!r}")
    return int(value)


def _check_noise(owner: str, noise) -> float:
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ValueError(f"{owner}: noise must be a number ≥ 0, got {noise!r}")
    return float(noise)


def adding_problem(n: int = 1000, length: int = 100, *, seed: int = 0) -> TimeSeriesDataset:
    """The adding problem (Hochreiter & Schmidhuber 1997, in the form of Le, Jaitly & Hinton
    2015): a regression task.

    Each series has ``length`` steps and 2 channels: channel 0 holds values drawn uniformly
    from ``[0, 1]``, channel 1 is a marker that is 1 at exactly two steps, one in the first
    half and one in the second half, and 0 elsewhere. The target is the sum of the two marked
    values (a float in ``[0, 2]``; ``task == "regression"``, ``num_classes`` None). Always
    predicting 1 gives a mean squared error of about 0.167, the level a model without memory
    reaches.
    """
    owner = "adding_problem"
    n = _check_int(owner, "n", n, 1)
    length = _check_int(owner, "length", length, 2)
    rng = np.random.default_rng(_check_int(owner, "seed", seed, 0))
    values = rng.uniform(0.0, 1.0, size=(n, length))
    half = length // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, length, size=n)
    marker = np.zeros((n, length))
    rows = np.arange(n)
    marker[rows, first] = 1.0
    marker[rows, second] = 1.0
    target = values[rows, first] + values[rows, second]
    x = np.stack([values, marker], axis=2).astype(np.float32)
    return TimeSeriesDataset(x, target.astype(np.float32), name="adding")


#: class names of the copy task's per-step targets: the 8 symbols, then the blank
COPY_CLASSES = (*(str(i) for i in range(8)), "blank")


def copy_task(
    n: int = 1000, delay: int = 100, *, memorize: int = 10, seed: int = 0
) -> TimeSeriesDataset:
    """The copy task in the formulation of Arjovsky, Shah & Bengio (2016): a per-step
    classification (``task == "sequence"``).

    There are 10 input categories: the symbols ``0 … 7``, the blank ``8`` and the delimiter
    ``9``, each series one-hot encoded, ``(delay + 2 · memorize, 10)``. The first ``memorize``
    steps hold symbols drawn uniformly from ``0 … 7``, then come ``delay − 1`` blanks, the
    delimiter, and ``memorize`` blanks. The target at each step is a class of
    :data:`COPY_CLASSES` (index 8 is the blank): the blank for the first ``delay + memorize``
    steps, then the memorised symbols in order. A model without memory reaches a
    cross-entropy of ``memorize · log 8 / (delay + 2 · memorize)`` per step.
    """
    owner = "copy_task"
    n = _check_int(owner, "n", n, 1)
    delay = _check_int(owner, "delay", delay, 1)
    memorize = _check_int(owner, "memorize", memorize, 1)
    rng = np.random.default_rng(_check_int(owner, "seed", seed, 0))
    L = delay + 2 * memorize
    symbols = rng.integers(0, 8, size=(n, memorize))
    inputs = np.full((n, L), 8)
    inputs[:, :memorize] = symbols
    inputs[:, delay + memorize - 1] = 9
    targets = np.full((n, L), 8)
    targets[:, delay + memorize :] = symbols
    x = np.eye(10, dtype=np.float32)[inputs]
    return TimeSeriesDataset(x, targets.astype(np.int64), classes=COPY_CLASSES, name="copy")


def spirals(
    n: int = 1000,
    *,
    min_length: int = 20,
    max_length: int = 60,
    duration: float = 10.0,
    noise: float = 0.02,
    seed: int = 0,
) -> TimeSeriesDataset:
    """Irregularly sampled 2-D spirals; class 0 turns counter-clockwise, class 1 clockwise.

    Series ``i`` has ``T_i`` points (uniform in ``[min_length, max_length]``) at its own
    random times: gaps drawn uniformly from ``[0.1, 1.9] · duration / T_i``, starting at 0,
    so the spacing varies by a factor up to 19 within a series. The point at time ``t`` is
    ``r(t) (cos θ(t), sin θ(t))`` with ``r(t) = r_0 + (1 − r_0) t / duration`` (``r_0``
    uniform in ``[0.1, 0.3]``) and ``θ(t) = φ ± ω t`` (phase ``φ`` uniform, angular speed
    ``ω`` uniform in ``[0.5, 1.5]``), plus Gaussian noise of standard deviation ``noise``.
    The classes alternate (``labels = i mod 2``), so they are balanced.
    """
    owner = "spirals"
    n = _check_int(owner, "n", n, 2)
    min_length = _check_int(owner, "min_length", min_length, 2)
    max_length = _check_int(owner, "max_length", max_length, min_length)
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration <= 0:
        raise ValueError(f"{owner}: duration must be a positive number, got {duration!r}")
    noise = _check_noise(owner, noise)
    rng = np.random.default_rng(_check_int(owner, "seed", seed, 0))
    labels = np.arange(n) % 2
    values, times = [], []
    for label in labels:
        T = int(rng.integers(min_length, max_length + 1))
        gaps = rng.uniform(0.1, 1.9, size=T - 1) * duration / T
        t = np.concatenate([[0.0], np.cumsum(gaps)])
        r0 = rng.uniform(0.1, 0.3)
        omega = rng.uniform(0.5, 1.5)
        phi = rng.uniform(0.0, 2 * math.pi)
        r = r0 + (1 - r0) * t / duration
        theta = phi + (1 if label == 0 else -1) * omega * t
        xy = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
        xy = xy + noise * rng.standard_normal(xy.shape)
        values.append(xy.astype(np.float32))
        times.append(t.astype(np.float32))
    return TimeSeriesDataset(
        values, labels, times, classes=("counter-clockwise", "clockwise"), name="spirals"
    )


# -- the 2-D data sets of the Hamiltonian deep networks paper (Galimberti et al.) ------------


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _check_n(owner: str, n) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"{owner}: n must be an integer ≥ 2, got {n!r}")


def swiss_roll(n: int = 1000, noise: float = 0.0, seed: int = 0):
    """Two interleaved spirals (the paper's "swiss roll"), one class each.

    Returns ``points (n, 2)`` float32 in about ``[-1, 1]²`` and ``labels (n,)`` int64 in
    ``{0, 1}``; ``noise`` is the standard deviation of added Gaussian noise. A synthetic
    generator written from the paper's description, not the authors' data file.
    """
    _check_n("swiss_roll", n)
    g = _generator(seed)
    labels = torch.arange(n) % 2
    r = torch.rand(n, generator=g) * 0.9 + 0.1  # radius grows along the arm
    angle = 3 * math.pi * r + math.pi * labels
    points = torch.stack([r * torch.cos(angle), r * torch.sin(angle)], dim=1)
    points = points + noise * torch.randn(n, 2, generator=g)
    return points.float(), labels.long()


def double_circles(n: int = 1000, noise: float = 0.0, seed: int = 0):
    """Two concentric circles, radius 0.5 (class 0) and 1 (class 1). See :func:`swiss_roll`."""
    _check_n("double_circles", n)
    g = _generator(seed)
    labels = torch.arange(n) % 2
    angle = 2 * math.pi * torch.rand(n, generator=g)
    r = 0.5 + 0.5 * labels
    points = torch.stack([r * torch.cos(angle), r * torch.sin(angle)], dim=1)
    points = points + noise * torch.randn(n, 2, generator=g)
    return points.float(), labels.long()


def double_moons(n: int = 1000, noise: float = 0.0, seed: int = 0):
    """Two interleaved half circles ("moons"), one class each. See :func:`swiss_roll`."""
    _check_n("double_moons", n)
    g = _generator(seed)
    labels = torch.arange(n) % 2
    angle = math.pi * torch.rand(n, generator=g)
    upper = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    lower = torch.stack([1 - torch.cos(angle), 0.5 - torch.sin(angle)], dim=1)
    points = torch.where(labels[:, None] == 0, upper, lower) - torch.tensor([0.5, 0.25])
    points = points + noise * torch.randn(n, 2, generator=g)
    return points.float(), labels.long()


#: the 2-D sets by name
PLANAR_SETS = {
    "swiss_roll": swiss_roll,
    "double_circles": double_circles,
    "double_moons": double_moons,
}


def planar_dataset(
    kind: str, n: int = 1000, *, noise: float = 0.0, seed: int = 0, steps: int = 1
) -> TimeSeriesDataset:
    """One of the 2-D sets (``"swiss_roll"``, ``"double_circles"``, ``"double_moons"``) as a
    :class:`TimeSeriesDataset`: each point is a series of ``steps`` equal observations of its 2
    coordinates at times ``0, 1, …, steps − 1`` (a constant input that a recurrent model
    reads for ``steps`` steps; the depth of the paper's networks plays this role)."""
    if kind not in PLANAR_SETS:
        raise ValueError(f"planar_dataset: unknown set {kind!r}; valid: {', '.join(PLANAR_SETS)}")
    steps = _check_int("planar_dataset", "steps", steps, 1)
    points, labels = PLANAR_SETS[kind](n, noise=_check_noise("planar_dataset", noise), seed=seed)
    values = points[:, None, :].expand(-1, steps, -1).contiguous()
    return TimeSeriesDataset(values, labels, name=kind)

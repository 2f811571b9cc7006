"""Lyapunov spectra by the QR (Benettin) method, for maps, flows, cells and continuous models.

Benettin, Galgani, Giorgilli & Strelcyn, *Lyapunov characteristic exponents for smooth
dynamical systems and for Hamiltonian systems*, Meccanica 15 (1980); the QR form as in
Eckmann & Ruelle, Rev. Mod. Phys. 57 (1985). A frame ``Q`` of ``k`` orthonormal tangent
vectors is pushed through the Jacobian of each step, ``J Q = Q' R``; the averages of
``log |R_ii|`` converge to the ``k`` largest exponents.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import solvers
from ctrnn.models import AbstractContinuousRNN, PathDrivenModel

from ._autodiff import expand_rows, push_frame
from ._autodiff import jacobian as full_jacobian
from ._noise import draw_noise, noisy_step
from ._targets import as_sequence, resolve_cell, resolve_continuous

__all__ = ["CellMap", "FlowMap", "LyapunovResult", "cell_map", "flow_map", "lyapunov_spectrum"]

_JACOBIAN_MODES = ("auto", "forward", "reverse")
# Measured on CPU (GRU cell, batch 8): reverse mode's cost grows with d, forward mode's with
# k but after a fixed overhead of a few ms per step; they cross near d = 64.
_FORWARD_FROM = 64


@dataclass(frozen=True)
class LyapunovResult:
    """The spectrum and how well it has converged (``return_history=True``).

    Attributes:
        exponents: ``(batch, k)``, largest first; per step for a map, per unit time for a
            flow (``dt`` given, or a :class:`FlowMap`).
        stderr: ``(batch, k)``, the standard error of the estimate from ``blocks`` consecutive
            blocks of the run: ``std(block estimates) / sqrt(blocks)`` (NaN for one block).
        block_exponents: ``(blocks, batch, k)``, the estimate from each block alone.
        history: ``(records, batch, k)``, the running estimate after ``history_steps`` steps.
        history_steps: ``(records,)``, steps counted after the transient.
        steps, transient: as passed.
        per: ``"step"`` or ``"time"``, the unit of the exponents.
    """

    exponents: torch.Tensor
    stderr: torch.Tensor
    block_exponents: torch.Tensor
    history: torch.Tensor
    history_steps: torch.Tensor
    steps: int
    transient: int
    per: str


def _count(owner: str, name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer ≥ {minimum}, got {value!r}")
    return value


def lyapunov_spectrum(
    f: Callable[..., torch.Tensor],
    x0: torch.Tensor,
    steps: int,
    *,
    dt: float | None = None,
    transient: int = 0,
    k: int | None = None,
    method: str = "rk4",
    jacobian: str = "auto",
    blocks: int = 10,
    seed: int = 0,
    return_history: bool = False,
) -> torch.Tensor | LyapunovResult:
    """The ``k`` largest Lyapunov exponents of a map or a flow, for a batch of initial states.

    Args:
        f: the system. Without ``dt``, a map: ``f(x)`` sends states ``(batch, d)`` to the next
            states. With ``dt``, a vector field: ``dx/dt = f(x)``, integrated with ``method``.
            When ``f.time_dependent`` is true (as for :func:`cell_map` and :func:`flow_map`),
            it is called ``f(n, x)`` for a map (``n`` the step index, from 0 at the start of
            the transient) and ``f(t, x)`` for a flow (``t`` a ``(batch,)`` tensor). ``f`` must
            treat the rows of its batch independently: the Jacobian is taken on copies of the
            rows, so randomness inside ``f`` must be given to it as data (as :func:`cell_map`
            does for the noise-injected RNN).
        x0: initial states ``(batch, d)`` or ``(d,)``. Work in float64 for accurate exponents.
        steps: steps averaged over, after the transient.
        dt: the time step of a flow; ``None`` for a map.
        transient: steps taken first (state and frame) and not averaged.
        k: how many exponents (default ``d``).
        method: a fixed-step explicit Runge–Kutta method of :func:`solvers.methods`, for flows.
            The Jacobian of one step of the method is the same method applied to the
            variational equation, so the frame follows the tangent flow to the method's order.
        jacobian: ``"reverse"`` builds each step's whole Jacobian ``(d, d)`` in one
            backward pass; ``"forward"`` pushes the ``k`` frame columns with
            ``torch.func.jvp`` (cost ∝ ``k`` after a fixed overhead); ``"auto"``: forward for
            ``d ≥ 64``, reverse below (where it was measured faster on a CPU, whatever ``k``).
        blocks: the run is cut into this many blocks for the standard error (at most
            ``steps``).
        seed: seed of the random initial frame.
        return_history: return a :class:`LyapunovResult` (running estimates, standard errors)
            instead of the exponents alone.

    Returns:
        The exponents ``(batch, k)``, largest first (``(k,)`` for an unbatched ``x0``), per
            step for a map and per unit time for a flow (for a :class:`FlowMap`, per unit of
            the observation times); or a :class:`LyapunovResult`.

    Raises:
        ValueError: on a bad argument, a map that changes the state's shape, an input
            sequence shorter than ``transient + steps``, or a trajectory that leaves the
            finite numbers.
    """
    owner = "lyapunov_spectrum"
    if not callable(f):
        raise TypeError(f"{owner}: f must be callable, got {type(f).__name__}")
    if not isinstance(x0, torch.Tensor) or not x0.is_floating_point():
        raise TypeError(f"{owner}: x0 must be a floating-point tensor (batch, d), got {x0!r}")
    unbatched = x0.dim() == 1
    x = x0.unsqueeze(0) if unbatched else x0
    if x.dim() != 2:
        raise ValueError(f"{owner}: x0 must have shape (batch, d) or (d,), got {tuple(x0.shape)}")
    B, d = x.shape
    steps = _count(owner, "steps", steps, 1)
    transient = _count(owner, "transient", transient, 0)
    k = d if k is None else k
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d:
        raise ValueError(f"{owner}: k must be an integer in [1, d = {d}], got {k!r}")
    blocks = min(_count(owner, "blocks", blocks, 1), steps)
    if jacobian not in _JACOBIAN_MODES:
        raise ValueError(
            f"{owner}: jacobian must be one of {', '.join(_JACOBIAN_MODES)}, got {jacobian!r}"
        )
    if jacobian == "auto":
        jacobian = "forward" if d >= _FORWARD_FROM else "reverse"
    time_dependent = bool(getattr(f, "time_dependent", False))
    durations = getattr(f, "durations", None)
    available = getattr(f, "num_steps", None)
    if available is not None and transient + steps > available:
        raise ValueError(
            f"{owner}: the driving sequence gives {available} steps but transient + steps = "
            f"{transient + steps}; pass a longer input sequence or fewer steps"
        )
    if dt is not None:
        if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not dt > 0:
            raise ValueError(f"{owner}: dt must be a positive number, got {dt!r}")
        if durations is not None:
            raise ValueError(
                f"{owner}: {type(f).__name__} is already the flow over each observation "
                "interval (a map); call it without dt"
            )
        rk = solvers.methods().get(method)
        if not isinstance(rk, solvers.ExplicitRungeKutta) or rk.adaptive:
            fixed = [
                n
                for n, m in solvers.methods().items()
                if isinstance(m, solvers.ExplicitRungeKutta) and not m.adaptive
            ]
            raise ValueError(
                f"{owner}: method must be a fixed-step explicit Runge–Kutta method "
                f"({', '.join(fixed)}), got {method!r}"
            )

    def advance(n: int, state: torch.Tensor) -> torch.Tensor:
        if dt is None:
            return f(n, state) if time_dependent else f(state)
        t = torch.full((state.shape[0],), n * float(dt), dtype=state.dtype, device=state.device)
        field = (lambda t, y: f(t, y)) if time_dependent else (lambda t, y: f(y))
        return rk.step_fn(field, t, state, float(dt))

    generator = torch.Generator().manual_seed(seed)
    frame = torch.linalg.qr(torch.randn(d, k, generator=generator, dtype=torch.float64))[0]
    Q = frame.to(dtype=x.dtype, device=x.device).expand(B, d, k).contiguous()
    x = x.detach()
    tiny = torch.finfo(x.dtype).tiny
    block_len = steps // blocks
    block_logs = x.new_zeros(blocks, B, k)
    block_time = x.new_zeros(blocks, B)
    running, elapsed = x.new_zeros(B, k), x.new_zeros(B)
    record_every = max(1, steps // 200)
    history, history_steps = [], []
    for n in range(transient + steps):
        step_map = _StepAt(advance, n)
        if jacobian == "reverse":
            y, J = full_jacobian(step_map, x, owner)
            pushed = J @ Q
        else:
            y, pushed = push_frame(step_map, x, Q, owner)
        Q, R = torch.linalg.qr(pushed)
        x = y
        s = n - transient
        if s < 0:
            continue
        logs = R.diagonal(dim1=1, dim2=2).abs().clamp_min(tiny).log()
        if dt is not None:
            duration = x.new_full((B,), float(dt))
        elif durations is not None:
            duration = expand_rows(durations[:, n], B, owner).to(x)
        else:
            duration = x.new_ones(B)
        running += logs
        elapsed += duration
        b = min(s // block_len, blocks - 1)
        block_logs[b] += logs
        block_time[b] += duration
        if (s + 1) % record_every == 0 or s == steps - 1:
            history.append(running / elapsed[:, None])
            history_steps.append(s + 1)
        if s == steps - 1 or (s + 1) % block_len == 0:
            _check_finite(x, running, n, owner)
    exponents = running / elapsed[:, None]
    per_block = block_logs / block_time[:, :, None]
    stderr = (
        per_block.std(dim=0) / math.sqrt(blocks)
        if blocks > 1
        else torch.full_like(exponents, float("nan"))
    )
    order = exponents.argsort(dim=1, descending=True)
    exponents = exponents.gather(1, order)
    if not return_history:
        return exponents[0] if unbatched else exponents
    take = order.expand(len(history), B, k)
    result = LyapunovResult(
        exponents=exponents,
        stderr=stderr.gather(1, order),
        block_exponents=per_block.gather(2, order.expand(blocks, B, k)),
        history=torch.stack(history).gather(2, take),
        history_steps=torch.tensor(history_steps),
        steps=steps,
        transient=transient,
        per="step" if dt is None and durations is None else "time",
    )
    if unbatched:
        result = LyapunovResult(
            result.exponents[0],
            result.stderr[0],
            result.block_exponents[:, 0],
            result.history[:, 0],
            result.history_steps,
            steps,
            transient,
            result.per,
        )
    return result


class _StepAt:
    # the step map at index n as a one-argument function (for jacobian / push_frame)
    def __init__(self, advance, n):
        self.advance, self.n = advance, n

    def __call__(self, state):
        return self.advance(self.n, state)


def _check_finite(x: torch.Tensor, running: torch.Tensor, n: int, owner: str) -> None:
    bad = ~(torch.isfinite(x).all(dim=1) & torch.isfinite(running).all(dim=1))
    if bad.any():
        samples = bad.nonzero()[:, 0].tolist()
        raise ValueError(
            f"{owner}: the trajectory left the finite numbers by step {n + 1} (samples "
            f"{samples}); the system diverges from these initial states, or dt is too large "
            "for the method"
        )


class CellMap:
    """A discrete cell driven by an input sequence, as the map ``h_{n+1} = cell(x_n, h_n)``.

    Built by :func:`cell_map`. Called ``f(n, h)``; ``num_steps`` is the sequence length.
    The state is the cell's whole state (``cell.state_size``): for a τ-GRU cell that is the
    delay buffer ``[h_n, …, h_{n-m}]`` as well, so the spectrum is that of the
    finite-dimensional map the cell iterates.
    """

    time_dependent = True

    def __init__(self, cell, inputs: torch.Tensor, noise: dict | None = None):
        self.cell, self.inputs, self.noise = cell, inputs, noise
        self.num_steps = inputs.shape[1]

    def __call__(self, n: int, h: torch.Tensor) -> torch.Tensor:
        owner = "cell_map"
        x = expand_rows(self.inputs[:, n], h.shape[0], owner).to(h.dtype)
        if self.noise is None:
            return self.cell(x, h)
        draws = {key: expand_rows(v[:, n], h.shape[0], owner) for key, v in self.noise.items()}
        return noisy_step(self.cell, x, h, draws)


def cell_map(model: nn.Module, inputs: torch.Tensor, *, noise_seed: int = 0) -> CellMap:
    """The map of a discrete cell driven by ``inputs``, for :func:`lyapunov_spectrum`.

    Args:
        model: a cell (:class:`~ctrnn.models.AbstractCell`) or a discrete-mode
            :class:`~ctrnn.models.SequenceModel`.
        inputs: ``(batch, T, input_size)`` or ``(T, input_size)`` (shared by every initial
            state); step ``n`` reads ``inputs[:, n]``.
        noise_seed: for the noise-injected RNN's cells in training mode, the seed of the
            noise drawn once per step and sample before the run (the map must be the same
            function for every tangent vector).

    The initial states ``x0`` are ``(batch, cell.state_size)``; ``torch.zeros`` is the
    library's usual start.
    """
    cell = resolve_cell(model, "cell_map")
    inputs = as_sequence(inputs, "cell_map")
    if inputs.shape[2] != cell.input_size:
        raise ValueError(
            f"cell_map: {type(cell).__name__} reads {cell.input_size} input features, got "
            f"inputs of shape {tuple(inputs.shape)}"
        )
    return CellMap(cell, inputs, draw_noise(cell, inputs, noise_seed))


class FlowMap:
    """A continuous model's flow over each observation interval, as a map.

    Built by :func:`flow_map`. Step ``n`` solves the model from ``times[n]`` to
    ``times[n+1]`` with the input held at ``inputs[:, n]``; ``durations`` (``(batch, T-1)``)
    are the interval lengths, so :func:`lyapunov_spectrum` reports exponents per unit time.
    """

    time_dependent = True

    def __init__(self, model: AbstractContinuousRNN, inputs, times, solver_options: dict):
        self.model, self.inputs, self.times = model, inputs, times
        self.solver_options = solver_options
        self.num_steps = times.shape[1] - 1
        self.durations = times.diff(dim=1)

    def __call__(self, n: int, h: torch.Tensor) -> torch.Tensor:
        rows = h.shape[0]
        x = expand_rows(self.inputs[:, n : n + 1], rows, "flow_map").to(h.dtype)
        t = expand_rows(self.times[:, n : n + 2], rows, "flow_map").to(h.dtype)
        return self.model.solve(x.expand(-1, 2, -1), t, h0=h, **self.solver_options)[:, -1]


class PathFlowMap:
    """A path-driven model's flow (its ``cde`` driven by the path of ``inputs``) over each
    observation interval, as a map. Built by :func:`flow_map`; like :class:`FlowMap` it
    reports exponents per unit time. The path of each row count that the Lyapunov run asks
    for is built once."""

    time_dependent = True

    def __init__(self, model: PathDrivenModel, inputs, times, mask, solver_options: dict):
        self.model, self.inputs, self.mask = model, inputs, mask
        self.solver_options = solver_options
        path, t, _ = model.path(inputs, times, mask)
        self._times = times
        self.times = t if t.dim() == 2 else t[None]
        self.num_steps = self.times.shape[1] - 1
        self.durations = self.times.diff(dim=1)
        self._paths = {inputs.shape[0]: path}

    def _path(self, rows: int):
        if rows not in self._paths:
            rep = lambda v: None if v is None else expand_rows(v, rows, "flow_map")  # noqa: E731
            times = (
                self._times if self._times is None or self._times.dim() == 1 else rep(self._times)
            )
            self._paths[rows] = self.model.path(rep(self.inputs), times, rep(self.mask))[0]
        return self._paths[rows]

    def __call__(self, n: int, h: torch.Tensor) -> torch.Tensor:
        rows = h.shape[0]
        t = self.times[:, n : n + 2].to(h.dtype)
        t = t[0] if t.shape[0] == 1 else expand_rows(t, rows, "flow_map")
        return self.model.cde.solve(self._path(rows), t, h, **self.solver_options)[:, -1]


def flow_map(
    model: nn.Module,
    inputs: torch.Tensor,
    times: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    **solver_options: Any,
) -> FlowMap | PathFlowMap:
    """The flow of a continuous model over each observation interval, for
    :func:`lyapunov_spectrum` (exponents per unit time).

    Args:
        model: a continuous model (:class:`~ctrnn.models.AbstractContinuousRNN`) or a
            :class:`~ctrnn.models.SequenceModel` holding one (its ``solver`` options are the
            default).
        inputs: ``(batch, T, input_size)`` or ``(T, input_size)``; held over each interval.
        times: ``(T,)`` or ``(batch, T)`` observation times (default ``0, 1, …``).
        mask: for a path-driven model, which entries of ``inputs`` are observed (default:
            those that are not NaN).
        solver_options: options for :func:`solvers.solve` (``method``, ``dt``, ``rtol``, …).

    A path-driven model (:class:`~ctrnn.models.PathDrivenModel`: the Neural CDE, ANCDE)
    is analysed on its own terms: ``inputs`` are its raw, partly missing observations, the
    model builds its control path from them as in its forward pass, and step ``n`` solves
    its ``cde`` along that path from ``times[n]`` to ``times[n+1]``; the state is the CDE's
    (``z``, or ``[z, h]`` for ANCDE).

    The Jacobian of each interval's flow is taken by differentiating through the solve, so
    use a solver configuration accurate enough for the exponents you want. Delay models
    (τ-GRU) have an infinite-dimensional state and are rejected: use :func:`cell_map` on a
    discretization, whose delay buffer is part of the state. For an SDE model (the
    noise-injected RNN) in training mode the flow would be a different noise realisation
    for each tangent vector, so it is rejected too: use :func:`cell_map` on its
    Euler–Maruyama cell (noise drawn once per step), or ``model.eval()`` for the drift.
    """
    owner = "flow_map"
    if isinstance(model, PathDrivenModel):
        inputs = as_sequence(inputs, owner)
        if inputs.shape[1] < 2:
            raise ValueError(
                f"{owner}: inputs must have T ≥ 2 observations, got T={inputs.shape[1]}"
            )
        return PathFlowMap(model, inputs, times, mask, {**model.solver, **solver_options})
    continuous, defaults = resolve_continuous(model, owner)
    if continuous.problem_type == "dde":
        raise ValueError(
            f"{owner}: {type(continuous).__name__} is a delay equation, whose state (a "
            "history segment) is infinite-dimensional; use cell_map(model.discretize(scheme, "
            "dt), inputs), whose state carries the delay buffer"
        )
    if continuous.problem_type == "cde":
        raise ValueError(
            f"{owner}: {type(continuous).__name__} is driven by a path, not by inputs held "
            "between observations; pass the model that builds the path from its inputs "
            "(NeuralCDE, ANCDE), or use cell_map on its discretize(scheme, dt) cell"
        )
    noisy = getattr(continuous, "noisy", None)
    if callable(noisy) and noisy():
        raise ValueError(
            f"{owner}: {type(continuous).__name__} is in training mode, where every solve "
            "draws its own noise; use cell_map on its Euler–Maruyama cell (noise drawn once "
            "per step) or call model.eval() for the flow of the drift"
        )
    inputs = as_sequence(inputs, owner)
    if inputs.shape[2] != continuous.input_size:
        raise ValueError(
            f"{owner}: {type(continuous).__name__} reads {continuous.input_size} input "
            f"features, got inputs of shape {tuple(inputs.shape)}"
        )
    T = inputs.shape[1]
    if times is None:
        times = torch.arange(T, dtype=inputs.dtype, device=inputs.device)
    if times.dim() == 1:
        times = times[None]
    if times.dim() != 2 or times.shape[1] != T or T < 2:
        raise ValueError(
            f"{owner}: times must have shape ({T},) or (batch, {T}) with T ≥ 2, got "
            f"{tuple(times.shape)}"
        )
    options = {**defaults, **solver_options}
    return FlowMap(continuous, inputs, times, options)

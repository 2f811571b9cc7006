"""Explicit Runge–Kutta methods: the stepper, one step over a tuple of state tensors, and
the dense output.

A step works on "lanes": ``h`` and ``t`` have shape ``(lanes,)``. With one lane per sample
every sample takes its own step; with a single lane the whole state shares one step.
"""

from __future__ import annotations

import warnings

import torch

from ._stepper import AbstractStepper
from ._tableau import ButcherTableau
from ._term import AbstractDerivativeTerm, DelayTerm, FunctionTerm

__all__ = ["CompiledRungeKutta", "ExplicitRungeKutta", "plan_steps"]

State = tuple[torch.Tensor, ...]


def lane_view(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``h`` of shape ``(lanes,)`` shaped to broadcast against ``x``."""
    if h.shape[0] == 1:
        return h.reshape(())
    return h.reshape(h.shape + (1,) * (x.ndim - 1))


def combine(y: State, h, weights, ks: list[State]) -> State:
    """``y + h Σ_j weights[j] k_j`` for every component, skipping zero weights.

    ``h`` is a ``(lanes,)`` tensor, or, when every lane takes the same step (planned steps),
    a pair ``(float, tensor)`` of its value and the ``(1,)`` tensor it was computed as: each
    nonzero weight is then one fused ``add(…, alpha=h·w)``, as few operations as a
    hand-written loop. When the tensor requires grad (gradients with respect to the times),
    ``(h - h.detach()) Σ w k`` is added: zero in value, so the result is the same to the bit
    with and without gradients, and the step size's gradient in the backward pass.
    """
    out = []
    if isinstance(h, tuple):
        hf, ht = h
        for i, yi in enumerate(y):
            acc = yi
            for w, k in zip(weights, ks):
                if w != 0.0:
                    acc = torch.add(acc, k[i], alpha=hf * w)
            if ht.requires_grad:
                # zero in value; the gradient with respect to the step size
                slope = sum(k[i] * w for w, k in zip(weights, ks) if w != 0.0)
                acc = acc + lane_view(ht - ht.detach(), yi) * slope
            out.append(acc)
        return tuple(out)
    for i, yi in enumerate(y):
        acc = None
        for w, k in zip(weights, ks):
            if w == 0.0:
                continue
            acc = k[i] * w if acc is None else acc.add(k[i], alpha=w)
        out.append(yi if acc is None else yi + lane_view(h, yi) * acc)
    return tuple(out)


def rk_step(
    field,
    tab: ButcherTableau,
    t: torch.Tensor,
    y: State,
    h: torch.Tensor,
    k1: State,
    t1=None,
    left: torch.Tensor | None = None,
    times=None,
    error: bool = True,
    reads: int | None = None,
):
    """Take one step of size ``h`` from ``(t, y)``; ``k1 = field(t, y)`` is given.

    ``t1``, when given, is the exact end of the step (``t + h`` can round past an output
    time). ``left`` (``(lanes,)`` bool) marks lanes whose step ends on a jump of the vector
    field: every stage at the end of their step sees the left limit there, FSAL tableaus
    included (the caller then evaluates the next step's first stage itself). ``times``, when
    given, are the times of stages 2..s, computed before the loop (:func:`plan_steps`);
    ``error=False`` skips the error estimate. ``reads``: the field reads only that many
    leading components of the state; the stages pass the others at their start values
    (quadratures, combined at the end of the step only). Returns ``(y1, error, stages)``;
    ``error`` is ``None`` for tableaus without an embedded estimate (or when not asked for).
    """
    ks = [k1]
    yi = y
    last = len(tab.c) - 1
    for i, (ci, row) in enumerate(zip(tab.c, tab.a)):
        if reads is None or (tab.fsal and i == last):
            yi = combine(y, h, row, ks)
        else:
            yi = combine(y[:reads], h, row, ks) + y[reads:]
        if times is not None:
            ks.append(field(times[i], yi))
            continue
        ti = t + ci * h
        if ci == 1.0:
            end = ti if t1 is None else t1
            if not tab.fsal:
                # A stage at the end of the step sees the left limit of a vector field that
                # is only piecewise smooth in t (e.g. a CDE on a linear path: the slope jumps
                # at each knot). For a smooth field this moves t by one ulp. FSAL tableaus
                # reuse this stage as the next step's first, which must see the right limit:
                # not nudged, unless the caller marks the lane (``left``).
                ti = torch.nextafter(end, t)
            elif left is not None:
                ti = torch.where(left, torch.nextafter(end, t), ti)
        ks.append(field(ti, yi))
    # FSAL: the last stage was evaluated at the new state itself
    y1 = yi if tab.fsal else combine(y, h, tab.b, ks)
    err = None
    if error and tab.b_error is not None:
        err = combine(tuple(torch.zeros_like(yi) for yi in y), h, tab.b_error, ks)
    return y1, err, ks


def plan_steps(tab: ButcherTableau, sched, batch: int, ndim: int, broadcast: bool) -> list:
    """What each step of a planned loop needs, computed before the loop in a few batched
    operations (nothing is read back to the host): its size (for one lane the pair of
    ``sched.h_floats`` and the tensor, see :func:`combine`; else the ``(lanes,)`` tensor) and
    the times of its ``s`` stages.

    The stage times are those :func:`rk_step` computes (``t + c h``; the left limit at the end
    of the step for a stage at ``c = 1`` of a tableau that is not FSAL), to the bit. With
    ``broadcast`` they are shaped ``(batch, 1, …, 1)`` for a state of ``ndim`` dimensions, as
    the user's vector field gets them (``broadcast_time`` passes them through); else
    ``(lanes,)``.
    """
    N = len(sched.ts)
    if N == 0:
        return []
    ts = torch.stack(sched.ts)  # (N, lanes)
    hs = torch.stack(sched.hs)
    te = torch.stack(sched.t_ends)
    cols = [ts]
    for ci in tab.c:
        ti = ts + ci * hs
        if ci == 1.0 and not tab.fsal:
            ti = torch.nextafter(te, ts)
        cols.append(ti)
    times = torch.stack(cols, dim=1)  # (N, s, lanes)
    s = times.shape[1]
    if broadcast:
        times = times.reshape(N, s, -1, *(1,) * (ndim - 1))
        times = times.expand(N, s, batch, *(1,) * (ndim - 1))
    views = times.reshape(N * s, *times.shape[2:]).unbind(0)
    if sched.h_floats is None:
        steps = sched.hs
    else:
        steps = list(zip(sched.h_floats, sched.hs))
    return [(steps[k], views[k * s : (k + 1) * s]) for k in range(N)]


def dense(tab: ButcherTableau, y: State, h: torch.Tensor, ks: list[State], theta: torch.Tensor):
    """The method's interpolant at ``t0 + θh`` (``θ`` of shape ``(lanes,)``)."""
    B = torch.tensor(tab.interpolant, dtype=theta.dtype, device=theta.device)  # (s, deg)
    powers = theta[:, None] ** torch.arange(1, B.shape[1] + 1, device=theta.device)
    w = powers @ B.T  # (lanes, s)
    out = []
    for i, yi in enumerate(y):
        acc = 0
        for j, k in enumerate(ks):
            acc = acc + lane_view(w[:, j], yi) * k[i]
        out.append(yi + lane_view(h, yi) * acc)
    return tuple(out)


def _reads(terms) -> int | None:
    """How many leading state components the terms' derivative reads (``FunctionTerm``)."""
    return terms.reads if isinstance(terms, FunctionTerm) else None


def dense_many(tab: ButcherTableau, y: State, h: torch.Tensor, ks: list[State], theta):
    """The interpolant at ``t0 + θh`` for ``θ`` of shape ``(lanes, R)``: each component
    ``(batch, R, *state)``, in one matrix product over the stages."""
    B = torch.tensor(tab.interpolant, dtype=theta.dtype, device=theta.device)  # (s, deg)
    powers = theta[..., None] ** torch.arange(1, B.shape[1] + 1, device=theta.device)
    w = powers @ B.T  # (lanes, R, s)
    hv = h.reshape(-1, 1, 1)
    out = []
    for i, yi in enumerate(y):
        K = torch.stack([k[i] for k in ks], dim=1).flatten(2)  # (batch, s, n)
        acc = torch.matmul(w, K)  # (batch, R, n)
        val = yi.flatten(1)[:, None] + hv * acc
        out.append(val.reshape(yi.shape[0], theta.shape[1], *yi.shape[1:]))
    return tuple(out)


class ExplicitRungeKutta(AbstractStepper):
    """An explicit Runge–Kutta method given by its :class:`~solvers.ButcherTableau`.

    It accepts every term that gives ``dy/dt``: ODEs, CDEs (through ``dX/dt``), DDEs and
    Hamiltonian systems. Tableaus with an embedded error estimate run adaptively (a
    :class:`~solvers.PIDController`) or with constant steps; the others with constant steps.
    A first-same-as-last tableau carries its last stage into the next step.

    Args:
        tableau: the method's :class:`~solvers.ButcherTableau`.
    """

    term_types = (AbstractDerivativeTerm, DelayTerm)

    def __init__(self, tableau: ButcherTableau):
        if not isinstance(tableau, ButcherTableau):
            raise TypeError(
                "ExplicitRungeKutta: tableau must be a ButcherTableau, got "
                f"{type(tableau).__name__}"
            )
        self.tableau = tableau
        self.has_dense_output = tableau.interpolant is not None
        self.name = tableau.name
        self.order = tableau.order
        self.error_order = tableau.error_order if tableau.adaptive else None
        self.evals_per_step = tableau.stages - 1 if tableau.fsal else tableau.stages

    def init(self, terms, t0, y0, f0):
        return f0

    def step(self, terms, t0, t1, h, y, state, *, control=None, left=None):
        tab = self.tableau
        k1 = state if state is not None else terms.derivative(t0, y)
        y1, err, ks = rk_step(
            terms.derivative, tab, t0, y, h, k1, t1=t1, left=left, reads=_reads(terms)
        )
        return y1, err, (y, h, ks), (ks[-1] if tab.fsal else None)

    def restart(self, terms, t, y, state, where):
        if state is None:
            return None
        fresh = terms.derivative(t, y)
        return tuple(torch.where(lane_view(where, a), b, a) for a, b in zip(state, fresh))

    def planned_step(self, terms, planned, y, state):
        """One step of a planned loop: ``planned`` is the step's entry of
        :func:`plan_steps`; no error estimate, no dense output. Returns ``(y1, state)``."""
        tab = self.tableau
        h, times = planned
        k1 = state if state is not None else terms.derivative(times[0], y)
        y1, _, ks = rk_step(
            terms.derivative, tab, None, y, h, k1, times=times[1:], error=False, reads=_reads(terms)
        )
        return y1, (ks[-1] if tab.fsal else None)

    def interpolate(self, dense_info, theta):
        y, h, ks = dense_info
        return dense(self.tableau, y, h, ks, theta)

    def interpolate_many(self, dense_info, theta):
        """The solution at ``t0 + θh`` for ``θ`` of shape ``(lanes, R)``: each component
        ``(batch, R, *state)``."""
        y, h, ks = dense_info
        return dense_many(self.tableau, y, h, ks, theta)

    def evals(self, n_steps, state_given):
        if n_steps == 0:
            return 0
        if self.tableau.fsal:
            return n_steps * (self.tableau.stages - 1) + (not state_given)
        return n_steps * self.tableau.stages - state_given

    def step_fn(self, f, t: torch.Tensor, y: torch.Tensor, h) -> torch.Tensor:
        """One step of size ``h`` of ``dy/dt = f(t, y)`` from ``(t, y)``, for a discrete
        cell (``ctrnn``'s ``discretize``).

        ``t`` is a ``(batch,)`` tensor and reaches ``f`` as given; ``h`` a number or a
        ``(batch,)`` tensor (each sample its own step).
        """
        batch = y.shape[0]
        h = torch.as_tensor(h, dtype=y.dtype, device=y.device).expand(batch)
        t = torch.as_tensor(t, dtype=y.dtype, device=y.device).expand(batch)

        def field(tt, yy):
            return (f(tt.expand(batch), yy[0]),)

        y1, _, _ = rk_step(field, self.tableau, t, (y,), h, field(t, (y,)))
        return y1[0]


class CompiledRungeKutta(ExplicitRungeKutta):
    """An explicit Runge–Kutta method whose planned steps on one set of terms run a
    ``torch.compile``d step function (``prepare(..., compile=True)``).

    The step is compiled, not the loop: one graph (forward and backward) per configuration,
    whatever the number of steps, which a Python loop then calls once per step. Steps on
    other terms (the backward solve of ``backsolve``) and unplanned steps run eagerly.

    Args:
        tableau: the method's :class:`~solvers.ButcherTableau`.
        terms: the terms whose steps are compiled.
        options: keyword arguments of ``torch.compile``.
    """

    def __init__(self, tableau: ButcherTableau, terms, options: dict):
        super().__init__(tableau)
        self.terms, self.options = terms, dict(options)
        self._step = None

    def init(self, terms, t0, y0, f0):
        # a non-FSAL step evaluates its first stage itself: one compiled graph for every step
        if terms is self.terms and not self.tableau.fsal:
            return None
        return f0

    def planned_step(self, terms, planned, y, state):
        if terms is not self.terms:
            return super().planned_step(terms, planned, y, state)
        if self._step is None:
            self._step = torch.compile(_step_function(self.tableau, terms), **self.options)
        h, times = planned
        if isinstance(h, tuple):
            h = h[1]  # a (1,) tensor: a changing step size is an input, not a constant
        if torch.is_grad_enabled() and not y[0].requires_grad:
            # the first step from a y0 that does not require grad: a leaf copy that does, so
            # that every step runs the one graph (its gradient is not used)
            y = tuple(a.detach().requires_grad_(True) for a in y)
        with warnings.catch_warnings():
            # tracing reads the .grad of a carried stage that is not a leaf (pytorch warns)
            warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor")
            return self._step(y, state, h, tuple(times))


def _step_function(tab: ButcherTableau, terms):
    """One planned step of ``tab`` on ``terms``: the function that is compiled."""

    def step(y, state, h, times):
        k1 = state if state is not None else terms.derivative(times[0], y)
        y1, _, ks = rk_step(terms.derivative, tab, None, y, h, k1, times=times[1:], error=False)
        return y1, (ks[-1] if tab.fsal else None)

    return step

"""The three things every model family is: a continuous formulation, the discrete cells that
its discretizations produce, and a sequence module (DESIGN.md, "ctrnn").

- :class:`AbstractCell`: a discrete cell with ``torch.nn.GRUCell``'s conventions; a cell that
  has a step size takes a per-sample ``dt`` (``(batch,)``) in ``forward``.
- :class:`AbstractContinuousRNN`: ``dh/dt = F(t, h, x(t))``; ``discretize(scheme, dt)``
  returns a cell; ``solve`` integrates it with any ``solvers`` configuration.
- :class:`AbstractSequenceModel`: what every sequence module shares:
  ``forward(x, times=None, mask=None) -> (output, h_n)``, the head, :meth:`classify`,
  :meth:`discretize` and ``hidden_size``.
- :class:`SequenceModel`: runs a cell over the observations, each sample stepping by its own
  gaps, or solves the continuous model over the observation times.
"""

from __future__ import annotations

import abc
import weakref
from collections.abc import Callable

import torch
from torch import nn

import solvers

from ._validate import positive_int, positive_number

__all__ = [
    "AbstractCell",
    "AbstractContinuousRNN",
    "AbstractSequenceModel",
    "InputDrivenField",
    "RungeKuttaCell",
    "SequenceModel",
    "hold_inputs",
    "last_observation_index",
    "last_observed",
    "observation_grid",
    "prepare_sequence",
    "with_input_gradients",
]

# kept for the modules that imported it from here
_positive_int = positive_int


def runge_kutta(scheme: str) -> solvers.ExplicitRungeKutta | None:
    """The fixed-step explicit Runge–Kutta stepper that ``scheme`` names for an ODE (a
    method with one name for several problems, such as ``heun``, resolves to its ODE
    stepper), or ``None``."""
    method = solvers.methods().get(scheme)
    if method is None:
        return None
    if not isinstance(method, solvers.ExplicitRungeKutta):
        method = method.for_terms(solvers.ODETerm(_zero_field))
    if isinstance(method, solvers.ExplicitRungeKutta) and not method.adaptive:
        return method
    return None


def _zero_field(t, y):
    return torch.zeros_like(y)


def check_step(owner: str, dt) -> float:
    """A positive step size ``dt`` as a float; a ValueError naming ``owner`` otherwise."""
    return positive_number(owner, "dt", dt)


class AbstractCell(nn.Module, metaclass=abc.ABCMeta):
    """A discrete recurrent cell: ``forward(input, hx=None, dt=None) -> h_next``.

    Follows ``torch.nn.GRUCell``: ``input`` is ``(batch, input_size)`` or unbatched
    ``(input_size,)``; ``hx`` is ``(batch, state_size)`` (or unbatched), zeros when omitted.
    ``state_size`` is ``hidden_size`` unless the cell carries more state (a second-order
    system's velocity, a delay buffer); :meth:`hidden` reads the hidden output from a state.

    Cells made by discretizing a continuous model have a step size :attr:`dt` (a float) and
    declare ``takes_dt = True``: ``forward``'s ``dt`` (a number, or a tensor ``(batch,)``, or
    ``()`` for an unbatched input) replaces it for this step, per sample, so that each sample
    can step by its own observation gap. Cells without a step size (a GRU) have ``dt = None``.
    Subclasses implement :meth:`step` on batched tensors.
    """

    #: whether :meth:`step` takes a per-sample step size (declared by the cells that do)
    takes_dt: bool = False
    #: the cell's own step size; ``None`` for cells without one
    dt: float | None = None

    def __init__(self, input_size: int, hidden_size: int, state_size: int | None = None):
        super().__init__()
        name = type(self).__name__
        self.input_size = positive_int(name, "input_size", input_size)
        self.hidden_size = positive_int(name, "hidden_size", hidden_size)
        self.state_size = positive_int(
            name, "state_size", hidden_size if state_size is None else state_size
        )

    @abc.abstractmethod
    def step(
        self, x: torch.Tensor, h: torch.Tensor, dt: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One step on batched ``x (batch, input_size)``, ``h (batch, state_size)``; ``dt`` is
        a positive ``(batch,)`` tensor, passed only to cells that declare ``takes_dt`` (without
        it the call is ``step(x, h)``: the cell's own step)."""

    def hidden(self, h: torch.Tensor) -> torch.Tensor:
        """The hidden output ``(batch, hidden_size)`` of a state ``(batch, state_size)``."""
        return h[..., : self.hidden_size]

    def initial_state(self, batch: int, *, device=None, dtype=None) -> torch.Tensor:
        return torch.zeros(batch, self.state_size, device=device, dtype=dtype)

    def step_sizes(self, dt, batch: int, like: torch.Tensor) -> torch.Tensor | None:
        """``dt`` checked and made a ``(batch,)`` tensor like ``like``; ``None`` stays ``None``.

        A ValueError names the cell when it takes no step size, when the shape is not
        ``(batch,)`` or when a step is not positive and finite."""
        if dt is None:
            return None
        name = type(self).__name__
        if not self.takes_dt:
            raise ValueError(
                f"{name}: this cell has no step size, so it takes no dt (got {dt!r}); it is a "
                "discrete cell that reads no times"
            )
        if isinstance(dt, bool) or not isinstance(dt, (int, float, torch.Tensor)):
            raise ValueError(f"{name}: dt must be a number or a (batch,) tensor, got {dt!r}")
        dt = torch.as_tensor(dt, dtype=like.dtype, device=like.device)
        if dt.dim() == 0:
            dt = dt.expand(batch)
        if dt.shape != (batch,):
            raise ValueError(f"{name}: expected dt of shape ({batch},), got {tuple(dt.shape)}")
        bad = ~(torch.isfinite(dt) & (dt > 0))
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"{name}: dt must be positive and finite, got dt[{i}] = {dt[i].item()}"
            )
        return dt

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None, dt=None) -> torch.Tensor:
        name = type(self).__name__
        if input.dim() not in (1, 2):
            raise ValueError(
                f"{name}: expected input of shape (batch, {self.input_size}) or "
                f"({self.input_size},), got {tuple(input.shape)}"
            )
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"{name}: expected input with {self.input_size} features, got "
                f"{input.shape[-1]} (input shape {tuple(input.shape)})"
            )
        unbatched = input.dim() == 1
        if unbatched:
            input = input.unsqueeze(0)
            hx = None if hx is None else hx.unsqueeze(0)
            if isinstance(dt, torch.Tensor) and dt.dim() == 0:
                dt = dt.reshape(1)
        if hx is None:
            hx = self.initial_state(input.shape[0], device=input.device, dtype=input.dtype)
        elif hx.shape != (input.shape[0], self.state_size):
            expected = (self.state_size,) if unbatched else (input.shape[0], self.state_size)
            got = tuple(hx.shape[1:]) if unbatched else tuple(hx.shape)
            raise ValueError(f"{name}: expected hx of shape {expected}, got {got}")
        dt = self.step_sizes(dt, input.shape[0], input)
        # a cell's own step without dt: cells written as step(x, h) keep working
        h = self.step(input, hx) if dt is None else self.step(input, hx, dt)
        return h.squeeze(0) if unbatched else h

    def run_sequence(
        self, x: torch.Tensor, dt: torch.Tensor | None = None, hx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The hidden outputs ``(batch, T, hidden_size)`` of the cell run over
        ``x (batch, T, input_size)`` from ``hx`` (zeros by default); ``dt (batch, T)`` gives
        each sample's step at each time step (``None``: the cell's own step). Cells override
        it where the whole sequence can be run faster than step by step (see τ-GRU)."""
        B = x.shape[0]
        h = self.initial_state(B, device=x.device, dtype=x.dtype) if hx is None else hx
        steps = [None] * x.shape[1] if dt is None else dt.unbind(1)
        out = []
        for xt, st in zip(x.unbind(1), steps):  # unbind: no per-step indexing of x
            h = self.step(xt, h) if st is None else self.step(xt, h, st)
            out.append(self.hidden(h))
        return torch.stack(out, dim=1)

    def extra_repr(self) -> str:
        extra = f", state_size={self.state_size}" if self.state_size != self.hidden_size else ""
        return f"{self.input_size}, {self.hidden_size}{extra}"


def hold_inputs(x: torch.Tensor, times: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The input as a function of time, held constant from each observation to the next.

    ``x (batch, T, channels)``, ``times (batch, T)``; the returned function maps a ``(batch,)``
    tensor of times to ``(batch, channels)``: ``x(t) = x_i`` for ``t_i ≤ t < t_{i+1}``.
    """
    times = times.detach().contiguous()
    T = times.shape[1]

    def at(t: torch.Tensor) -> torch.Tensor:
        i = torch.searchsorted(times, t.detach().reshape(-1, 1).contiguous(), right=True) - 1
        i = i.clamp(0, T - 1)
        return x.gather(1, i[:, :, None].expand(-1, 1, x.shape[2]))[:, 0]

    return at


class AbstractContinuousRNN(nn.Module, metaclass=abc.ABCMeta):
    """A continuous-time recurrent model ``dh/dt = F(t, h, x(t))``.

    Subclasses implement :meth:`vector_field` and set ``problem_type`` (``"ode"`` here;
    families built on other problems override :meth:`problem`). :meth:`discretize` applies a
    named scheme and returns a cell that shares this module's parameters.
    """

    problem_type = "ode"
    #: schemes this model supports beyond the explicit Runge–Kutta ones
    extra_schemes: tuple[str, ...] = ()

    def __init__(self, input_size: int, hidden_size: int, state_size: int | None = None):
        super().__init__()
        name = type(self).__name__
        self.input_size = positive_int(name, "input_size", input_size)
        self.hidden_size = positive_int(name, "hidden_size", hidden_size)
        self.state_size = positive_int(
            name, "state_size", hidden_size if state_size is None else state_size
        )

    @abc.abstractmethod
    def vector_field(self, t: torch.Tensor, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``dh/dt`` for ``t (batch,)``, ``h (batch, state_size)``, ``x (batch, input_size)``."""

    def default_solver(self, dt: float) -> dict:
        """The :func:`solvers.solve` options of continuous mode when the user gives none;
        ``dt`` is the model's discrete step. ``dopri5`` here; families whose problem needs
        another method (an SDE, a delay equation) say which."""
        return dict(method="dopri5")

    def continuous_form_error(self) -> str | None:
        """Why this instance has no continuous form (a message), or ``None`` (it has one)."""
        return None

    def hidden(self, h: torch.Tensor) -> torch.Tensor:
        return h[..., : self.hidden_size]

    def linear_part(self) -> torch.Tensor | None:
        """``L`` such that ``vector_field(t, h, x) = L h + N(t, h, x)``: a matrix
        ``(state_size, state_size)`` or the diagonal ``(state_size,)``; ``None`` (the
        default) when the model has no such split. With one, the model accepts the
        ``"exponential_euler"`` scheme."""
        return None

    def schemes(self) -> tuple[str, ...]:
        """Names accepted by :meth:`discretize`."""
        rk = tuple(n for n in solvers.methods() if runge_kutta(n) is not None)
        split = ("exponential_euler",) if self.linear_part() is not None else ()
        return rk + split + self.extra_schemes

    def discretize(self, scheme: str = "euler", dt: float = 1.0) -> AbstractCell:
        """The discrete cell obtained by applying ``scheme`` with step ``dt``.

        Explicit Runge–Kutta schemes (``euler``, ``midpoint``, ``heun``, ``rk4``) hold the
        input constant over the step. Families add their own (see ``extra_schemes``).
        """
        dt = check_step(f"{type(self).__name__}.discretize", dt)
        rk = runge_kutta(scheme)
        if rk is not None:
            return RungeKuttaCell(self, rk, dt)
        if scheme == "exponential_euler" and self.linear_part() is not None:
            return ExponentialEulerCell(self, float(dt))
        raise ValueError(
            f"{type(self).__name__}.discretize: unknown scheme {scheme!r}; this model accepts "
            f"{', '.join(self.schemes())}"
        )

    def problem(self, inputs: Callable[[torch.Tensor], torch.Tensor]) -> solvers.AbstractProblem:
        """The ``solvers`` problem for inputs given as a function of time.

        The vector field is a module holding this model, so every adjoint (backsolve too)
        finds the model's parameters.
        """
        return solvers.ODE(InputDrivenField(self, inputs))

    def solve(
        self, x: torch.Tensor, times: torch.Tensor, h0: torch.Tensor | None = None, **solver_options
    ) -> torch.Tensor:
        """Integrate over the observation times with inputs held between observations.

        ``x (batch, T, input_size)`` without missing values, ``times (T,)`` or ``(batch, T)``;
        returns the states ``(batch, T, state_size)`` at the observation times (the state at
        ``times[..., 0]`` is ``h0``). ``solver_options`` go to :func:`solvers.solve`.
        """
        B = x.shape[0]
        t = times if times.dim() == 2 else times.expand(B, -1)
        if h0 is None:
            h0 = torch.zeros(B, self.state_size, device=x.device, dtype=x.dtype)
        problem = self.problem(hold_inputs(x, t))
        # the held input jumps at every observation time: adaptive steps land on them
        if type(problem) is solvers.ODE:
            problem = solvers.ODE(problem.f, jump_times=t)
        elif isinstance(problem, solvers.HamiltonianODE):
            problem = problem.with_jump_times(t)
        options = with_input_gradients(solver_options, problem, x)
        return solvers.solve(problem, h0, t, **options).ys


def with_input_gradients(solver_options: dict, problem, *inputs: torch.Tensor) -> dict:
    """Solver options in which the backsolve adjoint also differentiates ``inputs``.

    The continuous adjoint sees only the tensors it is told about; inputs reach the vector
    field through a closure (held values, a path's coefficients), so without this an encoder
    in front of the model would get no gradient under ``adjoint="backsolve"``.
    """
    adjoint = solver_options.get("adjoint", "direct")
    inputs = tuple(x for x in inputs if x.requires_grad)
    if not inputs:
        return solver_options
    if adjoint == "backsolve":
        adjoint = solvers.BacksolveAdjoint()
    if not isinstance(adjoint, solvers.BacksolveAdjoint) or adjoint.params is not None:
        return solver_options
    params = (*problem.parameters(), *inputs)
    return {
        **solver_options,
        "adjoint": solvers.BacksolveAdjoint(
            adjoint.method, adjoint.rtol, adjoint.atol, adjoint.dt, params=params
        ),
    }


class InputDrivenField(nn.Module):
    """``f(t, h) = model.vector_field(t, h, inputs(t))`` as a module owning ``model``."""

    def __init__(self, model: AbstractContinuousRNN, inputs: Callable):
        super().__init__()
        self.model, self.inputs = model, inputs

    def forward(self, t, h):
        # solvers hands fields t as (batch, 1, ...); models take each sample's time, (batch,)
        t = t.reshape(-1)
        return self.model.vector_field(t, h, self.inputs(t))


# ExponentialEulerCell's propagators, kept beside the cells (not in them: a copy or a saved
# state of a cell carries no tensor that belongs to a graph)
_PROPAGATORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _apply(M: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``M v`` for each row ``v`` of ``v``; ``M`` a matrix or the diagonal of one."""
    return v @ M.T if M.dim() == 2 else v * M


def phi_propagators(L: torch.Tensor, dt) -> tuple[torch.Tensor, torch.Tensor]:
    """``(exp(dt L), dt φ₁(dt L))`` with ``φ₁(z) = (e^z - 1) / z``, for a matrix ``L`` (from
    the exponential of ``[[dt L, dt I], [0, 0]]``, whose upper blocks they are) or a diagonal
    (elementwise, with ``φ₁``'s series near 0; there ``dt`` may be a ``(batch, 1)`` tensor of
    steps, giving ``(batch, d)`` propagators)."""
    z = dt * L
    if L.dim() == 1:
        small = z.abs() < 1e-4
        safe = torch.where(small, torch.ones_like(z), z)
        phi1 = torch.where(small, 1 + z / 2 + z * z / 6, torch.expm1(safe) / safe)
        return torch.exp(z), dt * phi1
    d = L.shape[0]
    aug = torch.zeros(2 * d, 2 * d, dtype=L.dtype, device=L.device)
    aug[:d, :d] = z
    aug[:d, d:] = dt * torch.eye(d, dtype=L.dtype, device=L.device)
    m = torch.linalg.matrix_exp(aug)
    return m[:d, :d], m[:d, d:]


class ExponentialEulerCell(AbstractCell):
    """Exponential Euler on ``dh/dt = L h + N(h, x)`` (the model's :meth:`linear_part` ``L``),
    input held over the step::

        h_{n+1} = exp(Δt L) h_n + Δt φ₁(Δt L) N(h_n, x_n),    φ₁(z) = (e^z - 1) / z

    First order; exact when ``N`` is constant over the step, so the linear part (stiff or
    oscillatory) is integrated exactly whatever ``Δt`` (Hochbruck & Ostermann, Exponential
    integrators, Acta Numerica 19, 2010). ``N`` is computed as ``f - L h``. A matrix ``L``
    costs one matrix exponential of size ``2 · state_size``, computed once for as long as
    the model's parameters stay the same (see :meth:`propagators`). A per-sample step
    (``forward(..., dt=...)``) computes the propagators of each distinct step.
    """

    takes_dt = True

    def __init__(self, model: AbstractContinuousRNN, dt: float):
        super().__init__(model.input_size, model.hidden_size, model.state_size)
        self.model, self.dt = model, dt

    def propagators(self, dtype, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(L, exp(Δt L), Δt φ₁(Δt L))``, reused by every step until a parameter of the
        model changes (an optimiser step, a load) or a backward pass goes through them
        (after which their graph may be freed, so the next step builds them anew)."""
        key = (
            dtype,
            device,
            torch.is_grad_enabled(),
            tuple((id(p), p._version) for p in self.model.parameters()),
        )
        hit = _PROPAGATORS.get(self)
        if hit is not None and hit[0] == key:
            return hit[1]
        L = self.model.linear_part().to(dtype=dtype, device=device)
        found = (L, *phi_propagators(L, self.dt))
        _PROPAGATORS[self] = (key, found)
        cell = weakref.ref(self)  # the hook must not keep the cell (the dict's key) alive

        def forget(grad):
            if cell() is not None:
                _PROPAGATORS.pop(cell(), None)

        for tensor in found:
            if tensor.requires_grad:
                tensor.register_hook(forget)
        return found

    def step(self, x, h, dt=None):
        t = torch.zeros(h.shape[0], dtype=h.dtype, device=h.device)
        if dt is None:
            L, E, P = self.propagators(h.dtype, h.device)
            nonlinear = self.model.vector_field(t, h, x) - _apply(L, h)
            return _apply(E, h) + _apply(P, nonlinear)
        # per-sample steps: one pair of propagators per distinct step
        L = self.model.linear_part().to(dtype=h.dtype, device=h.device)
        steps, which = torch.unique(dt, return_inverse=True)
        if L.dim() == 1:
            E, P = phi_propagators(L, steps[:, None])
            E, P = E[which], P[which]
            nonlinear = self.model.vector_field(t, h, x) - h * L
            return E * h + P * nonlinear
        pairs = [phi_propagators(L, s) for s in steps.unbind()]
        E = torch.stack([e for e, _ in pairs])[which]
        P = torch.stack([q for _, q in pairs])[which]
        nonlinear = self.model.vector_field(t, h, x) - _apply(L, h)
        return torch.bmm(E, h[:, :, None])[:, :, 0] + torch.bmm(P, nonlinear[:, :, None])[:, :, 0]

    def hidden(self, h):
        return self.model.hidden(h)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, dt={self.dt}"


class RungeKuttaCell(AbstractCell):
    """A cell made by one explicit Runge–Kutta step of a continuous model, input held; the
    step is the solver's own (:meth:`solvers.ExplicitRungeKutta.step_fn`), per-sample steps
    included."""

    takes_dt = True

    def __init__(self, model: AbstractContinuousRNN, method: solvers.ExplicitRungeKutta, dt: float):
        super().__init__(model.input_size, model.hidden_size, model.state_size)
        self.model, self.method, self.dt = model, method, dt

    def step(self, x, h, dt=None):
        t = torch.zeros(h.shape[0], dtype=h.dtype, device=h.device)
        step = self.dt if dt is None else dt
        return self.method.step_fn(lambda t, h: self.model.vector_field(t, h, x), t, h, step)

    def hidden(self, h):
        return self.model.hidden(h)

    def extra_repr(self):
        return f"{type(self.model).__name__}, scheme={self.method.name!r}, dt={self.dt}"


def prepare_sequence(x: torch.Tensor, times, mask, owner: str):
    """Check a batch of sequences and split it into values, times and observation mask.

    Returns ``(values, times (batch, T), mask (batch, T, channels), lengths (batch,))`` where
    missing values (NaN, or ``mask`` False) are replaced by the last observation of their
    channel (zero before the first), and ``lengths`` counts the time steps up to each
    sample's last observation (trailing padding has no observation).

    A ValueError names the offending value when ``x`` has no time steps, or when a sample's
    times, up to its last observation, are not finite or not strictly increasing (the times
    of trailing padding are not read).
    """
    if x.dim() != 3:
        raise ValueError(f"{owner}: expected x of shape (batch, T, channels), got {tuple(x.shape)}")
    B, T = x.shape[:2]
    if T == 0:
        raise ValueError(f"{owner}: x has no time steps (shape {tuple(x.shape)}); T must be ≥ 1")
    if not x.is_floating_point():
        raise ValueError(f"{owner}: x must be a floating-point tensor, got dtype {x.dtype}")
    observed = ~torch.isnan(x)
    if mask is not None:
        if mask.shape != x.shape:
            raise ValueError(
                f"{owner}: mask must have the shape of x {tuple(x.shape)}, got {tuple(mask.shape)}"
            )
        observed = observed & mask.bool()
    if times is None:
        times = torch.arange(T, dtype=x.dtype, device=x.device)
    times = torch.as_tensor(times).to(device=x.device, dtype=x.dtype)
    if times.dim() == 1:
        if times.shape[0] != T:
            raise ValueError(f"{owner}: times has {times.shape[0]} entries but x has T={T}")
        times = times.expand(B, T)
    elif times.shape != (B, T):
        raise ValueError(
            f"{owner}: times must have shape ({T},) or ({B}, {T}), got {tuple(times.shape)}"
        )
    if bool(observed.all()):
        values = x  # nothing missing: nothing to hold
    else:
        last = last_observation_index(observed)
        filled = torch.where(observed, x, torch.zeros_like(x))
        held = filled.gather(1, last.clamp_min(0))
        values = torch.where(last >= 0, held, torch.zeros_like(x))
    any_obs = observed.any(dim=2)  # (B, T)
    steps = torch.arange(1, T + 1, device=x.device).expand(B, T)
    lengths = torch.where(any_obs, steps, torch.zeros_like(steps)).max(dim=1).values.clamp_min(1)
    _check_times(times.detach(), lengths, owner)
    return values, times, observed, lengths


def last_observation_index(observed: torch.Tensor) -> torch.Tensor:
    """``(batch, T, C)``: for each step and channel, the index of the channel's latest
    observation at or before it (``-1`` before the first). The running maximum runs along
    the last dimension of a ``(batch, C, T)`` copy, which is several times faster on the CPU
    than along the middle one."""
    T = observed.shape[1]
    idx = torch.arange(T, device=observed.device, dtype=torch.int32)
    seen = torch.where(observed.transpose(1, 2), idx, -1).contiguous()
    return seen.cummax(dim=2).values.transpose(1, 2).long()


def _check_times(times: torch.Tensor, lengths: torch.Tensor, owner: str) -> None:
    T = times.shape[1]
    inside = torch.arange(T, device=times.device)[None, :] < lengths[:, None]
    bad = inside & ~torch.isfinite(times)
    if bool(bad.any()):
        b, i = (int(v) for v in bad.nonzero()[0])
        raise ValueError(
            f"{owner}: times must be finite; sample {b} has times[{b}, {i}] = {times[b, i].item()}"
        )
    if T > 1:
        back = inside[:, 1:] & (times[:, 1:] <= times[:, :-1])
        if bool(back.any()):
            b, i = (int(v) for v in back.nonzero()[0])
            raise ValueError(
                f"{owner}: times must be strictly increasing along T; sample {b} has "
                f"times[{b}, {i + 1}] = {times[b, i + 1].item()} after times[{b}, {i}] = "
                f"{times[b, i].item()}"
            )


def observation_grid(
    times: torch.Tensor, lengths: torch.Tensor, time_scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's own time grid, padding never read: ``(grid, gaps)``, both ``(batch, T)``.

    ``grid`` is ``times`` up to each sample's last observation (``lengths``) and, past it,
    that sample's grid continued at its own last gap (``time_scale`` for a sample with one
    observation), whatever the padding's times are. ``gaps[:, i] = grid[:, i + 1] -
    grid[:, i]``, the last one extended by the sample's last gap: the span over which the
    input observed at ``t_i`` acts before output ``i`` (both modes of
    :class:`SequenceModel`).
    """
    times = times.detach()
    T = times.shape[1]
    last = (lengths - 1)[:, None]
    t_last = times.gather(1, last)
    t_prev = times.gather(1, (last - 1).clamp_min(0))
    gap = torch.where(last > 0, t_last - t_prev, torch.full_like(t_last, time_scale))
    idx = torch.arange(T, device=times.device)[None, :]
    beyond = (idx - last).clamp_min(0).to(times.dtype)
    grid = torch.where(idx <= last, times, t_last + beyond * gap)
    gaps = torch.cat([grid.diff(dim=1), gap], dim=1)
    return grid, gaps


def last_observed(output: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``output (batch, T, H)`` at each sample's last observed step ``lengths - 1``."""
    index = (lengths - 1)[:, None, None].expand(-1, 1, output.shape[2])
    return output.gather(1, index)[:, 0]


class AbstractSequenceModel(nn.Module, metaclass=abc.ABCMeta):
    """What every sequence module shares (DESIGN.md, "ctrnn", 3).

    ``forward(x, times=None, mask=None) -> (output, h_n)``: ``x (batch, T, input_size)`` with
    NaN (or ``mask`` False) where missing; ``times (T,)`` or ``(batch, T)``, strictly
    increasing up to each sample's last observation (default ``0, 1, …``);
    ``output (batch, T, hidden_size)``; ``h_n (batch, hidden_size)`` at each sample's last
    observed step. Trailing padding (steps after a sample's last observation, at any times)
    never changes a sample's result.

    Defined here once: ``input_size`` and ``hidden_size`` (checked), ``time_scale``, the
    linear classification ``head`` (``num_classes``; :meth:`make_head`), :meth:`classify`,
    :meth:`discretize` (the cell of the continuous :attr:`formulation`) and the checks of
    the input (:meth:`prepare`). Subclasses implement :attr:`formulation` and ``forward``.
    """

    def __init__(self, input_size: int, hidden_size: int, *, time_scale: float = 1.0):
        super().__init__()
        name = type(self).__name__
        self.input_size = positive_int(name, "input_size", input_size)
        self.hidden_size = positive_int(name, "hidden_size", hidden_size)
        self.time_scale = positive_number(name, "time_scale", time_scale)

    @property
    @abc.abstractmethod
    def formulation(self) -> AbstractContinuousRNN | None:
        """The continuous formulation (``None`` for a model that is discrete only)."""

    def make_head(self, num_classes: int | None) -> nn.Linear | None:
        """The linear head ``hidden_size -> num_classes`` (``None`` without classes), on the
        device and in the dtype of the parameters built so far. Subclasses call it last, so
        that it draws its initial weights after the model's own."""
        if num_classes is None:
            return None
        positive_int(type(self).__name__, "num_classes", num_classes)
        like = next(self.parameters(), None)
        return nn.Linear(
            self.hidden_size,
            num_classes,
            device=None if like is None else like.device,
            dtype=None if like is None else like.dtype,
        )

    def prepare(self, x: torch.Tensor, times=None, mask=None):
        """:func:`prepare_sequence` plus this model's checks: ``input_size`` channels and the
        dtype of its parameters (a ValueError naming both, not an error inside torch)."""
        name = type(self).__name__
        if isinstance(x, torch.Tensor) and x.dim() == 3 and x.shape[2] != self.input_size:
            raise ValueError(f"{name}: expected {self.input_size} input channels, got {x.shape[2]}")
        self.check_dtype(x)
        return prepare_sequence(x, times, mask, name)

    def check_dtype(self, x: torch.Tensor) -> None:
        """A ValueError when ``x``'s dtype is not that of the floating-point parameters."""
        like = next((p for p in self.parameters() if p.is_floating_point()), None)
        if like is not None and x.is_floating_point() and x.dtype != like.dtype:
            name = type(self).__name__
            raise ValueError(
                f"{name}: x has dtype {x.dtype} but the model's parameters are {like.dtype}; "
                f"convert one of them (x.to({like.dtype}) or model.to({x.dtype}))"
            )

    def discretize(self, scheme: str | None = None, dt: float | None = None) -> AbstractCell:
        """The discrete cell of ``scheme`` with step ``dt`` applied to :attr:`formulation`,
        sharing its parameters (omitted arguments: the formulation's defaults). A
        ValueError for a model without a continuous formulation."""
        f = self.formulation
        if f is None:
            raise ValueError(
                f"{type(self).__name__}.discretize: this model is discrete only (it has no "
                "continuous formulation to discretize)"
            )
        kwargs = {k: v for k, v in (("scheme", scheme), ("dt", dt)) if v is not None}
        return self.wrap_cell(f.discretize(**kwargs))

    def wrap_cell(self, cell: AbstractCell) -> AbstractCell:
        """The model's cell built around a cell of its formulation (the cell itself here;
        hybrid models such as ODE-RNN add their update)."""
        return cell

    def classify(self, x: torch.Tensor, times=None, mask=None) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` from the hidden state at each sample's last
        observation."""
        if getattr(self, "head", None) is None:
            raise ValueError(
                f"{type(self).__name__}.classify: the model was built without num_classes"
            )
        return self.head(self(x, times, mask)[1])


class SequenceModel(AbstractSequenceModel):
    """Runs a continuous model or a cell over a batch of sequences.

    Args:
        model: a continuous model (:class:`AbstractContinuousRNN`) or a cell.
        mode: ``"discrete"`` runs ``model.discretize(scheme, dt)`` (or the cell) once per
            observation; ``"continuous"`` solves the continuous model over the observation
            times with ``solver`` options (method, dt, rtol, atol, adjoint, backend).
        scheme: discretization scheme for the discrete mode of a continuous model.
        dt: its step, the step taken over a gap of ``time_scale``.
        solver: options for :func:`solvers.solve` in continuous mode (default: the model's
            :meth:`~AbstractContinuousRNN.default_solver`, ``dopri5`` for most).
        num_classes: size of the classification head on the final hidden state (optional).
        time_scale: the observation-time gap that one step ``dt`` of the cell stands for
            (default 1: unit-spaced times give the cell's own step).

    Observation times are never ignored (the cells of discrete models without a step size,
    a GRU or an LSTM, are the exception: they read no times). Output ``i`` is the state
    after the input observed at ``t_i`` has acted for the gap ``t_{i+1} - t_i`` (the last
    gap of a sample is repeated past its last observation):

    - discrete mode: each sample steps by its own gap, ``dt · (t_{i+1} - t_i) / time_scale``
      (the cell's per-sample ``dt``). When every gap equals ``time_scale`` the cell runs with
      its own ``dt``, bit for bit the paper's cell;
    - continuous mode: the model is solved over the observation times themselves.

    ``x`` is ``(batch, T, input_size)``; missing values are NaN or ``mask`` False and are
    held at the channel's last observation. Returns ``output (batch, T, hidden_size)`` and
    ``h_n (batch, hidden_size)``, the hidden state at each sample's last observed time step.
    """

    def __init__(
        self,
        model: AbstractContinuousRNN | AbstractCell,
        *,
        mode: str = "discrete",
        scheme: str = "euler",
        dt: float = 1.0,
        solver: dict | None = None,
        num_classes: int | None = None,
        time_scale: float = 1.0,
    ):
        super().__init__(model.input_size, model.hidden_size, time_scale=time_scale)
        if mode not in ("discrete", "continuous"):
            raise ValueError(
                f"SequenceModel: mode must be 'discrete' or 'continuous', got {mode!r}"
            )
        if mode == "continuous" and not isinstance(model, AbstractContinuousRNN):
            raise ValueError(
                f"SequenceModel: {type(model).__name__} is a discrete cell; continuous mode "
                "needs a continuous model"
            )
        if mode == "continuous" and model.continuous_form_error() is not None:
            raise ValueError(model.continuous_form_error())
        self.model, self.mode, self.scheme, self.dt = model, mode, scheme, dt
        if mode == "discrete":
            _ = self.cell  # build it now, so that a bad scheme or dt fails here
        if solver is not None:
            self.solver = dict(solver)
        elif isinstance(model, AbstractContinuousRNN):
            self.solver = model.default_solver(dt)
        else:
            self.solver = {}
        self.head = self.make_head(num_classes)

    @property
    def formulation(self) -> AbstractContinuousRNN | None:
        return self.model if isinstance(self.model, AbstractContinuousRNN) else None

    def discretize(self, scheme: str | None = None, dt: float | None = None) -> AbstractCell:
        """As :meth:`AbstractSequenceModel.discretize`, with this model's ``scheme`` and
        ``dt`` as the defaults."""
        return super().discretize(self.scheme if scheme is None else scheme, dt or self.dt)

    @property
    def cell(self) -> AbstractCell | None:
        """The discrete cell (discrete mode), derived from the model and sharing its
        parameters. It is kept out of the module tree, so the state dict holds each
        parameter once and loads into either mode; it is rebuilt after ``.to()`` and follows
        this module's train/eval mode."""
        if self.mode != "discrete":
            return None
        if not isinstance(self.model, AbstractContinuousRNN):
            return self.model
        cell = self.__dict__.get("_cell")
        if cell is None:
            cell = self.model.discretize(self.scheme, self.dt)
            self.__dict__["_cell"] = cell
        return cell.train(self.training)

    def __setattr__(self, name, value):
        # nn.Module registers modules before a property setter could run
        if name == "cell":
            raise AttributeError(
                "SequenceModel.cell is derived from the model (model.discretize(scheme, dt)); "
                "build a new SequenceModel to change it"
            )
        super().__setattr__(name, value)

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self.__dict__.pop("_cell", None)
        return out

    def steps(self, gaps: torch.Tensor) -> torch.Tensor | None:
        """The discrete cell's per-sample steps ``dt · gaps / time_scale`` ``(batch, T)``;
        ``None`` (the cell's own step, exactly) when every gap is ``time_scale`` or the cell
        has no step size."""
        cell = self.cell
        if cell.dt is None or bool((gaps == self.time_scale).all()):
            return None
        return gaps * (cell.dt / self.time_scale)

    def forward(
        self, x: torch.Tensor, times: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ):
        values, t, _, lengths = self.prepare(x, times, mask)
        grid, gaps = observation_grid(t, lengths, self.time_scale)
        if self.mode == "discrete":
            hidden = self.cell.run_sequence(values, self.steps(gaps))
        else:
            # Output i is the state after the input held from t_i has acted, as in the
            # discrete mode: integrate one gap past each sample's own last observation.
            t_ext = torch.cat([grid, grid[:, -1:] + gaps[:, -1:]], dim=1)
            x_ext = torch.cat([values, values[:, -1:]], dim=1)
            states = self.model.solve(x_ext, t_ext, **self.solver)[:, 1:]
            hidden = self.model.hidden(states)
        return hidden, last_observed(hidden, lengths)

"""The three things every model family is: a continuous formulation, the discrete cells that
its discretizations produce, and a sequence module (DESIGN.md, "ctrnn").

- :class:`AbstractCell`: a discrete cell with ``torch.nn.GRUCell``'s conventions.
- :class:`AbstractContinuousRNN`: ``dh/dt = F(t, h, x(t))``; ``discretize(scheme, dt)``
  returns a cell; ``solve`` integrates it with any ``solvers`` configuration.
- :class:`SequenceModel`: runs a cell over the observations or solves the continuous model,
  ``forward(x, times=None, mask=None) -> (output, h_n)``, with a classification head.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import nn

import solvers

__all__ = [
    "AbstractCell",
    "AbstractContinuousRNN",
    "InputDrivenField",
    "RungeKuttaCell",
    "SequenceModel",
    "hold_inputs",
    "prepare_sequence",
    "with_input_gradients",
]


def _positive_int(owner: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return value


class AbstractCell(nn.Module):
    """A discrete recurrent cell: ``forward(input, hx=None) -> h_next``.

    Follows ``torch.nn.GRUCell``: ``input`` is ``(batch, input_size)`` or unbatched
    ``(input_size,)``; ``hx`` is ``(batch, state_size)`` (or unbatched), zeros when omitted.
    ``state_size`` is ``hidden_size`` unless the cell carries more state (a second-order
    system's velocity, a delay buffer); :meth:`hidden` reads the hidden output from a state.
    Subclasses implement :meth:`step` on batched tensors.
    """

    def __init__(self, input_size: int, hidden_size: int, state_size: int | None = None):
        super().__init__()
        name = type(self).__name__
        self.input_size = _positive_int(name, "input_size", input_size)
        self.hidden_size = _positive_int(name, "hidden_size", hidden_size)
        self.state_size = _positive_int(
            name, "state_size", hidden_size if state_size is None else state_size
        )

    def step(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step on batched ``x (batch, input_size)``, ``h (batch, state_size)``."""
        raise NotImplementedError

    def hidden(self, h: torch.Tensor) -> torch.Tensor:
        """The hidden output ``(batch, hidden_size)`` of a state ``(batch, state_size)``."""
        return h[..., : self.hidden_size]

    def initial_state(self, batch: int, *, device=None, dtype=None) -> torch.Tensor:
        return torch.zeros(batch, self.state_size, device=device, dtype=dtype)

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None) -> torch.Tensor:
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
        if hx is None:
            hx = self.initial_state(input.shape[0], device=input.device, dtype=input.dtype)
        elif hx.shape != (input.shape[0], self.state_size):
            expected = (self.state_size,) if unbatched else (input.shape[0], self.state_size)
            got = tuple(hx.shape[1:]) if unbatched else tuple(hx.shape)
            raise ValueError(f"{name}: expected hx of shape {expected}, got {got}")
        h = self.step(input, hx)
        return h.squeeze(0) if unbatched else h

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


class AbstractContinuousRNN(nn.Module):
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
        self.input_size = _positive_int(name, "input_size", input_size)
        self.hidden_size = _positive_int(name, "hidden_size", hidden_size)
        self.state_size = _positive_int(
            name, "state_size", hidden_size if state_size is None else state_size
        )

    def vector_field(self, t: torch.Tensor, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``dh/dt`` for ``t (batch,)``, ``h (batch, state_size)``, ``x (batch, input_size)``."""
        raise NotImplementedError

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
        rk = tuple(
            n
            for n, m in solvers.methods().items()
            if isinstance(m, solvers.ExplicitRungeKutta) and not m.adaptive
        )
        split = ("exponential_euler",) if self.linear_part() is not None else ()
        return rk + split + self.extra_schemes

    def discretize(self, scheme: str = "euler", dt: float = 1.0) -> AbstractCell:
        """The discrete cell obtained by applying ``scheme`` with step ``dt``.

        Explicit Runge–Kutta schemes (``euler``, ``midpoint``, ``heun``, ``rk4``) hold the
        input constant over the step. Families add their own (see ``extra_schemes``).
        """
        if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not dt > 0:
            raise ValueError(f"{type(self).__name__}.discretize: dt must be positive, got {dt!r}")
        rk = solvers.methods().get(scheme)
        if isinstance(rk, solvers.ExplicitRungeKutta) and not rk.adaptive:
            return RungeKuttaCell(self, rk, float(dt))
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
        if type(problem) is solvers.ODE:
            # the held input jumps at every observation time: adaptive steps land on them
            problem = solvers.ODE(problem.f, jump_times=t)
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
        return self.model.vector_field(t, h, self.inputs(t))


# ExponentialEulerCell's propagators, kept beside the cells (not in them: a copy or a saved
# state of a cell carries no tensor that belongs to a graph)
_PROPAGATORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _apply(M: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``M v`` for each row ``v`` of ``v``; ``M`` a matrix or the diagonal of one."""
    return v @ M.T if M.dim() == 2 else v * M


def phi_propagators(L: torch.Tensor, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(exp(dt L), dt φ₁(dt L))`` with ``φ₁(z) = (e^z - 1) / z``, for a matrix ``L`` (from
    the exponential of ``[[dt L, dt I], [0, 0]]``, whose upper blocks they are) or a diagonal
    (elementwise, with ``φ₁``'s series near 0)."""
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
    the model's parameters stay the same (see :meth:`propagators`).
    """

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

    def step(self, x, h):
        L, E, P = self.propagators(h.dtype, h.device)
        t = torch.zeros(h.shape[0], dtype=h.dtype, device=h.device)
        nonlinear = self.model.vector_field(t, h, x) - _apply(L, h)
        return _apply(E, h) + _apply(P, nonlinear)

    def hidden(self, h):
        return self.model.hidden(h)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, dt={self.dt}"


class RungeKuttaCell(AbstractCell):
    """A cell made by one explicit Runge–Kutta step of a continuous model, input held."""

    def __init__(self, model: AbstractContinuousRNN, method: solvers.ExplicitRungeKutta, dt: float):
        super().__init__(model.input_size, model.hidden_size, model.state_size)
        self.model, self.method, self.dt = model, method, dt

    def step(self, x, h):
        t = torch.zeros(h.shape[0], dtype=h.dtype, device=h.device)
        return self.method.step(lambda t, h: self.model.vector_field(t, h, x), t, h, self.dt)

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
    """
    if x.dim() != 3:
        raise ValueError(f"{owner}: expected x of shape (batch, T, channels), got {tuple(x.shape)}")
    B, T, C = x.shape
    observed = ~torch.isnan(x)
    if mask is not None:
        if mask.shape != x.shape:
            raise ValueError(
                f"{owner}: mask must have the shape of x {tuple(x.shape)}, got {tuple(mask.shape)}"
            )
        observed = observed & mask.bool()
    if times is None:
        times = torch.arange(T, dtype=x.dtype, device=x.device)
    times = times.to(x.dtype)
    if times.dim() == 1:
        if times.shape[0] != T:
            raise ValueError(f"{owner}: times has {times.shape[0]} entries but x has T={T}")
        times = times.expand(B, T)
    elif times.shape != (B, T):
        raise ValueError(
            f"{owner}: times must have shape ({T},) or ({B}, {T}), got {tuple(times.shape)}"
        )
    idx = torch.arange(T, device=x.device)[None, :, None].expand(B, T, C)
    last = torch.where(observed, idx, torch.full_like(idx, -1)).cummax(dim=1).values
    filled = torch.where(observed, x, torch.zeros_like(x))
    held = filled.gather(1, last.clamp_min(0))
    values = torch.where(last >= 0, held, torch.zeros_like(x))
    any_obs = observed.any(dim=2)  # (B, T)
    steps = torch.arange(1, T + 1, device=x.device).expand(B, T)
    lengths = torch.where(any_obs, steps, torch.zeros_like(steps)).max(dim=1).values.clamp_min(1)
    return values, times, observed, lengths


class SequenceModel(nn.Module):
    """Runs a model over a batch of sequences: ``forward(x, times=None, mask=None)``.

    Args:
        model: a continuous model (:class:`AbstractContinuousRNN`) or a cell.
        mode: ``"discrete"`` runs ``model.discretize(scheme, dt)`` (or the cell) once per
            observation; ``"continuous"`` solves the continuous model over the observation
            times with ``solver`` options (method, dt, rtol, atol, adjoint, backend).
        scheme: discretization scheme for the discrete mode of a continuous model.
        dt: its step.
        solver: options for :func:`solvers.solve` in continuous mode (default: dopri5).
        num_classes: size of the classification head on the final hidden state (optional).

    ``x`` is ``(batch, T, input_size)``; missing values are NaN or ``mask`` False and are
    held at the channel's last observation. ``times`` is ``(T,)`` or ``(batch, T)`` (default
    ``0, 1, …``). Returns ``output (batch, T, hidden_size)`` and ``h_n (batch, hidden_size)``,
    the hidden state at each sample's last observed time step (trailing padding ignored).
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
    ):
        super().__init__()
        if mode not in ("discrete", "continuous"):
            raise ValueError(
                f"SequenceModel: mode must be 'discrete' or 'continuous', got {mode!r}"
            )
        if mode == "continuous" and not isinstance(model, AbstractContinuousRNN):
            raise ValueError(
                f"SequenceModel: {type(model).__name__} is a discrete cell; continuous mode "
                "needs a continuous model"
            )
        self.model, self.mode, self.scheme, self.dt = model, mode, scheme, dt
        if mode == "discrete":
            _ = self.cell  # build it now, so that a bad scheme or dt fails here
        self.solver = dict(method="dopri5") if solver is None else dict(solver)
        like = next(model.parameters(), None)
        self.head = (
            None
            if num_classes is None
            else nn.Linear(
                model.hidden_size,
                num_classes,
                device=None if like is None else like.device,
                dtype=None if like is None else like.dtype,
            )
        )

    @property
    def hidden_size(self) -> int:
        return self.model.hidden_size

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

    def forward(
        self, x: torch.Tensor, times: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ):
        name = type(self).__name__
        values, t, _, lengths = prepare_sequence(x, times, mask, name)
        if values.shape[2] != self.model.input_size:
            raise ValueError(
                f"{name}: expected {self.model.input_size} input channels, got {values.shape[2]}"
            )
        if self.mode == "discrete":
            h = None
            states = []
            for xt in values.unbind(1):  # unbind: no per-step indexing of a large tensor
                h = self.cell(xt, h)
                states.append(h)
            states = torch.stack(states, dim=1)
            hidden = self.cell.hidden(states)
        else:
            # Output i is the state after the input held from t_i has acted, as in the
            # discrete mode: integrate one interval past the last observation.
            last_gap = (t[:, -1:] - t[:, -2:-1]) if t.shape[1] > 1 else torch.ones_like(t)
            t_ext = torch.cat([t, t[:, -1:] + last_gap], dim=1)
            x_ext = torch.cat([values, values[:, -1:]], dim=1)
            states = self.model.solve(x_ext, t_ext, **self.solver)[:, 1:]
            hidden = self.model.hidden(states)
        h_n = hidden.gather(1, (lengths - 1)[:, None, None].expand(-1, 1, hidden.shape[2]))[:, 0]
        return hidden, h_n

    def classify(
        self, x: torch.Tensor, times: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` from the final hidden state."""
        if self.head is None:
            raise ValueError("SequenceModel.classify: the model was built without num_classes")
        return self.head(self(x, times, mask)[1])

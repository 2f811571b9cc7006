"""τ-GRU: a gated recurrent network with weighted time-delay feedback.

Erichson, Lim, Mahoney, "Gated Recurrent Neural Networks with Weighted Time-Delay Feedback",
arXiv:2212.00228. With a delay of ``m`` steps (``h_k = 0`` for ``k < 0``)::

    u = tanh(W1 h_n + U1 x_n + b1)          z = tanh(W2 h_{n-m} + U2 x_n + b2)
    g = σ(W3 h_n + U3 x_n + b3)             a = σ(W4 h_n + U4 x_n + b4)
    h_{n+1} = (1 - g) ⊙ h_n + g ⊙ (u + a ⊙ z)

is the explicit Euler step (``Δt = 1``, ``τ = m``) of the delay equation
``dh/dt = g ⊙ (-h + u + a ⊙ z)`` where ``z`` reads ``h(t - τ)``.

- :class:`TauGRUCell`: the paper's cell; its state carries the delay buffer.
- :class:`TauGRU`: the continuous formulation (a ``solvers.DDE``); ``discretize(scheme, dt)``
  returns a :class:`TauGRUCell` for ``"euler"`` and a :class:`TauGRURungeKuttaCell` otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import solvers

from ._base import AbstractCell, AbstractContinuousRNN, check_step, hold_inputs, runge_kutta
from ._registry import ModelSpec, register_model

__all__ = ["TauGRU", "TauGRUCell", "TauGRURungeKuttaCell"]

# Dense output of the classical RK4 step at θ = 1/2 (the cubic continuous extension,
# Hairer–Nørsett–Wanner I, II.6): weights of k1..k4. Its error is O(dt^4), so the delayed
# values that RK4's half-step stages read keep the method fourth order.
_RK4_HALF = (5 / 24, 1 / 6, 1 / 6, -1 / 24)


def _make_projections(module, input_size, hidden_size, bias, device, dtype):
    H = hidden_size
    kw = dict(device=device, dtype=dtype)
    # rows of input_proj: [U1; U2; U3; U4] (u, z, g, a) with biases b1..b4;
    # hidden_proj: [W1; W3; W4] (u, g, a) on h_n; delayed_proj: W2 on h_{n-m}.
    module.input_proj = nn.Linear(input_size, 4 * H, bias=bias, **kw)
    module.hidden_proj = nn.Linear(H, 3 * H, bias=False, **kw)
    module.delayed_proj = nn.Linear(H, H, bias=False, **kw)


def _reset(module):
    # as torch.nn.GRUCell: every weight and bias uniform in ±1/sqrt(hidden_size)
    bound = 1.0 / math.sqrt(module.hidden_size)
    for p in module.parameters():
        if p.device.type != "meta":
            nn.init.uniform_(p, -bound, bound)


def _terms(module, x, h, h_delayed, x_delayed):
    """``(g, v)`` with ``dh/dt = g ⊙ (v - h)``, ``v = α u + β a ⊙ z``."""
    px = module.input_proj(x)
    ux, zx, gx, ax = px.chunk(4, dim=-1)
    if x_delayed is not None:
        _, zx, _, ax = module.input_proj(x_delayed).chunk(4, dim=-1)
    uh, gh, ah = module.hidden_proj(h).chunk(3, dim=-1)
    u = torch.tanh(uh + ux)
    z = torch.tanh(module.delayed_proj(h_delayed) + zx)
    g = torch.sigmoid(gh + gx)
    a = torch.sigmoid(ah + ax)
    return g, module.alpha * u + module.beta * (a * z)


def _check_weight(owner, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")
    return float(value)


class TauGRUCell(AbstractCell):
    """The τ-GRU cell (Erichson, Lim, Mahoney 2022), with ``torch.nn.GRUCell``'s conventions.

    Args:
        input_size: features of ``x``.
        hidden_size: features of ``h``.
        delay: ``m ≥ 1``, the delay in steps: ``z`` reads ``h_{n-m}`` (zero before the start).
        bias: learn ``b1..b4``.
        gate_dt: when given, ``g`` is multiplied by it (the authors' later code; this is the
            explicit Euler step of :class:`TauGRU` with ``dt = gate_dt``). ``None``: the paper.
        delayed_input: ``a`` and ``z`` read ``x_{n-m}`` instead of ``x_n`` (zero before the
            start; the authors' later code). ``False``: the paper.
        alpha, beta: weights of ``u`` and ``a ⊙ z``: ``h_{n+1} = (1 - g) h_n + g (α u + β a z)``.
            ``1.0``: the paper.

    The state ``hx`` is ``(batch, state_size)``: the ring buffer ``[h_n, h_{n-1}, …, h_{n-m}]``
    flattened, followed by ``[x_{n-1}, …, x_{n-m}]`` when ``delayed_input``;
    ``state_size = (m + 1) hidden_size (+ m input_size)``. :meth:`hidden` reads ``h_n``.
    Zeros (the default ``hx``) is the paper's start: ``h_0 = 0`` and a zero past.

    Steps and irregular times: the cell's step is :attr:`dt` (``gate_dt``, or 1 for the
    paper's cell) and its delay ``τ = delay · dt`` in time units. ``forward`` keeps the ring
    buffer, so its per-sample ``dt`` must be that step. :meth:`run_sequence` takes
    per-sample steps ``dt (batch, T)``: each sample steps by its own gap (the gate scaled by
    the step, the explicit Euler step of :class:`TauGRU`) and ``z`` reads the state held at
    time ``t - τ`` from the sample's history (the latest state at or before it; the zero
    past before the start). With every step equal to :attr:`dt` this is the ring buffer's
    ``h_{n-m}``, the paper's cell.
    """

    takes_dt = True

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        delay: int,
        bias: bool = True,
        gate_dt: float | None = None,
        delayed_input: bool = False,
        alpha: float = 1.0,
        beta: float = 1.0,
        device=None,
        dtype=None,
    ):
        name = type(self).__name__
        if isinstance(delay, bool) or not isinstance(delay, int) or delay < 1:
            raise ValueError(f"{name}: delay must be a positive number of steps, got {delay!r}")
        state = (delay + 1) * hidden_size + (delay * input_size if delayed_input else 0)
        super().__init__(input_size, hidden_size, state)
        if gate_dt is not None and not (_check_weight(name, "gate_dt", gate_dt) > 0):
            raise ValueError(f"{name}: gate_dt must be positive, got {gate_dt!r}")
        self.delay, self.gate_dt, self.delayed_input = delay, gate_dt, bool(delayed_input)
        self.alpha = _check_weight(name, "alpha", alpha)
        self.beta = _check_weight(name, "beta", beta)
        _make_projections(self, input_size, hidden_size, bias, device, dtype)
        _reset(self)

    @property
    def dt(self) -> float:
        """The step: ``gate_dt``, or 1 for the paper's cell."""
        return 1.0 if self.gate_dt is None else self.gate_dt

    def step(self, x, state, dt=None):
        _check_nominal(self, dt)
        H, m = self.hidden_size, self.delay
        hbuf = state[:, : (m + 1) * H]
        h, h_delayed = hbuf[:, :H], hbuf[:, m * H :]
        x_delayed = None
        if self.delayed_input:
            xbuf = state[:, (m + 1) * H :]
            x_delayed = xbuf[:, (m - 1) * self.input_size :]
        g, v = _terms(self, x, h, h_delayed, x_delayed)
        if self.gate_dt is not None:
            g = self.gate_dt * g
        h_next = (1 - g) * h + g * v
        parts = [h_next, hbuf[:, : m * H]]
        if self.delayed_input:
            parts += [x, xbuf[:, : (m - 1) * self.input_size]]
        return torch.cat(parts, dim=-1)

    def run_sequence(self, x, dt=None, hx=None):
        """The hidden outputs ``(batch, T, hidden_size)`` over ``x (batch, T, input_size)``.

        All inputs are projected by one matrix product before the loop; the history of
        states is a list (nothing is copied per step); ``dt (batch, T)``: per-sample steps,
        the delayed state read from the history at ``t - τ`` (see the class docstring).
        """
        B, T, C = x.shape
        H, m = self.hidden_size, self.delay
        if hx is None:
            hx = self.initial_state(B, device=x.device, dtype=x.dtype)
        elif hx.shape != (B, self.state_size):
            raise ValueError(
                f"{type(self).__name__}: expected hx of shape {(B, self.state_size)}, got "
                f"{tuple(hx.shape)}"
            )
        # history[k]: the state m - k steps before the first input; then h_1, h_2, ...
        history = list(hx[:, : (m + 1) * H].reshape(B, m + 1, H).flip(1).unbind(1))
        past = None
        if self.delayed_input:
            # z and a read the input m steps back: zero inputs before the start
            past = hx[:, (m + 1) * H :].reshape(B, m, C).flip(1)
        w_h, w_d = self.hidden_proj.weight, self.delayed_proj.weight
        if dt is None:
            # uniform steps: every input projected by one product, time-major with the
            # columns [u, g, a, z], and the whole loop as one autograd node (_EulerScan)
            order = torch.cat([torch.arange(H), torch.arange(2 * H, 4 * H), torch.arange(H, 2 * H)])
            order = order.to(x.device)
            # u and z enter as 2·pre (tanh(p) = 2σ(2p) - 1: one sigmoid for all gates)
            double = torch.ones(4 * H, 1, dtype=x.dtype, device=x.device)
            double[:H] = double[3 * H :] = 2.0
            w_in = self.input_proj.weight[order] * double
            b_in = (
                None if self.input_proj.bias is None else self.input_proj.bias[order] * double[:, 0]
            )
            # x is copied time-major (C columns), not the projections (4H columns)
            xt = x.transpose(0, 1).reshape(T * B, C)
            px = F.linear(xt, w_in, b_in).view(T, B, 4 * H)
            if past is not None:
                before = F.linear(past.transpose(0, 1), w_in, b_in)  # (m, B, 4H)
                delayed = torch.cat([before, px], dim=0)[:T]
                a_or_z = torch.arange(4 * H, device=x.device) >= 2 * H
                px = torch.where(a_or_z, delayed, px)
            init = torch.stack(history, dim=1)
            scale = self.gate_dt or 1.0
            w_h2, w_d2 = w_h * double[: 3 * H], 2.0 * w_d
            return _EulerScan.apply(px, init, w_h2, w_d2, scale, self.alpha, self.beta)
        projected = F.linear(x, self.input_proj.weight, self.input_proj.bias).unbind(1)
        delayed_in = None
        if past is not None:
            before = F.linear(past, self.input_proj.weight, self.input_proj.bias).unbind(1)
            delayed_in = [*before, *projected]
        reads = _held_reads(dt, m, self.dt)
        out = []
        for n, (px, step) in enumerate(zip(projected, dt.unbind(1))):
            h = history[-1]
            h_delayed = _pick(history, reads[n])
            if delayed_in is not None:
                pd = _pick(delayed_in, reads[n])
                px = torch.cat(
                    [px[:, :H], pd[:, H : 2 * H], px[:, 2 * H : 3 * H], pd[:, 3 * H :]], 1
                )
            ux, zx, gx, ax = px.chunk(4, dim=1)
            uh, gh, ah = F.linear(h, w_h).chunk(3, dim=1)
            u = torch.tanh(uh + ux)
            z = torch.tanh(F.linear(h_delayed, w_d) + zx)
            g = step[:, None] * torch.sigmoid(gh + gx)
            a = torch.sigmoid(ah + ax)
            h = h + g * (self.alpha * u + self.beta * (a * z) - h)
            history.append(h)
            out.append(h)
        return torch.stack(out, dim=1)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}, delay={self.delay}"
        if self.gate_dt is not None:
            s += f", gate_dt={self.gate_dt}"
        if self.delayed_input:
            s += ", delayed_input=True"
        if (self.alpha, self.beta) != (1.0, 1.0):
            s += f", alpha={self.alpha}, beta={self.beta}"
        return s


_SEQUENCE_HINT = (
    "For irregular gaps, run the sequence (TauGRUCell.run_sequence, or a SequenceModel), "
    "which reads the delayed state at t - τ from the history"
)
_EULER_HINT = (
    "Its Runge–Kutta stages read the buffer at fixed offsets: for irregular times use "
    "scheme='euler' (which reads the delayed state at t - τ from the history) or "
    "mode='continuous'"
)


class _EulerScan(torch.autograd.Function):
    """τ-GRU's Euler cell over a whole sequence with uniform steps, as one autograd node.

    ``forward(px (T, B, 4H), init (B, m + 1, H), W_h (3H, H), W_d (H, H), scale, alpha,
    beta)``: ``px`` the input projections of every step, time-major, columns ``[u, g, a, z]``
    with ``u`` and ``z`` doubled (and the rows of ``W_h``, ``W_d`` that make them)
    (each step's block contiguous, so that the per-step products read it cheaply); ``init`` the
    initial history ``[h_{-m}, …, h_0]``, ``W_h = [W1; W3; W4]`` acting on ``h_n`` and
    ``W_d = W2`` on ``h_{n-m}``; returns ``h_1 … h_T`` ``(B, T, H)``. The backward pass runs
    the recurrence backwards once, without an autograd graph, and computes the gradients of
    ``W_h`` and ``W_d`` (shared by every step) as one matrix product each over all steps,
    after the loop, instead of one small product per step (PERFORMANCE.md). ``u`` and
    ``z`` enter as twice their pre-activations, ``tanh(p) = 2σ(2p) - 1``, so that one
    sigmoid computes every gate of a step (tanh is about four times slower than the sigmoid
    on the CPU); the result equals the cell's to round-off.
    """

    @staticmethod
    def forward(ctx, px, init, w_h, w_d, scale: float, alpha: float, beta: float):
        T, B = px.shape[:2]
        m1, H = init.shape[1], init.shape[2]
        # time-major buffers written in place, step by step: states[k] is h_{k-m}
        states = px.new_empty(T + m1, B, H)
        states[:m1] = init.transpose(0, 1)
        # what the backward pass needs, computed while it is in cache: with gh = dL/dh_{n+1},
        # dL/dp = gh * slopes (p: the sigmoid's inputs [p_u, p_g, p_a, p_z]) and
        # dL/dh_n = gh * keep + dL/d[p_u, p_g, p_a] @ W_h
        train = any(ctx.needs_input_grad[:4])
        slopes = px.new_empty(T, B, 4 * H) if train else None
        keep = px.new_empty(T, B, H) if train else None
        pre = px.new_empty(B, 4 * H)
        w_h_t, w_d_t = w_h.T, w_d.T
        for n in range(T):
            h = states[m1 - 1 + n]
            # [u, g, a] read h_n, z reads h_{n-m}: two products, no zero blocks
            torch.addmm(px[n, :, : 3 * H], h, w_h_t, out=pre[:, : 3 * H])
            torch.addmm(px[n, :, 3 * H :], states[n], w_d_t, out=pre[:, 3 * H :])
            s = torch.sigmoid(pre)
            su, g0, a, sz = s.chunk(4, dim=1)
            u, z = 2 * su - 1, 2 * sz - 1
            v = alpha * u + beta * (a * z)
            g = g0 if scale == 1.0 else scale * g0
            change = v - h
            torch.add(h, g * change, out=states[m1 + n])
            if not train:
                continue
            # σ' = s (1 - s); dh/d p_u = 2 α g σ'_u, dh/d p_g = scale (v - h) σ'_g,
            # dh/d p_a = β g z σ'_a, dh/d p_z = 2 β g a σ'_z
            g2 = 2 * g
            factor = torch.cat([alpha * g2, scale * change, beta * (g * z), beta * (g2 * a)], dim=1)
            torch.mul(s - s * s, factor, out=slopes[n])
            torch.sub(1, g, out=keep[n])
        ctx.save_for_backward(states, slopes, keep, w_h, w_d)
        ctx.m = m1 - 1
        return states[m1:].transpose(0, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        states, slopes, keep, w_h, w_d = ctx.saved_tensors
        m = ctx.m
        B, T, H = grad_out.shape
        h = states[m : m + T]  # h_n, (T, B, H)
        outs = grad_out.unbind(1)
        d_px = grad_out.new_empty(T, B, 4 * H)  # [u, g, a, z], written step by step
        pending: dict[int, torch.Tensor] = {}  # gradients of h_{n-m} from the delayed reads
        carry = torch.zeros_like(outs[0])
        for n in range(T - 1, -1, -1):
            gh = outs[n] + carry
            extra = pending.pop(m + 1 + n, None)
            if extra is not None:
                gh = gh + extra
            torch.mul(gh[:, None], slopes[n].view(B, 4, H), out=d_px[n].view(B, 4, H))
            carry = torch.addmm(gh * keep[n], d_px[n, :, : 3 * H], w_h)
            back = torch.mm(d_px[n, :, 3 * H :], w_d)
            pending[n] = pending[n] + back if n in pending else back
        d_init = [pending.get(k, torch.zeros_like(carry)) for k in range(m + 1)]
        d_init[m] = d_init[m] + carry
        flat = d_px.view(T * B, 4 * H)
        d_w_h = flat[:, : 3 * H].T @ h.reshape(T * B, H)
        d_w_d = flat[:, 3 * H :].T @ states[:T].reshape(T * B, H)  # h_{n-m}
        return d_px, torch.stack(d_init, dim=1), d_w_h, d_w_d, None, None, None


def _check_nominal(cell, dt, hint: str = _SEQUENCE_HINT) -> None:
    """A ValueError unless ``dt`` is ``None`` or the cell's own step everywhere: a ring
    buffer holds states one step apart."""
    if dt is None or bool((dt == cell.dt).all()):
        return
    i = tuple(int(v) for v in (dt != cell.dt).nonzero()[0])
    at = ", ".join(str(v) for v in i)
    raise ValueError(
        f"{type(cell).__name__}: its state holds the last {cell.delay} states one step "
        f"dt = {cell.dt} apart, so a step must be {cell.dt}; got dt[{at}] = {dt[i].item()}. " + hint
    )


def _held_reads(dt: torch.Tensor, m: int, nominal: float) -> list[list[int]]:
    """For per-sample steps ``dt (batch, T)``: at step ``n``, the index into the history
    list (``m + 1`` initial states ``nominal`` apart, then one per step) of the latest state
    at or before ``t_n - τ``, ``τ = m · nominal``, per sample (``[T][batch]`` ints).

    Times are summed in float64 and compared with a relative tolerance of 1e-9, so that
    steps equal to ``nominal`` read exactly ``h_{n-m}``."""
    d = dt.detach().to(torch.float64)
    B, T = d.shape
    u = torch.cat([d.new_zeros(B, 1), d.cumsum(dim=1)], dim=1)  # (B, T + 1): state times
    start = -nominal * torch.arange(m, 0, -1, dtype=torch.float64, device=d.device)
    times = torch.cat([start.expand(B, m), u], dim=1)  # the history's times
    tau = m * nominal
    query = u[:, :T] - tau
    query = query + 1e-9 * torch.maximum(u[:, :T].abs(), torch.full_like(query, tau))
    index = torch.searchsorted(times.contiguous(), query.contiguous(), right=True) - 1
    return index.clamp_min(0).T.tolist()


def _pick(history: list[torch.Tensor], index: list[int]) -> torch.Tensor:
    """Per sample ``b``, ``history[index[b]][b]``: one tensor when the batch agrees."""
    first = index[0]
    if all(i == first for i in index):
        return history[first]
    distinct = sorted(set(index))
    position = {j: k for k, j in enumerate(distinct)}
    stacked = torch.stack([history[j] for j in distinct])  # (K, batch, ...)
    rows = torch.tensor([position[i] for i in index], device=stacked.device)
    return stacked[rows, torch.arange(len(index), device=stacked.device)]


class TauGRU(AbstractContinuousRNN):
    """The continuous τ-GRU: ``dh/dt = g ⊙ (-h + α u + β a ⊙ z)``, ``z`` reading ``h(t - τ)``.

    Args:
        input_size, hidden_size: as :class:`TauGRUCell`.
        delay: ``τ > 0`` in time units (with unit steps, the number of steps of the cell).
        bias, delayed_input, alpha, beta: as :class:`TauGRUCell` (``a`` and ``z`` read
            ``x(t - τ)``, zero before the first observation, when ``delayed_input``).

    The gates are those of :class:`TauGRUCell` evaluated at ``h(t)``, ``h(t - τ)``, ``x(t)``;
    the history is ``h(t) = 0`` before the first observation and ``h(t0) = 0`` by default.
    :meth:`problem` is a ``solvers.DDE``: any Runge–Kutta method of ``solvers`` solves it,
    with the ``"direct"`` or ``"checkpoint"`` adjoint (``"backsolve"`` is rejected by
    ``solvers`` for delay equations), native backend only.
    """

    problem_type = "dde"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        delay: float = 10.0,
        bias: bool = True,
        delayed_input: bool = False,
        alpha: float = 1.0,
        beta: float = 1.0,
        device=None,
        dtype=None,
    ):
        super().__init__(input_size, hidden_size)
        name = type(self).__name__
        if not (_check_weight(name, "delay", delay) > 0):
            raise ValueError(f"{name}: delay must be positive, got {delay!r}")
        self.bias, self.delayed_input = bool(bias), bool(delayed_input)
        self.alpha = _check_weight(name, "alpha", alpha)
        self.beta = _check_weight(name, "beta", beta)
        _make_projections(self, input_size, hidden_size, bias, device, dtype)
        _reset(self)
        factory = dict(device=device, dtype=dtype or torch.get_default_dtype())
        self.register_buffer("delay", torch.tensor([float(delay)], **factory))

    def vector_field(self, t, h, x, h_delayed=None, x_delayed=None):
        """``dh/dt`` for ``h, h_delayed (batch, hidden_size)``, ``x, x_delayed (batch,
        input_size)``; ``x_delayed`` is used only when ``delayed_input``."""
        if h_delayed is None:
            raise ValueError("TauGRU.vector_field: a delay equation needs h_delayed = h(t - τ)")
        g, v = _terms(self, x, h, h_delayed, x_delayed if self.delayed_input else None)
        return g * (v - h)

    def problem(
        self, inputs: Callable[[torch.Tensor], torch.Tensor], t0: torch.Tensor | None = None
    ) -> solvers.DDE:
        """``solvers.DDE`` with history 0; ``t0 (batch,)`` is the first observation time, before
        which the delayed input is zero (``delayed_input`` only; without it the input held
        at ``t0`` is read)."""
        tau = self.delay

        def f(t, h, h_delayed):
            t = t.reshape(t.shape[0]) if t.dim() > 1 else t  # (batch, 1) from the solvers
            x_delayed = None
            if self.delayed_input:
                s = t - tau.detach()
                x_delayed = inputs(s)
                if t0 is not None:
                    x_delayed = torch.where((s >= t0)[:, None], x_delayed, 0.0)
            return self.vector_field(t, h, inputs(t), h_delayed[:, 0], x_delayed)

        return solvers.DDE(f, delays=tau, history=0.0)

    def solve(self, x, times, h0=None, **solver_options):
        """As :meth:`AbstractContinuousRNN.solve`, with the delayed input zero before
        ``times[..., 0]``."""
        B = x.shape[0]
        t = times if times.dim() == 2 else times.expand(B, -1)
        if h0 is None:
            h0 = torch.zeros(B, self.state_size, device=x.device, dtype=x.dtype)
        problem = self.problem(hold_inputs(x, t), t0=t[:, 0].detach())
        return solvers.solve(problem, h0, t, **solver_options).ys

    def default_solver(self, dt: float) -> dict:
        """Fixed-step ``rk4`` with step ``dt / 4``, on the observation grid (each gap is cut
        into whole steps, so every step starts at a jump of the held input). ``dopri5``'s
        adaptive steps do not land on those jumps for a delay equation yet (the solvers'
        one-loop core will make them), which costs it its accuracy there."""
        return dict(method="rk4", dt=dt / 4)

    def delay_steps(self, dt: float) -> int:
        """``m = τ / dt``; a ValueError unless the delay is a whole number ``≥ 1`` of steps."""
        tau = float(self.delay.item())
        m = round(tau / dt)
        if m < 1 or abs(m * dt - tau) > 1e-9 * max(tau, 1.0):
            raise ValueError(
                f"{type(self).__name__}.discretize: the delay τ = {tau} must be a whole number "
                f"(≥ 1) of steps dt = {dt}; choose dt = τ / m"
            )
        return m

    def discretize(self, scheme: str = "euler", dt: float = 1.0) -> AbstractCell:
        """The cell of ``scheme`` with step ``dt`` (``τ`` must be a multiple ``m`` of ``dt``).

        ``"euler"`` gives :class:`TauGRUCell` with ``delay = m`` and ``gate_dt = dt``
        (``None`` when ``dt = 1``: the paper's cell), sharing this module's parameters. Other
        fixed-step explicit Runge–Kutta schemes (``midpoint``, ``heun``, ``rk4``) give a
        :class:`TauGRURungeKuttaCell`.
        """
        name = type(self).__name__
        dt = check_step(f"{name}.discretize", dt)
        method = runge_kutta(scheme)
        if method is None:
            raise ValueError(
                f"{name}.discretize: unknown scheme {scheme!r}; this model accepts "
                f"{', '.join(self.schemes())}"
            )
        m = self.delay_steps(float(dt))
        if scheme == "euler":
            p = self.hidden_proj.weight
            cell = TauGRUCell(
                self.input_size,
                self.hidden_size,
                m,
                bias=self.bias,
                gate_dt=None if dt == 1 else float(dt),
                delayed_input=self.delayed_input,
                alpha=self.alpha,
                beta=self.beta,
                device="meta",
                dtype=p.dtype,
            )
            cell.input_proj = self.input_proj
            cell.hidden_proj = self.hidden_proj
            cell.delayed_proj = self.delayed_proj
            return cell
        return TauGRURungeKuttaCell(self, method.tableau, float(dt), m)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}, delay={float(self.delay.item())}"
        if self.delayed_input:
            s += ", delayed_input=True"
        if (self.alpha, self.beta) != (1.0, 1.0):
            s += f", alpha={self.alpha}, beta={self.beta}"
        return s


class TauGRURungeKuttaCell(AbstractCell):
    """One explicit Runge–Kutta step of :class:`TauGRU` (method of steps), input held.

    Built by ``TauGRU.discretize(scheme, dt)`` with ``τ = m dt``. A stage at node ``c`` reads
    ``h(t_n - τ + c dt)``: ``h_{n-m}`` (``c = 0``), ``h_{n-m+1}`` (``c = 1``), or for
    ``c = 1/2`` the half-step value ``h_{n-m+1/2}`` that step ``n - m`` stored: the cubic
    dense output for ``rk4`` (fourth order), the tableau's interpolant where it has one,
    otherwise the mean of the two ends (second order: methods up to order 2 only). The
    delayed input (``delayed_input``) is ``x_{n-m}``, held over the step.

    The state is ``[h_n, …, h_{n-m}]``, then ``[x_{n-1}, …, x_{n-m}]`` (``delayed_input``),
    then ``[h_{n-1/2}, …, h_{n-m+1/2}]`` (tableaus with a node at 1/2), flattened.

    The stages read the buffer at fixed offsets, so every step must be :attr:`dt`: a
    per-sample ``dt`` that differs (irregular times) is a ValueError naming the step. For
    irregular times use ``scheme="euler"`` (:class:`TauGRUCell`, which reads the delayed state
    from the history at ``t - τ``) or continuous mode. The stages are this cell's own: the
    solvers' delay-equation steppers are not public yet.
    """

    takes_dt = True

    def __init__(self, model: TauGRU, tableau: solvers.ButcherTableau, dt: float, delay: int):
        H, C, m = model.hidden_size, model.input_size, delay
        nodes = (0.0, *tableau.c)
        bad = [c for c in nodes if c not in (0.0, 0.5, 1.0)]
        if bad:
            raise ValueError(
                f"TauGRU.discretize: scheme {tableau.name!r} has a stage at c = {bad[0]}; "
                "τ-GRU cells take explicit Runge–Kutta schemes with nodes in {0, 1/2, 1}"
            )
        half = 0.5 in nodes
        if half:
            if tableau.name == "rk4":
                self_half = _RK4_HALF
            elif tableau.interpolant is not None:
                self_half = tuple(
                    sum(B * 0.5 ** (k + 1) for k, B in enumerate(row))
                    for row in tableau.interpolant
                )
            elif tableau.order <= 2:
                self_half = None
            else:
                raise ValueError(
                    f"TauGRU.discretize: scheme {tableau.name!r} (order {tableau.order}) needs "
                    "a dense output at half steps, which it does not provide"
                )
        state = (m + 1) * H + (m * C if model.delayed_input else 0) + (m * H if half else 0)
        super().__init__(C, H, state)
        self.model, self.tableau, self.dt, self.delay = model, tableau, dt, m
        self._half = half
        self._half_weights = self_half if half else None

    def step(self, x, state, dt=None):
        _check_nominal(self, dt, _EULER_HINT)
        H, C, m, dt = self.hidden_size, self.input_size, self.delay, self.dt
        tab, model = self.tableau, self.model
        hbuf, rest = state[:, : (m + 1) * H], state[:, (m + 1) * H :]
        xbuf = None
        if model.delayed_input:
            xbuf, rest = rest[:, : m * C], rest[:, m * C :]
        h = hbuf[:, :H]
        x_delayed = None if xbuf is None else xbuf[:, (m - 1) * C :]
        delayed = {0.0: hbuf[:, m * H :], 1.0: hbuf[:, (m - 1) * H : m * H]}
        if self._half:
            delayed[0.5] = rest[:, (m - 1) * H :]
        ks = []
        for i, c in enumerate((0.0, *tab.c)):
            y = h
            if i > 0:
                y = h + dt * sum(a * k for a, k in zip(tab.a[i - 1], ks) if a != 0.0)
            ks.append(model.vector_field(None, y, x, delayed[c], x_delayed))
        h_next = h + dt * sum(b * k for b, k in zip(tab.b, ks) if b != 0.0)
        parts = [h_next, hbuf[:, : m * H]]
        if xbuf is not None:
            parts += [x, xbuf[:, : (m - 1) * C]]
        if self._half:
            if self._half_weights is None:
                mid = 0.5 * (h + h_next)
            else:
                mid = h + dt * sum(w * k for w, k in zip(self._half_weights, ks) if w != 0.0)
            parts += [mid, rest[:, : (m - 1) * H]]
        return torch.cat(parts, dim=-1)

    def hidden(self, h):
        return h[..., : self.hidden_size]

    def run_sequence(self, x, dt=None, hx=None):
        _check_nominal(self, dt, _EULER_HINT)  # once for the whole sequence
        return super().run_sequence(x, None, hx)

    def extra_repr(self):
        return f"TauGRU, scheme={self.tableau.name!r}, dt={self.dt}, delay={self.delay}"


register_model(
    ModelSpec(
        "tau_gru",
        TauGRU,
        summary="τ-GRU, gated RNN with weighted time-delay feedback (Erichson et al. 2022)",
    )
)

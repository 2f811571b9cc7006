"""The ``"diffrax"`` backend: an ODE or CDE with a PyTorch vector field, solved by diffrax (JAX).

diffrax runs its own loop, step-size controller and adjoints in JAX; the vector field stays
the problem's PyTorch function, called through ``jax.pure_callback`` with a custom
vector-Jacobian product that PyTorch's autograd computes. The whole solve is one PyTorch
autograd node, so gradients reach ``y0``, the vector field's parameters and the tensors a
CDE's path is built from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import sys
import threading

import numpy as np
import torch

from ._adjoint import BacksolveAdjoint, CheckpointAdjoint, DirectAdjoint
from ._backends import AbstractBackend, Supports, register_backend
from ._controller import fixed_schedule, refine_grid
from ._integrate import vjp
from ._solution import Solution, Stats, Status
from ._stepper import get_method

__all__ = ["DiffraxBackend"]

# the methods of this package and diffrax's class of the same method; "rk4" is built from
# this package's tableau (diffrax has no classical RK4)
_METHODS = {
    "euler": "Euler",
    "midpoint": "Midpoint",
    "heun": "Heun",
    "rk4": None,
    "bosh3": "Bosh3",
    "dopri5": "Dopri5",
    "tsit5": "Tsit5",
}

# diffrax's results, in the words of Status; any other result counts as NONFINITE
_RESULTS = {
    "successful": Status.SUCCESS,
    "max_steps_reached": Status.MAX_STEPS,
    "dt_min_reached": Status.DT_UNDERFLOW,
    "nonfinite": Status.NONFINITE,
}


class DiffraxBackend(AbstractBackend):
    """diffrax's ``diffeqsolve`` with the problem's PyTorch vector field.

    ODE and CDE problems on one time grid shared by the batch; the batch is one state for
    diffrax, so an adaptive solve takes one step size for the whole batch and a failure
    marks every sample. Adjoints: ``"direct"`` and ``"checkpoint"`` differentiate diffrax's
    loop (``RecursiveCheckpointAdjoint``; ``"direct"`` keeps every step of a fixed-step
    solve), ``"backsolve"`` is diffrax's ``BacksolveAdjoint``. Fixed-step methods take the
    same steps as the native backend (``StepTo``); adaptive ones use diffrax's
    ``PIDController``, with the problem's jump times as ``jump_ts``.

    The vector field runs in PyTorch on the device of ``y0``; the state crosses to the host
    at every evaluation, so this backend is for checking results against an independent
    solver, not for speed. Float64 solves switch JAX to 64-bit while they run.
    """

    name = "diffrax"
    supports = Supports(
        problems=("ODE", "CDE"),
        adjoints=("direct", "checkpoint", "backsolve"),
        per_sample_times=False,
        methods=tuple(_METHODS),
    )

    def solve(self, problem, y0, t, f0, cfg, adjoint):
        method, dt, rtol, atol, max_steps = cfg.method, cfg.dt, cfg.rtol, cfg.atol, cfg.max_steps
        adaptive = not cfg.controller.planned
        try:
            import diffrax  # noqa: F401
            import jax  # noqa: F401
        except ImportError as e:
            raise ImportError(
                f"backend 'diffrax' needs jax and diffrax ({e}): pip install \"ctrnn[jax]\""
            ) from e
        if t.requires_grad:
            raise ValueError(
                "backend 'diffrax' does not differentiate with respect to t (t requires "
                "grad); backend='native' does"
            )
        if _builtin_tableau(method.name) is not getattr(method, "tableau", None):
            raise ValueError(
                f"backend 'diffrax' has no method {method.name!r}; it offers "
                f"{', '.join(_METHODS)}; backend='native' takes any tableau"
            )
        if cfg.controller.planned and cfg.controller.step_times() is not None:
            raise ValueError("backend 'diffrax' takes no StepTo controller here; use dt")
        if y0.dtype not in (torch.float32, torch.float64):
            raise ValueError(
                f"backend 'diffrax' solves in float32 or float64, got y0 of dtype {y0.dtype}"
            )
        jumps = problem.jump_times()
        if jumps is not None and jumps.ndim != 1:
            raise ValueError(
                f"backend 'diffrax' takes jump times shared by the batch, got shape "
                f"{tuple(jumps.shape)}; per-sample jump times are handled by backend='native'"
            )
        if isinstance(adjoint, BacksolveAdjoint):
            params = adjoint.params if adjoint.params is not None else problem.parameters()
        else:
            params = problem.parameters()
        params = tuple(p for p in params if p.requires_grad)
        np_dtype = np.float64 if y0.dtype == torch.float64 else np.float32
        steps = None
        if not adaptive:  # the native steps: each output interval split at its jumps
            refined = refine_grid(t.detach(), jumps)
            steps = _step_times(t.detach() if refined is None else refined[0], dt)
        spec = _Spec(
            method=method.name,
            adaptive=adaptive,
            rtol=float(rtol),
            atol=float(atol),
            dt0=cfg.controller.first_step if adaptive else None,
            adjoint=_adjoint_spec(adjoint, method, dt, steps),
            max_steps=int(max_steps),
            jumps=jumps is not None,
            x64=np_dtype is np.float64,
        )
        run = _Run(problem, y0, params, spec)
        host = dict(
            ts=t.detach().cpu().numpy().astype(np_dtype),
            steps=None if steps is None else steps.cpu().numpy().astype(np_dtype),
            jumps=None if jumps is None else jumps.detach().cpu().numpy().astype(np_dtype),
        )
        ys_t = _Solve.apply(run, host, y0, *params)  # (T, batch, *state)
        ys = ys_t.movedim(0, 1)
        code, name, n_acc, n_rej = run.outcome
        B = y0.shape[0]
        status = torch.full((B,), int(code), dtype=torch.long, device=y0.device)
        detail = "" if code == Status.SUCCESS else f" (diffrax: {name})"
        if code != Status.SUCCESS:
            ys = torch.where(torch.isinf(ys), float("nan"), ys)  # outputs it never reached
        else:
            bad = ~torch.isfinite(ys.detach().flatten(2)).all(2).all(1)
            status = torch.where(bad, int(Status.NONFINITE), status)
        acc = torch.full((B,), n_acc, dtype=torch.long, device=y0.device)
        rej = torch.full((B,), n_rej, dtype=torch.long, device=y0.device)
        return Solution(t, ys, status, Stats(run.calls + 1, acc, rej), detail)


def _step_times(t: torch.Tensor, dt: float) -> torch.Tensor:
    """The native fixed steps over the output times ``t`` (``fixed_schedule``'s, uncapped:
    diffrax applies ``max_steps`` itself), as ``(N + 1,)`` step boundaries."""
    sched = fixed_schedule(t[None], dt, sys.maxsize)
    return torch.cat([torch.stack(sched.ts)[:, 0], t[-1:]])


def _builtin_tableau(name: str):
    """The tableau of the built-in method ``name`` (None when there is none)."""
    from ._rk import ExplicitRungeKutta

    if name not in _METHODS:
        return None
    m = get_method(name)
    return m.tableau if isinstance(m, ExplicitRungeKutta) else None


def _adjoint_spec(adjoint, method, dt, steps) -> tuple:
    """A hashable description of how diffrax differentiates the solve."""
    n = None if steps is None else steps.shape[0] - 1
    if isinstance(adjoint, DirectAdjoint):
        return ("recursive", n)  # a checkpoint per step: nothing recomputed
    if isinstance(adjoint, CheckpointAdjoint):
        if n is None:
            return ("recursive", None)  # diffrax's binomial checkpointing
        every = adjoint.every or max(1, math.isqrt(n))
        return ("recursive", max(1, -(-n // every)))
    back = method if adjoint.method is None else get_method(adjoint.method)
    if _builtin_tableau(back.name) is not getattr(back, "tableau", None):
        raise ValueError(
            f"backend 'diffrax' has no method {back.name!r} for the backward solve; it offers "
            f"{', '.join(_METHODS)}"
        )
    if back.adaptive and adjoint.dt is None and dt is None:
        return ("backsolve", back.name, None, adjoint.rtol, adjoint.atol)
    step = adjoint.dt if adjoint.dt is not None else dt
    if step is None:
        raise ValueError(
            f"BacksolveAdjoint: the backward method {back.name!r} is fixed-step; pass dt to "
            "BacksolveAdjoint"
        )
    return ("backsolve", back.name, float(step), None, None)


@dataclasses.dataclass(frozen=True)
class _Spec:
    """What the compiled JAX functions depend on besides the shapes of their arguments."""

    method: str
    adaptive: bool
    rtol: float
    atol: float
    dt0: float | None
    adjoint: tuple
    max_steps: int
    jumps: bool
    x64: bool


# ---------------------------------------------------------------------------------------------
# The PyTorch side: what the callbacks evaluate

_LOCK = threading.RLock()
_ACTIVE: list = [None]  # the run whose vector field the callbacks evaluate (JAX calls them
# from its own threads, so this is a module-level slot guarded by _LOCK, not thread-local)


class _Run:
    """One solve: the problem, its parameters, and what the forward pass found."""

    def __init__(self, problem, y0, params, spec):
        self.problem, self.params, self.spec = problem, params, spec
        self.device, self.dtype, self.batch = y0.device, y0.dtype, y0.shape[0]
        self.calls = 0
        self.outcome = None

    def torch(self, x) -> torch.Tensor:
        return torch.from_numpy(np.array(x)).to(device=self.device, dtype=self.dtype)

    def field(self, t, y):
        self.calls += 1
        with torch.no_grad():
            out = self.problem.vector_field(self.torch(t).expand(self.batch), self.torch(y))
        return out.cpu().numpy()

    def field_vjp(self, t, y, g):
        y_ = self.torch(y).requires_grad_(True)
        with torch.enable_grad():
            out = self.problem.vector_field(self.torch(t).expand(self.batch), y_)
            grads = vjp(out, (y_, *self.params), self.torch(g))
        flat = [d.reshape(-1).to(self.dtype) for d in grads[1:]]
        theta = torch.cat(flat) if flat else torch.zeros(1, dtype=self.dtype, device=self.device)
        return grads[0].cpu().numpy(), theta.cpu().numpy()

    def theta(self) -> np.ndarray:
        """The parameters flattened: the argument JAX differentiates (the callbacks read the
        live tensors, which hold the same values)."""
        flat = [p.detach().reshape(-1).to(self.dtype) for p in self.params]
        theta = torch.cat(flat) if flat else torch.zeros(1, dtype=self.dtype, device=self.device)
        return theta.cpu().numpy()

    def unflatten(self, theta: torch.Tensor) -> list[torch.Tensor]:
        out, i = [], 0
        for p in self.params:
            out.append(theta[i : i + p.numel()].reshape(p.shape).to(p.dtype))
            i += p.numel()
        return out


@contextlib.contextmanager
def _active(run: _Run):
    import jax

    with _LOCK:
        before = jax.config.jax_enable_x64
        previous = _ACTIVE[0]
        _ACTIVE[0] = run
        jax.config.update("jax_enable_x64", run.spec.x64 or before)
        try:
            yield
        finally:
            jax.config.update("jax_enable_x64", before)
            _ACTIVE[0] = previous


class _Solve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run, host, y0, *params):
        import jax.numpy as jnp

        fwd, _, plain = _compiled(run.spec)
        with _active(run):
            args = (
                jnp.asarray(y0.detach().cpu().numpy()),
                jnp.asarray(run.theta()),
                jnp.asarray(host["ts"]),
                _optional(host["steps"], host["ts"]),
                _optional(host["jumps"], host["ts"]),
            )
            if any(ctx.needs_input_grad[2:]):
                ys, vjp, aux = fwd(*args)
                ctx.vjp = vjp
            else:
                ys, aux = plain(*args)
                ctx.vjp = None
            ys = np.asarray(ys)
            aux = [int(a) for a in aux]
        run.outcome = (*_result(aux[0]), aux[1], aux[2])
        ctx.run = run
        return torch.from_numpy(ys.copy()).to(device=y0.device, dtype=y0.dtype)

    @staticmethod
    def backward(ctx, grad_ys):
        import jax.numpy as jnp

        run = ctx.run
        if ctx.vjp is None:  # pragma: no cover - autograd only calls this when a grad is needed
            return (None, None, None, *[None] * len(run.params))
        _, bwd, _ = _compiled(run.spec)
        g = grad_ys.nan_to_num(0.0).detach().cpu().numpy()
        with _active(run):
            g_y0, g_theta = bwd(ctx.vjp, jnp.asarray(g))
            g_y0, g_theta = np.asarray(g_y0), np.asarray(g_theta)
        ctx.vjp = None  # double backward is not supported; free the residuals
        g_y0 = run.torch(g_y0)
        g_params = run.unflatten(run.torch(g_theta)) if run.params else []
        return (None, None, g_y0, *g_params)


def _optional(x, like):
    import jax.numpy as jnp

    return jnp.zeros(1, dtype=like.dtype) if x is None else jnp.asarray(x)


def _result(index: int) -> tuple[Status, str]:
    """The ``Status`` and diffrax's name of the result at ``index`` of ``_RESULTS`` (any
    later index: a result not listed there, counted as NONFINITE)."""
    if index < len(_RESULTS):
        name = list(_RESULTS)[index]
        return _RESULTS[name], name
    return Status.NONFINITE, "another failure"


# ---------------------------------------------------------------------------------------------
# The JAX side


@functools.cache
def _jax_field():
    """The vector field as JAX sees it: ``field(t, y, theta)``, evaluated by the active run,
    with a VJP (to ``y`` and ``theta``) that PyTorch computes."""
    import jax
    import jax.numpy as jnp
    from jax.custom_derivatives import SymbolicZero

    def host_field(t, y):
        return _ACTIVE[0].field(t, y)

    def host_vjp(t, y, g):
        return _ACTIVE[0].field_vjp(t, y, g)

    @jax.custom_vjp
    def field(t, y, theta):
        shape = jax.ShapeDtypeStruct(y.shape, y.dtype)
        return jax.pure_callback(host_field, shape, t, y, vmap_method="sequential")

    @jax.custom_jvp
    def vjp(t, y, theta, g):
        shapes = (
            jax.ShapeDtypeStruct(y.shape, y.dtype),
            jax.ShapeDtypeStruct(theta.shape, y.dtype),
        )
        return jax.pure_callback(host_vjp, shapes, t, y, g, vmap_method="sequential")

    def vjp_jvp(primals, tangents):
        # The VJP is linear in the cotangent g: its derivative along g is itself. diffrax's
        # backsolve differentiates it along g only; second derivatives along t, y or theta
        # would need a Hessian-vector product, which this backend does not provide.
        out = vjp(*primals)
        if not all(isinstance(d, SymbolicZero) for d in tangents[:3]):
            raise NotImplementedError(
                "backend 'diffrax': second derivatives of the vector field are not supported"
            )
        dg = tangents[3]
        if isinstance(dg, SymbolicZero):
            return out, tuple(jnp.zeros_like(o) for o in out)
        return out, vjp(*primals[:3], dg)

    vjp.defjvp(vjp_jvp, symbolic_zeros=True)

    def field_fwd(t, y, theta):
        return field(t, y, theta), (t, y, theta)

    def field_bwd(res, g):
        t, y, theta = res
        g_y, g_theta = vjp(t, y, theta, g)
        return jnp.zeros_like(t), g_y, g_theta

    field.defvjp(field_fwd, field_bwd)
    return field


def _solver(name: str):
    import diffrax

    cls = _METHODS[name]
    if cls is not None:
        return getattr(diffrax, cls)()
    return _rk4_class()()


@functools.cache
def _rk4_class():
    """The classical RK4 as a diffrax solver, from this package's tableau."""
    import diffrax

    tab = get_method("rk4").tableau
    stages = len(tab.b)

    class ClassicalRK4(diffrax.AbstractERK):
        tableau = diffrax.ButcherTableau(
            c=np.array(tab.c),
            b_sol=np.array(tab.b),
            b_error=np.zeros(stages),
            a_lower=tuple(np.array(row) for row in tab.a),
        )
        interpolation_cls = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

        def order(self, terms):
            return tab.order

    return ClassicalRK4


@functools.cache
def _compiled(spec):
    """``(fwd, bwd, plain)`` jitted for one configuration: ``fwd`` returns the outputs, the
    VJP closure and ``(result, accepted, rejected)``; ``plain`` the outputs and those only."""
    import diffrax
    import jax
    import jax.numpy as jnp

    field = _jax_field()
    term = diffrax.ODETerm(lambda t, y, theta: field(t, y, theta))
    solver = _solver(spec.method)
    kind = spec.adjoint[0]
    if kind == "recursive":
        adjoint = diffrax.RecursiveCheckpointAdjoint(checkpoints=spec.adjoint[1])
    results = [getattr(diffrax.RESULTS, name) for name in _RESULTS]

    def controller(steps, jumps):
        if not spec.adaptive:
            return diffrax.StepTo(ts=steps)
        pid = diffrax.PIDController(rtol=spec.rtol, atol=spec.atol)
        return diffrax.ClipStepSizeController(pid, jump_ts=jumps) if spec.jumps else pid

    def solve(y0, theta, ts, steps, jumps):
        if kind == "backsolve":
            # diffrax solves backwards from each output time to the one before
            _, back, back_dt, rtol, atol = spec.adjoint
            kw = dict(solver=_solver(back))
            if back_dt is not None:
                kw.update(stepsize_controller=diffrax.ConstantStepSize(), dt0=-back_dt)
            else:
                pid = diffrax.PIDController(
                    rtol=spec.rtol if rtol is None else rtol,
                    atol=spec.atol if atol is None else atol,
                )
                kw["stepsize_controller"] = (
                    diffrax.ClipStepSizeController(pid, jump_ts=jumps) if spec.jumps else pid
                )
                if not spec.adaptive:
                    kw["dt0"] = None  # the forward solve had no dt0: diffrax picks one
            adj = diffrax.BacksolveAdjoint(**kw)
        else:
            adj = adjoint
        sol = diffrax.diffeqsolve(
            term,
            solver,
            ts[0],
            ts[-1],
            spec.dt0,
            y0,
            theta,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=controller(steps, jumps),
            adjoint=adj,
            max_steps=spec.max_steps,
            throw=False,
        )
        index = jnp.asarray(len(results))
        for i, r in reversed(list(enumerate(results))):
            index = jnp.where(sol.result == r, i, index)
        aux = (index, sol.stats["num_accepted_steps"], sol.stats["num_rejected_steps"])
        return sol.ys, aux

    @jax.jit
    def fwd(y0, theta, ts, steps, jumps):
        ys, pullback, aux = jax.vjp(
            lambda y, th: solve(y, th, ts, steps, jumps), y0, theta, has_aux=True
        )
        return ys, pullback, aux

    @jax.jit
    def bwd(pullback, g):
        return pullback(g)

    plain = jax.jit(solve)
    return fwd, bwd, plain


register_backend(DiffraxBackend())

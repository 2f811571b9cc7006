"""Backends: this package's own solvers, or a peer library behind the same call."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._adjoint import BacksolveAdjoint, Config
from ._controller import refine_grid
from ._solution import Solution, Stats, Status

__all__ = ["AbstractBackend", "Supports", "backends", "get_backend", "register_backend"]


@dataclass(frozen=True)
class Supports:
    """What a backend solves: the one table that ``solve`` checks before calling it.

    Attributes:
        problems: problem class names (``"ODE"``, ``"CDE"``, ...); ``None``: any problem
            (a user's own problem class over the terms).
        adjoints: adjoint names (``"direct"``, ``"checkpoint"``, ``"backsolve"``).
        per_sample_times: whether ``t`` may be ``(batch, T)``.
        methods: method names, or ``None`` for every method that accepts the problem.
        backwards: whether it solves backwards in time (a decreasing ``t``).
        dense: whether it keeps dense output (``solve(dense=True)``).
        events: whether it takes terminal events (``solve(event=fn)``).
    """

    problems: tuple[str, ...] | None
    adjoints: tuple[str, ...]
    per_sample_times: bool
    methods: tuple[str, ...] | None = None
    backwards: bool = False
    dense: bool = False
    events: bool = False


class AbstractBackend:
    """A backend: declares what it :attr:`supports` and solves. Subclasses are final."""

    name: str
    supports: Supports

    def check_supports(self, problem, cfg: Config, adjoint, t: torch.Tensor) -> None:
        """Refuse, naming the backend that can, what this backend does not support."""
        from ._reverse import TimeReversed

        s, kind = self.supports, type(problem).__name__
        native = "" if self.name == "native" else "; backend='native' does"
        if isinstance(problem, TimeReversed):
            if not s.backwards:
                raise ValueError(
                    f"backend {self.name!r} does not solve backwards in time (t decreasing){native}"
                )
            kind = problem.kind
        if s.problems is not None and kind not in s.problems:
            raise ValueError(
                f"backend {self.name!r} solves {', '.join(s.problems)} problems only, got "
                f"{kind}{native}"
            )
        if cfg.event is not None and not s.events:
            raise ValueError(f"backend {self.name!r} takes no event{native}")
        if cfg.steps is not None and not s.dense:
            raise ValueError(f"backend {self.name!r} has no dense output{native}")
        if adjoint.name not in s.adjoints:
            raise ValueError(
                f"backend {self.name!r} has no {adjoint.name} adjoint; it offers "
                f"{', '.join(repr(a) for a in s.adjoints)}{native}"
            )
        if t.ndim == 2 and not s.per_sample_times:
            raise ValueError(
                f"backend {self.name!r} needs one time grid shared by the batch, got t of "
                f"shape {tuple(t.shape)}; per-sample times are handled by backend='native'"
            )
        if s.methods is not None and cfg.method.name not in s.methods:
            raise ValueError(
                f"backend {self.name!r} has no method {cfg.method.name!r}; it offers "
                f"{', '.join(s.methods)}{native}"
            )

    def solve(self, problem, y0, t, f0, cfg: Config, adjoint) -> Solution:
        raise NotImplementedError


class NativeBackend(AbstractBackend):
    """This package's solvers: every method, adjoint and per-sample time grids."""

    name = "native"
    supports = Supports(
        problems=None,
        adjoints=("direct", "checkpoint", "backsolve"),
        per_sample_times=True,
        backwards=True,
        dense=True,
        events=True,
    )

    def solve(self, problem, y0, t, f0, cfg, adjoint, grid=None):
        """``cfg`` may hold planned schedules, and ``grid`` the planned :meth:`grid`
        (``prepare``)."""
        if grid is None:
            grid = self.grid(problem, t, cfg, adjoint)
        steps_t, positions = grid
        B = y0.shape[0]
        out = adjoint.run(problem, cfg, y0, self.lanes(steps_t, cfg, B), f0)
        status = out.status.expand(B).clone() if out.status.shape[0] == 1 else out.status
        n_acc = out.n_accepted.expand(B).clone() if out.n_accepted.shape[0] == 1 else out.n_accepted
        n_rej = out.n_rejected.expand(B).clone() if out.n_rejected.shape[0] == 1 else out.n_rejected
        ys = out.ys[0]
        if positions is not None:  # the outputs among the jump times
            index = positions.reshape(*positions.shape, *(1,) * (ys.ndim - 2))
            ys = ys.gather(1, index.expand(B, -1, *ys.shape[2:]))
        with torch.no_grad():
            bad = ~torch.isfinite(ys.detach().flatten(2)).all(2).all(1)
            status = torch.where(bad & (status == Status.SUCCESS), int(Status.NONFINITE), status)
        sol = Solution(t, ys, status, Stats(out.nfe + 1, n_acc, n_rej))
        if cfg.event is not None:
            sol.event_t = out.event_t
        if cfg.steps is not None:
            from ._dense import DenseOutput

            sol.dense = DenseOutput(cfg.method, cfg.steps, self.lanes(steps_t, cfg, B), B, status)
        return sol

    @staticmethod
    def grid(problem, t: torch.Tensor, cfg, adjoint) -> tuple:
        """``(times, positions)``: the times the solve steps between and where the outputs lie
        among them (``None``: they are ``t`` itself). A loop that steps from time to time
        (planned steps; the backward solve of ``backsolve``) also steps onto the problem's
        jump times and a ``StepTo`` controller's times; the adaptive loop lands on jump times
        itself."""
        planned = cfg.controller.planned
        if not planned and not isinstance(adjoint, BacksolveAdjoint):
            return t, None
        jumps = problem.jump_times()
        extra = cfg.controller.step_times() if planned else None
        if extra is not None:
            extra = extra.to(device=t.device, dtype=t.dtype)
            if jumps is None:
                jumps = extra
            else:
                jd = jumps.detach().to(device=t.device, dtype=t.dtype)
                if jd.ndim == 2:
                    extra = extra.expand(jd.shape[0], -1)
                jumps = torch.cat([jd, extra], dim=-1).sort(dim=-1).values
        refined = refine_grid(t, jumps)
        return (t, None) if refined is None else refined

    @staticmethod
    def lanes(t: torch.Tensor, cfg, batch: int) -> torch.Tensor:
        """The ``(lanes, T)`` grid a solve runs on: a planned solve on a shared grid runs as
        one lane (one schedule for the batch), an adaptive one as a lane per sample."""
        if t.ndim == 2:
            return t
        return t[None] if cfg.controller.planned else t.expand(batch, -1)


_TORCHDIFFEQ_METHODS = {
    "euler": "euler",
    "midpoint": "midpoint",
    "heun": "heun2",
    "rk4": "rk4",
    "bosh3": "bosh3",
    "dopri5": "dopri5",
}


class TorchdiffeqBackend(AbstractBackend):
    """torchdiffeq's ``odeint`` (direct) and ``odeint_adjoint`` (backsolve).

    Shared time grids only. torchdiffeq's ``rk4`` is the 3/8-rule variant and its fixed-grid
    methods step on a uniform grid and interpolate to the output times, so results agree with
    the native backend to the methods' accuracy, not to round-off.
    """

    name = "torchdiffeq"
    supports = Supports(
        problems=("ODE",),
        adjoints=("direct", "backsolve"),
        per_sample_times=False,
        methods=tuple(_TORCHDIFFEQ_METHODS),
    )

    def solve(self, problem, y0, t, f0, cfg, adjoint):
        method, _dt, rtol, atol, _max_steps = cfg.method, cfg.dt, cfg.rtol, cfg.atol, cfg.max_steps
        try:
            import torchdiffeq
        except ImportError as e:  # pragma: no cover - exercised where it is missing
            raise ImportError(
                "backend 'torchdiffeq' needs torchdiffeq: pip install \"ctrnn[backends]\""
            ) from e
        B = y0.shape[0]
        calls = [0]

        def f(tt, y):
            calls[0] += 1
            return problem.vector_field(tt.reshape(-1), y)

        options = torchdiffeq_options(self.name, problem, cfg)
        name = _TORCHDIFFEQ_METHODS[method.name]
        kwargs = dict(method=name, rtol=rtol, atol=atol, options=options)
        try:
            if isinstance(adjoint, BacksolveAdjoint):
                params = adjoint.params if adjoint.params is not None else problem.parameters()
                ys = torchdiffeq.odeint_adjoint(
                    _AsModule(f),
                    y0,
                    t,
                    adjoint_params=tuple(params),
                    **self._adjoint_options(adjoint, method, options),
                    **kwargs,
                )
            else:
                ys = torchdiffeq.odeint(f, y0, t, **kwargs)
        except AssertionError as e:
            # torchdiffeq stops the whole batch; every sample is marked, outputs are NaN. A
            # step size driven to underflow by NaN is a non-finite failure, not stiffness.
            if "max_num_steps" in str(e):
                failure = Status.MAX_STEPS
            elif not bool(torch.isfinite(y0).all()) or not bool(torch.isfinite(f0).all()):
                failure = Status.NONFINITE
            else:
                failure = _probe_nonfinite(f, y0, t)
            ys = torch.full(
                (B, t.shape[0], *y0.shape[1:]), float("nan"), dtype=y0.dtype, device=y0.device
            )
            ys[:, 0] = y0
            status = torch.full((B,), int(failure), dtype=torch.long, device=y0.device)
            detail = f" (torchdiffeq: {e})"
        else:
            detail = ""
            ys = ys.movedim(0, 1)
            status = torch.zeros(B, dtype=torch.long, device=y0.device)
            bad = ~torch.isfinite(ys.detach().flatten(2)).all(2).all(1)
            status = torch.where(bad, int(Status.NONFINITE), status)
        unknown = torch.full((B,), -1, dtype=torch.long, device=y0.device)
        return Solution(t, ys, status, Stats(calls[0] + 1, unknown, unknown.clone()), detail)

    @staticmethod
    def _adjoint_options(adjoint: BacksolveAdjoint, method, options) -> dict:
        """BacksolveAdjoint's settings in torchdiffeq's words."""
        out = {}
        if adjoint.method is not None:
            from ._stepper import get_method

            back = get_method(adjoint.method)
            if back.name not in _TORCHDIFFEQ_METHODS:
                raise ValueError(
                    f"backend 'torchdiffeq' has no method {back.name!r} for the backward solve; "
                    f"it offers {', '.join(_TORCHDIFFEQ_METHODS)}"
                )
            out["adjoint_method"] = _TORCHDIFFEQ_METHODS[back.name]
            if not back.adaptive:
                step = adjoint.dt if adjoint.dt is not None else options.get("step_size")
                if step is None:
                    raise ValueError(
                        f"BacksolveAdjoint: the backward method {back.name!r} is fixed-step; "
                        "pass dt to BacksolveAdjoint"
                    )
                out["adjoint_options"] = {"step_size": step}
        elif adjoint.dt is not None and "step_size" in options:
            out["adjoint_options"] = {"step_size": adjoint.dt}
        if adjoint.rtol is not None:
            out["adjoint_rtol"] = adjoint.rtol
        if adjoint.atol is not None:
            out["adjoint_atol"] = adjoint.atol
        return out


def _probe_nonfinite(f, y0, t) -> Status:
    """Why torchdiffeq's step size underflowed: ``NONFINITE`` when a short explicit Euler
    probe from ``y0`` meets NaN or inf in the field (torchdiffeq reports both the same way),
    ``DT_UNDERFLOW`` otherwise."""
    with torch.no_grad():
        y, t0 = y0, t[0]
        span = float(t[-1] - t[0])
        for _k in range(64):
            d = f(t0, y)
            if not bool(torch.isfinite(d).all()):
                return Status.NONFINITE
            y = y + d * (span / 64)
            if not bool(torch.isfinite(y).all()):
                return Status.NONFINITE
            t0 = t0 + span / 64
    return Status.DT_UNDERFLOW


def torchdiffeq_options(backend: str, problem, cfg) -> dict:
    """torchdiffeq's ``options`` for a solve: the step size of constant steps; the step
    limit, first step and the problem's jump times (``jump_t``) of an adaptive one."""
    method = cfg.method
    if cfg.controller.planned:
        if method.adaptive:
            raise ValueError(
                f"backend {backend!r} runs {method.name!r} adaptively only; for constant steps "
                "with it use backend='native', or a fixed-step method (rk4, ...)"
            )
        if cfg.controller.step_times() is not None:
            raise ValueError(f"backend {backend!r} takes no StepTo controller; use dt")
        return {"step_size": cfg.dt}
    options = {"max_num_steps": cfg.max_steps}
    if cfg.controller.first_step is not None:
        options["first_step"] = cfg.controller.first_step
    jumps = problem.jump_times()
    if jumps is not None:
        if jumps.ndim != 1:
            raise ValueError(
                f"backend {backend!r} takes jump times shared by the batch, got shape "
                f"{tuple(jumps.shape)}; per-sample jump times are handled by backend='native'"
            )
        options["jump_t"] = jumps.detach().unique()
    return options


class _AsModule(torch.nn.Module):
    """odeint_adjoint wants a module; parameters are passed separately."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, t, y):
        return self.f(t, y)


_BACKENDS: dict[str, AbstractBackend] = {
    "native": NativeBackend(),
    "torchdiffeq": TorchdiffeqBackend(),
}


def register_backend(backend: AbstractBackend) -> None:
    """Add a backend object under its ``name``."""
    if backend.name in _BACKENDS:
        raise ValueError(f"a backend named {backend.name!r} is already registered")
    _BACKENDS[backend.name] = backend


def backends() -> tuple[str, ...]:
    """Names of the available backends."""
    return tuple(_BACKENDS)


def get_backend(backend) -> AbstractBackend:
    if isinstance(backend, AbstractBackend):
        return backend
    if isinstance(backend, str) and backend in _BACKENDS:
        return _BACKENDS[backend]
    raise ValueError(f"unknown backend {backend!r}; valid backends are: {', '.join(_BACKENDS)}")

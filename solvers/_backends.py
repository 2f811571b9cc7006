"""Backends: this package's own solvers, or a peer library behind the same call."""

from __future__ import annotations

import torch

from ._adjoint import BacksolveAdjoint, CheckpointAdjoint, Config, DirectAdjoint
from ._integrate import refine_grid
from ._problems import ODE
from ._solution import Solution, Stats, Status

__all__ = ["AbstractBackend", "backends", "get_backend", "register_backend"]


class AbstractBackend:
    name: str

    def solve(self, problem, y0, t, f0, method, dt, rtol, atol, adjoint, max_steps) -> Solution:
        raise NotImplementedError


class NativeBackend(AbstractBackend):
    """This package's solvers: every method, adjoint and per-sample time grids."""

    name = "native"

    def solve(
        self, problem, y0, t, f0, method, dt, rtol, atol, adjoint, max_steps, cfg=None, grid=None
    ):
        """``cfg``, when given, is a :class:`Config` with planned schedules, and ``grid`` the
        planned :meth:`grid` (``prepare``)."""
        if cfg is None:
            cfg = Config(method, dt, rtol, atol, max_steps)
        if grid is None:
            grid = self.grid(problem, t, method, adjoint)
        steps_t, positions = grid
        B = y0.shape[0]
        out = adjoint.run(problem, cfg, y0, self.lanes(steps_t, method, B), f0)
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
        return Solution(t, ys, status, Stats(out.nfe + 1, n_acc, n_rej))

    @staticmethod
    def grid(problem, t: torch.Tensor, method, adjoint) -> tuple:
        """``(times, positions)``: the times the solve steps between and where the outputs lie
        among them (``None``: they are ``t`` itself). A loop that steps from time to time
        (fixed steps; the backward solve of ``backsolve``) also steps onto the problem's jump
        times; the adaptive loop handles them itself."""
        if method.adaptive and not isinstance(adjoint, BacksolveAdjoint):
            return t, None
        refined = refine_grid(t, problem.jump_times())
        return (t, None) if refined is None else refined

    @staticmethod
    def lanes(t: torch.Tensor, method, batch: int) -> torch.Tensor:
        """The ``(lanes, T)`` grid a solve runs on: a fixed-step solve on a shared grid runs
        as one lane (one schedule for the batch), an adaptive one as a lane per sample."""
        if t.ndim == 2:
            return t
        return t.expand(batch, -1) if method.adaptive else t[None]


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

    def solve(self, problem, y0, t, f0, method, dt, rtol, atol, adjoint, max_steps):
        try:
            import torchdiffeq
        except ImportError as e:  # pragma: no cover - exercised where it is missing
            raise ImportError(
                "backend 'torchdiffeq' needs torchdiffeq: pip install \"ctrnn[backends]\""
            ) from e
        if not isinstance(problem, ODE):
            raise ValueError(
                f"backend 'torchdiffeq' solves ODE problems only, got {type(problem).__name__}; "
                "use backend='native'"
            )
        if t.ndim != 1:
            raise ValueError(
                f"backend 'torchdiffeq' needs one time grid shared by the batch, got t of shape "
                f"{tuple(t.shape)}; per-sample times are handled by backend='native'"
            )
        name = _TORCHDIFFEQ_METHODS.get(method.name)
        if name is None:
            raise ValueError(
                f"backend 'torchdiffeq' has no method {method.name!r}; it offers "
                f"{', '.join(_TORCHDIFFEQ_METHODS)}; backend='native' has them all"
            )
        if isinstance(adjoint, CheckpointAdjoint):
            raise ValueError(
                "backend 'torchdiffeq' has no checkpoint adjoint; use backend='native' "
                "for adjoint='checkpoint'"
            )
        B = y0.shape[0]
        calls = [0]

        def f(tt, y):
            calls[0] += 1
            return problem.vector_field(tt.expand(B), y)

        options = torchdiffeq_options(self.name, problem, method, dt, max_steps)
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
            elif isinstance(adjoint, DirectAdjoint):
                ys = torchdiffeq.odeint(f, y0, t, **kwargs)
            else:
                raise ValueError(
                    f"backend 'torchdiffeq' does not take adjoint {adjoint!r}; "
                    "it offers 'direct' and 'backsolve'"
                )
        except AssertionError as e:
            # torchdiffeq stops the whole batch; every sample is marked, outputs are NaN
            failure = Status.MAX_STEPS if "max_num_steps" in str(e) else Status.DT_UNDERFLOW
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
            from ._methods import get_method

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


def torchdiffeq_options(backend: str, problem, method, dt, max_steps) -> dict:
    """torchdiffeq's ``options`` for a solve: the step size of a fixed-step method; the step
    limit, first step and the problem's jump times (``jump_t``) of an adaptive one."""
    if not method.adaptive:
        return {"step_size": dt}
    options = {"max_num_steps": max_steps}
    if dt is not None:
        options["first_step"] = dt
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


_BACKENDS = {"native": NativeBackend(), "torchdiffeq": TorchdiffeqBackend()}


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

"""The ``"torchcde"`` backend: a :class:`~solvers.CDE` solved by ``torchcde.cdeint``."""

from __future__ import annotations

import torch

from ._adjoint import BacksolveAdjoint
from ._backends import (
    _TORCHDIFFEQ_METHODS,
    AbstractBackend,
    Supports,
    register_backend,
    torchdiffeq_options,
)
from ._interpolation import (
    AbstractPiecewiseCubicPath,
    HermiteCubicPath,
    LinearPath,
    NaturalCubicPath,
)
from ._solution import Solution, Stats, Status
from ._term import broadcast_time

__all__ = ["TorchcdeBackend"]


class TorchcdeBackend(AbstractBackend):
    """torchcde's ``cdeint`` (torchdiffeq underneath): ``"direct"`` and ``"backsolve"``.

    Shared time grids only, CDE problems only. The path is rebuilt with torchcde's own
    coefficient functions from the filled observations: ``natural_cubic`` with
    ``natural_cubic_coeffs``, ``hermite`` with
    ``hermite_cubic_coefficients_with_backward_differences``, ``linear`` with
    ``linear_interpolation_coeffs``; any other piecewise-cubic path (``rectilinear``) is
    handed over as its own coefficients. torchcde's pieces are left-continuous at the knots
    (ours right-continuous), which only matters for paths whose derivative jumps there.
    """

    name = "torchcde"
    supports = Supports(
        problems=("CDE",),
        adjoints=("direct", "backsolve"),
        per_sample_times=False,
        methods=tuple(_TORCHDIFFEQ_METHODS),
    )

    def solve(self, problem, y0, t, f0, cfg, adjoint):
        method, rtol, atol = cfg.method, cfg.rtol, cfg.atol
        try:
            import torchcde
        except ImportError as e:  # pragma: no cover - exercised where it is missing
            raise ImportError(
                "backend 'torchcde' needs torchcde: pip install \"ctrnn[backends]\""
            ) from e
        path = problem.path
        if t.ndim != 1 or (isinstance(path, AbstractPiecewiseCubicPath) and path.times.ndim != 1):
            raise ValueError(
                "backend 'torchcde' needs one time grid shared by the batch (for the solve and "
                "the path); per-sample times are handled by backend='native'"
            )
        if not isinstance(path, AbstractPiecewiseCubicPath):
            raise ValueError(
                f"backend 'torchcde' cannot convert a {type(path).__name__}; it takes the "
                "paths of solvers.interpolate; use backend='native'"
            )
        name = _TORCHDIFFEQ_METHODS[method.name]
        X, coeffs = _torchcde_path(torchcde, path)
        B = y0.shape[0]
        calls = [0]
        func = _Func(problem.f, y0.shape, calls)
        options = torchdiffeq_options(self.name, problem, cfg)
        kwargs = dict(method=name, rtol=rtol, atol=atol, options=options)
        if isinstance(adjoint, BacksolveAdjoint):
            own = tuple(problem.f.parameters()) if isinstance(problem.f, torch.nn.Module) else ()
            params = adjoint.params if adjoint.params is not None else own
            params = tuple(p for p in params if p.requires_grad)
            if coeffs.requires_grad:
                params = (*params, coeffs)
            kwargs["adjoint_params"] = params
            kwargs.update(_adjoint_options(adjoint, method, options))
        try:
            zs = torchcde.cdeint(
                X=X,
                func=func,
                z0=y0.reshape(B, -1),
                t=t,
                adjoint=isinstance(adjoint, BacksolveAdjoint),
                **kwargs,
            )
        except AssertionError as e:
            failure = Status.MAX_STEPS if "max_num_steps" in str(e) else Status.DT_UNDERFLOW
            ys = torch.full(
                (B, t.shape[0], *y0.shape[1:]), float("nan"), dtype=y0.dtype, device=y0.device
            )
            ys[:, 0] = y0
            status = torch.full((B,), int(failure), dtype=torch.long, device=y0.device)
            detail = f" (torchcde: {e})"
        else:
            detail = ""
            ys = zs.reshape(B, t.shape[0], *y0.shape[1:])
            bad = ~torch.isfinite(ys.detach().flatten(2)).all(2).all(1)
            status = torch.zeros(B, dtype=torch.long, device=y0.device)
            status = torch.where(bad, int(Status.NONFINITE), status)
        unknown = torch.full((B,), -1, dtype=torch.long, device=y0.device)
        return Solution(t, ys, status, Stats(calls[0] + 1, unknown, unknown.clone()), detail)


def _torchcde_path(torchcde, path: AbstractPiecewiseCubicPath):
    """torchcde's interpolation of the same data, and its coefficient tensor."""
    x, times = path.values, path.times
    if isinstance(path, NaturalCubicPath):
        coeffs = torchcde.natural_cubic_coeffs(x, t=times)
        return torchcde.CubicSpline(coeffs, t=times), coeffs
    if isinstance(path, HermiteCubicPath):
        coeffs = torchcde.hermite_cubic_coefficients_with_backward_differences(x, t=times)
        return torchcde.CubicSpline(coeffs, t=times), coeffs
    if isinstance(path, LinearPath):
        coeffs = torchcde.linear_interpolation_coeffs(x, t=times)
        return torchcde.LinearInterpolation(coeffs, t=times), coeffs
    a, b, c, d = path.coefficients.unbind(-1)
    coeffs = torch.cat([a, b, 2 * c, 3 * d], dim=-1)
    return torchcde.CubicSpline(coeffs, t=path.knots), coeffs


def _adjoint_options(adjoint: BacksolveAdjoint, method, options) -> dict:
    """BacksolveAdjoint's settings in torchdiffeq's words (cdeint passes them on)."""
    from ._backends import TorchdiffeqBackend

    return TorchdiffeqBackend._adjoint_options(adjoint, method, options)


class _Func(torch.nn.Module):
    """``f(t, z)`` in torchcde's calling convention: ``func(t, z)`` on flattened states, ``t``
    0-dim."""

    def __init__(self, f, shape, calls):
        super().__init__()
        self.f, self.shape, self.calls = f, shape, calls

    def forward(self, t, z):
        self.calls[0] += 1
        B = self.shape[0]
        z = z.reshape(self.shape)
        out = self.f(broadcast_time(t.reshape(1), z), z)
        return out.reshape(B, -1, out.shape[-1])


register_backend(TorchcdeBackend())

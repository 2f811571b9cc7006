"""The ``"torchsde"`` backend: torchsde's ``sdeint`` and ``sdeint_adjoint`` behind ``solve``.

The problem's own :class:`~solvers.BrownianPath` is handed to torchsde as its ``bm``, so
torchsde steps through the same Brownian path as the native backend. When every output
interval is a multiple of ``dt`` both take the same steps and agree to round-off.
"""

from __future__ import annotations

import torch

from ._adjoint import DirectAdjoint
from ._backends import AbstractBackend, Supports, register_backend
from ._solution import Solution, Stats, Status

__all__ = ["TorchsdeBackend"]

# our name -> (torchsde name, options)
_TORCHSDE_METHODS = {
    "euler_maruyama": ("euler", {}),
    "milstein": ("milstein", {"grad_free": True}),
    "heun": ("heun", {}),
    "reversible_heun": ("reversible_heun", {}),
}


def _import_torchsde():
    try:
        import torchsde
    except ImportError as e:  # pragma: no cover - exercised where it is missing
        raise ImportError(
            "backend 'torchsde' needs torchsde: pip install \"ctrnn[backends]\""
        ) from e
    return torchsde


def _as_torchsde_brownian(path, torchsde):
    """Our :class:`~solvers.BrownianPath` as a torchsde ``BaseBrownian``."""

    class _Path(torchsde.BaseBrownian):
        __slots__ = ("path",)

        def __init__(self, path):
            self.path = path

        def __call__(self, ta, tb=None, return_U=False, return_A=False):
            if return_U or return_A:
                raise ValueError(
                    "backend 'torchsde': the BrownianPath gives increments only, no Lévy area; "
                    "use a method that needs none"
                )
            if tb is None:
                return self.path.values(torch.as_tensor(ta).reshape(1))
            times = torch.stack([torch.as_tensor(ta), torch.as_tensor(tb)]).reshape(2, 1)
            w = self.path.values(times)
            return w[1] - w[0]

        def __repr__(self):
            return f"torchsde view of {self.path!r}"

        @property
        def dtype(self):
            return self.path.dtype

        @property
        def device(self):
            return self.path.device

        @property
        def shape(self):
            return torch.Size(self.path.shape)

        @property
        def levy_area_approximation(self):
            return "none"

    return _Path(path)


class _TorchsdeSDE(torch.nn.Module):
    """The problem in torchsde's form: ``f(t, y)``, ``g(t, y)`` with a scalar ``t``."""

    def __init__(self, problem, batch: int, calls: list):
        super().__init__()
        self.problem, self.batch, self.calls = problem, batch, calls
        self.noise_type = problem.noise
        self.sde_type = problem.sde_type
        # torchsde takes additive noise as a (batch, d, m) matrix
        self._diag_to_matrix = problem.noise == "additive"

    def f(self, t, y):
        self.calls[0] += 1
        return self.problem.terms().f(t.reshape(1), y)

    def g(self, t, y):
        g = self.problem.terms().g(t.reshape(1), y)
        if self._diag_to_matrix and g.ndim == 2:
            g = torch.diag_embed(g)
        return g


class TorchsdeBackend(AbstractBackend):
    """torchsde's ``sdeint`` (direct) and ``sdeint_adjoint`` (backsolve) on the problem's
    Brownian path. Shared time grids only; methods ``euler_maruyama``, ``milstein``
    (derivative-free), ``heun``, ``reversible_heun``. torchsde steps on a uniform grid of
    ``dt`` from the first time and interpolates to output times between steps."""

    name = "torchsde"

    @property
    def supports(self):
        return Supports(
            problems=("SDE",),
            adjoints=("direct", "backsolve"),
            per_sample_times=False,
            methods=tuple(_TORCHSDE_METHODS),
        )

    def solve(self, problem, y0, t, f0, cfg, adjoint):
        method, dt = cfg.method, cfg.dt
        torchsde = _import_torchsde()
        if cfg.controller.step_times() is not None:
            raise ValueError("backend 'torchsde' takes no StepTo controller; use dt")
        B = y0.shape[0]
        g0 = problem.terms().g(t[:1], y0)
        bm = _as_torchsde_brownian(problem.brownian_path(t[None], y0, g0, dt), torchsde)
        name, options = _TORCHSDE_METHODS[method.name]
        calls = [0]
        sde = _TorchsdeSDE(problem, B, calls)
        kwargs = dict(bm=bm, method=name, dt=dt, options=dict(options))
        if isinstance(adjoint, DirectAdjoint):
            ys = torchsde.sdeint(sde, y0, t, **kwargs)
        else:
            if any(getattr(adjoint, k) is not None for k in ("method", "rtol", "atol", "dt")):
                raise ValueError(
                    "backend 'torchsde': BacksolveAdjoint takes params only here; torchsde "
                    "chooses its adjoint method"
                )
            params = adjoint.params if adjoint.params is not None else problem.parameters()
            if name == "milstein":
                kwargs["adjoint_options"] = {"grad_free": False}
            ys = torchsde.sdeint_adjoint(sde, y0, t, adjoint_params=tuple(params), **kwargs)
        ys = ys.movedim(0, 1)
        status = torch.zeros(B, dtype=torch.long, device=y0.device)
        bad = ~torch.isfinite(ys.detach().flatten(2)).all(2).all(1)
        status = torch.where(bad, int(Status.NONFINITE), status)
        unknown = torch.full((B,), -1, dtype=torch.long, device=y0.device)
        return Solution(t, ys, status, Stats(calls[0] + 1, unknown, unknown.clone()))


register_backend(TorchsdeBackend())

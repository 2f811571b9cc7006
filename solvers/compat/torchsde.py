"""torchsde's ``sdeint`` and ``sdeint_adjoint``, running on :func:`solvers.solve`.

Same signatures, defaults and shapes as torchsde 0.2: ``sde`` is an object with ``f(t, y)``
and ``g(t, y)`` (``t`` 0-dim, ``y`` ``(batch, d)``), ``noise_type`` and ``sde_type``; the
solution is time-major, ``(T, batch, d)``. The steps are constant, of at most ``dt``: each
interval between output times is split into equal steps (torchsde steps by ``dt`` from
``ts[0]`` and interpolates linearly onto the output times). The peer is not imported.

Methods (torchsde name → native): Itô ``euler`` → ``euler_maruyama``, ``milstein`` →
``milstein``; Stratonovich ``heun`` → ``heun``, ``reversible_heun`` → ``reversible_heun``,
``midpoint`` → :class:`StratonovichMidpoint`, ``euler_heun`` → :class:`EulerHeun` (these two
written here). ``srk``, ``log_ode`` and Stratonovich ``milstein`` are a ``ValueError``.
``method=None`` takes ``euler`` for Itô SDEs (torchsde's default there, ``srk``, is absent)
and ``midpoint`` for Stratonovich ones (torchsde's default).

``bm``: ``None`` (a path drawn from a seed taken from torch's global generator, so that
``torch.manual_seed`` fixes it, as it fixes torchsde's), a :class:`BrownianInterval` from this
module, a :class:`solvers.BrownianPath`, or any object with torchsde's
``bm(ta, tb) -> W(tb) - W(ta)`` (a torchsde ``BrownianInterval``; queried once per step).
"""

from __future__ import annotations

from types import MappingProxyType

import torch

from .. import SDE as _SDE
from .. import AbstractSDEMethod, BacksolveAdjoint
from .. import BrownianPath as _Path
from .. import solve as _solve

__all__ = [
    "LEVY_AREA_APPROXIMATIONS",
    "METHODS",
    "NOISE_TYPES",
    "SDE_TYPES",
    "BaseSDE",
    "BrownianInterval",
    "EulerHeun",
    "SDEIto",
    "SDEStratonovich",
    "StratonovichMidpoint",
    "sdeint",
    "sdeint_adjoint",
]


class _Names:
    """A namespace of names that ``in`` tests, like torchsde's settings classes."""

    def __init__(self, **names):
        self.__dict__.update(names)

    def all(self):
        return sorted(self.__dict__.values())

    def __contains__(self, item):
        return item in self.__dict__.values()

    def __iter__(self):
        return iter(self.all())

    def __repr__(self):
        return repr(self.all())


METHODS = _Names(
    euler="euler",
    milstein="milstein",
    srk="srk",
    midpoint="midpoint",
    reversible_heun="reversible_heun",
    adjoint_reversible_heun="adjoint_reversible_heun",
    heun="heun",
    log_ode_midpoint="log_ode",
    euler_heun="euler_heun",
)
NOISE_TYPES = _Names(general="general", diagonal="diagonal", scalar="scalar", additive="additive")
SDE_TYPES = _Names(ito="ito", stratonovich="stratonovich")
LEVY_AREA_APPROXIMATIONS = _Names(
    none="none", space_time="space-time", davie="davie", foster="foster"
)


class StratonovichMidpoint(AbstractSDEMethod):
    """The stochastic midpoint rule for Stratonovich SDEs (torchsde's ``midpoint``): a half
    step ``y½ = y + ½(f h + g ΔW)``, then ``y1 = y + f(t + h/2, y½) h + g(t + h/2, y½) ΔW``.
    Strong order 1.0 for commutative noise, 0.5 for general noise. Burrage, Burrage & Tian,
    Numerical methods for strong solutions of SDEs: an overview, Proc. R. Soc. A 460 (2004).
    """

    name = "midpoint"
    sde_type = "stratonovich"
    orders = MappingProxyType({"diagonal": 1.0, "additive": 1.0, "general": 0.5})
    evals_per_step = 2
    reference = "K. Burrage, P. M. Burrage and T. Tian, Proc. R. Soc. A 460 (2004)"

    def sde_step(self, terms, t, h, y, extra, dw):
        half = y + 0.5 * (terms.f(t, y) * h + terms.diffusion.prod(terms.g(t, y), dw))
        tm = t + 0.5 * h[:, 0]
        return y + terms.f(tm, half) * h + terms.diffusion.prod(terms.g(tm, half), dw), extra


class EulerHeun(AbstractSDEMethod):
    """The Euler–Heun method for Stratonovich SDEs (torchsde's ``euler_heun``): Euler for the
    drift, the trapezoidal rule for the diffusion at a predicted ``ỹ = y + g ΔW``. Strong
    order 0.5 (1.0 for additive noise). Kloeden & Platen, Numerical Solution of SDEs (1992).
    """

    name = "euler_heun"
    sde_type = "stratonovich"
    orders = MappingProxyType({"diagonal": 0.5, "additive": 1.0, "general": 0.5})
    evals_per_step = 2
    reference = "P. E. Kloeden and E. Platen, Numerical Solution of SDEs (1992)"

    def sde_step(self, terms, t, h, y, extra, dw):
        g = terms.g(t, y)
        pred = y + terms.diffusion.prod(g, dw)
        gdw = terms.diffusion.prod(g + terms.g(t, pred), dw)
        return y + terms.f(t, y) * h + 0.5 * gdw, extra


_MIDPOINT, _EULER_HEUN = StratonovichMidpoint(), EulerHeun()
_METHODS = {
    "ito": {"euler": "euler_maruyama", "milstein": "milstein"},
    "stratonovich": {
        "heun": "heun",
        "reversible_heun": "reversible_heun",
        "midpoint": _MIDPOINT,
        "euler_heun": _EULER_HEUN,
    },
}
_ABSENT = {
    "srk": "no stochastic Runge–Kutta method (it needs space-time Lévy area)",
    "log_ode": "no log-ODE method (it needs Lévy area)",
    "adjoint_reversible_heun": "an adjoint method: pass reversible_heun to sdeint_adjoint",
}


class BaseSDE(torch.nn.Module):
    """Base of a torchsde-style SDE: an ``nn.Module`` with ``noise_type`` and ``sde_type``;
    subclasses define ``f(t, y)`` and ``g(t, y)``."""

    def __init__(self, noise_type, sde_type):
        super().__init__()
        if noise_type not in NOISE_TYPES:
            raise ValueError(f"expected noise_type in {NOISE_TYPES}, got {noise_type!r}")
        if sde_type not in SDE_TYPES:
            raise ValueError(f"expected sde_type in {SDE_TYPES}, got {sde_type!r}")
        self.noise_type, self.sde_type = noise_type, sde_type


class SDEIto(BaseSDE):
    """:class:`BaseSDE` with ``sde_type="ito"``."""

    def __init__(self, noise_type):
        super().__init__(noise_type, "ito")


class SDEStratonovich(BaseSDE):
    """:class:`BaseSDE` with ``sde_type="stratonovich"``."""

    def __init__(self, noise_type):
        super().__init__(noise_type, "stratonovich")


class BrownianInterval:
    """torchsde's ``BrownianInterval`` call, on :class:`solvers.BrownianPath`.

    ``bm(ta, tb)`` is ``W(tb) - W(ta)`` of shape ``size``; ``bm(t)`` is ``W(t) - W(t0)``.
    Queries are reproducible (the same times give the same values, in any order). ``entropy``
    is the seed (default: drawn from torch's global generator). Lévy area is absent: a
    ``levy_area_approximation`` other than ``"none"`` and ``return_U``/``return_A`` are a
    ``ValueError``. ``dt``, ``tol``, ``pool_size``, ``cache_size``, ``halfway_tree`` and ``W``,
    ``H`` are not taken either (the native path needs no cache and no tolerance).
    """

    def __init__(
        self,
        t0=0.0,
        t1=1.0,
        size=None,
        dtype=None,
        device=None,
        entropy=None,
        levy_area_approximation="none",
        **unsupported,
    ):
        if unsupported:
            raise ValueError(
                f"BrownianInterval: the arguments {', '.join(sorted(unsupported))} are not "
                "supported by solvers.compat (the native path needs no cache or tolerance)"
            )
        if levy_area_approximation != "none":
            raise ValueError(
                f"BrownianInterval: levy_area_approximation={levy_area_approximation!r} is not "
                "supported (the native Brownian path has no Lévy area)"
            )
        size = () if size is None else tuple(size)
        self.levy_area_approximation = levy_area_approximation
        seed = int(torch.randint(0, 2**62, ())) if entropy is None else int(entropy)
        t0, t1 = float(t0), float(t1)
        self.path = _Path(t0, t1, size or (1,), seed, dtype, device)
        self.shape, self.t0, self.t1 = torch.Size(size), t0, t1
        self.dtype, self.device = self.path.dtype, self.path.device

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if return_U or return_A:
            raise ValueError(
                "BrownianInterval: return_U and return_A (Lévy area) are not supported"
            )
        ta = float(ta)
        w = self.path.evaluate(ta) if tb is None else self.path.increment(ta, float(tb))
        return w.reshape(self.shape)

    def __repr__(self):
        return f"BrownianInterval(t0={self.t0}, t1={self.t1}, shape={tuple(self.shape)})"


class _ForeignBrownian(_Path):
    """A path read from an object with torchsde's ``bm(ta, tb)``, once per queried time."""

    def __init__(self, bm, t0, t1, shape, dtype, device):
        super().__init__(t0, t1, shape, 0, dtype, device, depth=1)
        self._bm = bm

    def values(self, t):
        t = t.detach().to(torch.float64)
        lead, L = t.shape[:-1], t.shape[-1]
        rows = []
        for row in t.reshape(-1, L).tolist():
            if len(set(row)) == 1:
                rows.append(self._w(row[0]))
            else:
                rows.append(torch.stack([self._w(ti)[i] for i, ti in enumerate(row)]))
        out = torch.stack(rows).reshape((*lead, *self.shape))
        return out.to(dtype=self.dtype, device=self.device)

    def _w(self, ti):
        if ti <= self.t0:
            return torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        return self._bm(self.t0, ti).reshape(self.shape)

    def cells(self, level):
        span = (self.t1 - self.t0) / 2**level

        def cell(c0, c1):
            k = torch.arange(c0, c1 + 1, dtype=torch.float64) * span + self.t0
            w = self.values(k[:, None].clamp(max=self.t1))
            return w[1:] - w[:-1]

        return cell


def _brownian(bm, ts, shape, dtype, device):
    if bm is None or isinstance(bm, _Path):
        return bm
    if isinstance(bm, BrownianInterval):
        return bm.path
    if not callable(bm):
        raise TypeError(
            "sdeint: bm must be a BrownianInterval, a solvers.BrownianPath or an object called "
            f"as bm(ta, tb), got {type(bm).__name__}"
        )
    got = tuple(getattr(bm, "shape", shape))
    if got != tuple(shape):
        raise ValueError(f"sdeint: bm has shape {got}; expected (batch, noise channels) = {shape}")
    t0 = float(getattr(bm, "_start", getattr(bm, "t0", ts[0])))
    t1 = float(getattr(bm, "_end", getattr(bm, "t1", ts[-1])))
    return _ForeignBrownian(bm, t0, max(t1, float(ts[-1])), shape, dtype, device)


class _Problem:
    """One torchsde-style call mapped onto a native SDE."""

    def __init__(self, where, sde, y0, ts, bm, method, dt, adaptive, options, names, extras):
        for key, value in extras.items():
            if value:
                raise ValueError(
                    f"{where}: {key}={value!r} is not supported by solvers.compat (see "
                    "docs/compat.md)"
                )
        if adaptive:
            raise ValueError(
                f"{where}: adaptive=True is not supported by solvers.compat yet (the native "
                "adaptive SDE steps are not mapped onto a given Brownian motion); pass dt"
            )
        options = dict(options or {})
        if method == "milstein":
            options.pop("grad_free", None)  # the native Milstein is the derivative-free form
        if options:
            raise ValueError(
                f"{where}: options {sorted(options)} are not supported by solvers.compat"
            )
        names = dict(names or {})
        other = sorted(set(names) - {"drift", "diffusion"})
        if other:
            raise ValueError(
                f"{where}: names {other} are not supported (only 'drift' and 'diffusion')"
            )
        f_name, g_name = names.get("drift", "f"), names.get("diffusion", "g")
        for attr in ("noise_type", "sde_type"):
            if not hasattr(sde, attr):
                raise ValueError(f"{where}: sde does not have the attribute {attr}")
        if sde.noise_type not in NOISE_TYPES:
            raise ValueError(f"{where}: expected noise type in {NOISE_TYPES}, got {sde.noise_type}")
        if sde.sde_type not in SDE_TYPES:
            raise ValueError(f"{where}: expected sde type in {SDE_TYPES}, got {sde.sde_type}")
        if not (hasattr(sde, f_name) and hasattr(sde, g_name)):
            raise ValueError(
                f"{where}: sde must define {f_name}(t, y) and {g_name}(t, y); the "
                "f_and_g, g_prod and f_and_g_prod forms are not supported"
            )
        if not isinstance(y0, torch.Tensor) or y0.ndim != 2:
            raise ValueError(f"{where}: y0 must be a tensor of shape (batch, channels)")
        if not isinstance(ts, torch.Tensor):
            ts = torch.tensor(ts, dtype=y0.dtype, device=y0.device)
        if ts.requires_grad:
            raise ValueError(f"{where}: ts must not require grad")
        self.f, self.g = getattr(sde, f_name), getattr(sde, g_name)
        self.sde, self.y0, self.ts, self.where = sde, y0, ts, where
        self.native = _method(sde, method, where)
        if isinstance(dt, torch.Tensor):
            dt = float(dt)
        self.dt = dt
        noise = {"scalar": "general"}.get(sde.noise_type, sde.noise_type)
        g0 = self.g(ts[0], y0)
        m = g0.shape[-1] if g0.ndim == 3 else y0.shape[1]
        if sde.noise_type == "scalar" and m != 1:
            raise ValueError(f"{where}: scalar noise must have one channel; the diffusion has {m}")
        brownian = _brownian(bm, ts.tolist(), (y0.shape[0], m), y0.dtype, y0.device)
        seed = int(torch.randint(0, 2**62, ())) if brownian is None else 0
        self.problem = _SDE(
            self._drift,
            self._diffusion,
            noise=noise,
            sde_type=sde.sde_type,
            brownian=brownian,
            seed=seed,
        )

    def _drift(self, t, y):
        return self.f(t.reshape(-1)[0], y)

    def _diffusion(self, t, y):
        return self.g(t.reshape(-1)[0], y)

    def solve(self, adjoint):
        if self.ts.shape[0] == 1:
            return self.y0[None]
        sol = _solve(
            self.problem,
            self.y0,
            self.ts,
            method=self.native,
            dt=self.dt,
            adjoint=adjoint,
            max_steps=2**31 - 1,
        )
        return sol.ys.transpose(0, 1)


def _method(sde, method, where):
    if method is None:
        method = "euler" if sde.sde_type == "ito" else "midpoint"
    table = _METHODS[sde.sde_type]
    if method in table:
        return table[method]
    if method in _ABSENT:
        raise ValueError(
            f"{where}: method {method!r} has no native counterpart ({_ABSENT[method]}); "
            f"supported for {sde.sde_type} SDEs: {', '.join(table)}"
        )
    if method in METHODS:
        raise ValueError(
            f"{where}: method {method!r} does not handle {sde.sde_type} SDEs here; supported "
            f"for {sde.sde_type} SDEs: {', '.join(table)}"
        )
    raise ValueError(f"{where}: unknown method {method!r}; expected one of {METHODS}")


def sdeint(
    sde,
    y0,
    ts,
    bm=None,
    method=None,
    dt=1e-3,
    adaptive=False,
    rtol=1e-5,
    atol=1e-4,
    dt_min=1e-5,
    options=None,
    names=None,
    logqp=False,
    extra=False,
    extra_solver_state=None,
    **unused_kwargs,
):
    """Solve the SDE ``sde`` from ``y0`` at ``ts`` (torchsde's call).

    Args:
        sde: an object with ``f(t, y)`` and ``g(t, y)`` (``t`` 0-dim, ``y`` ``(batch, d)``;
            ``g`` returns ``(batch, d)`` for diagonal noise, ``(batch, d, m)`` otherwise,
            ``m = 1`` for scalar noise), and ``noise_type``, ``sde_type`` attributes.
        y0: ``(batch, d)``.
        ts: ``(T,)`` strictly increasing, a tensor or a list of floats.
        bm: the Brownian motion (see the module's docstring); shape ``(batch, m)``.
        method: see the module's docstring.
        dt: the largest step; each interval between output times is split into equal steps.
        adaptive: ``True`` is a ``ValueError`` (not mapped onto the native adaptive steps yet).
        rtol, atol, dt_min: used only by adaptive steps; accepted and unused.
        options, logqp, extra, extra_solver_state: not supported (a ``ValueError`` when set).
        names: ``{"drift": ..., "diffusion": ...}``: other method names for ``f`` and ``g``.

    Returns:
        ``(T, batch, d)``.
    """
    if unused_kwargs:
        raise ValueError(f"sdeint: unexpected arguments {sorted(unused_kwargs)}")
    extras = {"logqp": logqp, "extra": extra, "extra_solver_state": extra_solver_state}
    run = _Problem("sdeint", sde, y0, ts, bm, method, dt, adaptive, options, names, extras)
    return run.solve("direct")


def sdeint_adjoint(
    sde,
    y0,
    ts,
    bm=None,
    method=None,
    adjoint_method=None,
    dt=1e-3,
    adaptive=False,
    adjoint_adaptive=False,
    rtol=1e-5,
    adjoint_rtol=1e-5,
    atol=1e-4,
    adjoint_atol=1e-4,
    dt_min=1e-5,
    options=None,
    adjoint_options=None,
    adjoint_params=None,
    names=None,
    logqp=False,
    extra=False,
    extra_solver_state=None,
    **unused_kwargs,
):
    """:func:`sdeint` with gradients from the stochastic adjoint (native ``backsolve``:
    ``ReversibleAdjoint`` for ``reversible_heun``, ``StochasticAdjoint`` otherwise).

    The native stochastic adjoint takes Stratonovich SDEs (an Itô SDE is refused with a
    ``ValueError`` that says how to convert it) and steps backwards over the forward steps, so
    ``adjoint_method`` may only name the forward method (or ``adjoint_reversible_heun`` for
    ``reversible_heun``). ``adjoint_params`` default to ``sde.parameters()``; ``sde`` must then
    be an ``nn.Module``, as in torchsde.
    """
    if unused_kwargs:
        raise ValueError(f"sdeint_adjoint: unexpected arguments {sorted(unused_kwargs)}")
    if adjoint_params is None and not isinstance(sde, torch.nn.Module):
        raise ValueError(
            "sdeint_adjoint: sde must be an nn.Module for its parameters to be found; "
            "otherwise pass adjoint_params=(...)"
        )
    if adjoint_adaptive:
        raise ValueError("sdeint_adjoint: adjoint_adaptive=True is not supported")
    if adjoint_options:
        raise ValueError("sdeint_adjoint: adjoint_options are not supported")
    fwd = method if method is not None else ("euler" if sde.sde_type == "ito" else "midpoint")
    if adjoint_method not in (None, fwd) and not (
        fwd == "reversible_heun" and adjoint_method == "adjoint_reversible_heun"
    ):
        raise ValueError(
            f"sdeint_adjoint: adjoint_method={adjoint_method!r} is not supported: the native "
            f"adjoint steps back over the forward steps of {fwd!r}"
        )
    params = tuple(sde.parameters()) if adjoint_params is None else tuple(adjoint_params)
    params = tuple(p for p in params if p.requires_grad)
    extras = {"logqp": logqp, "extra": extra, "extra_solver_state": extra_solver_state}
    run = _Problem("sdeint_adjoint", sde, y0, ts, bm, method, dt, adaptive, options, names, extras)
    return run.solve(BacksolveAdjoint(params=params))

"""torchcde's ``cdeint``, coefficient functions and interpolation classes, on ``solvers``.

Same signatures, layouts and shapes as torchcde 0.2:

- coefficients: ``linear_interpolation_coeffs(x, t=None, rectilinear=None)`` returns the
  filled values ``(..., length, channels)`` (``(..., 2 length - 1, channels)`` for
  rectilinear); ``natural_cubic_coeffs`` and
  ``hermite_cubic_coefficients_with_backward_differences`` return ``(..., length - 1,
  4 channels)``, the pieces' ``[a, b, 2c, 3d]`` side by side. Values ``x`` are
  ``(..., length, channels)`` with any batch dimensions and NaN where missing; ``t`` defaults
  to ``0, 1, ..., length - 1``.
- ``LinearInterpolation(coeffs, t=None)`` and ``CubicSpline(coeffs, t=None)``: ``evaluate(t)``,
  ``derivative(t)``, ``interval``, ``grid_points``; as in torchcde a time on a knot belongs to
  the piece that ends there (left-continuous; the native paths are right-continuous).
- ``cdeint(X, func, z0, t, adjoint=True, backend="torchdiffeq", **kwargs)``: ``func(t, z)``
  with a 0-dim ``t`` returns ``(..., hidden, input)``; the result is ``(..., len(t),
  hidden)``. ``backend="torchdiffeq"`` solves with :mod:`solvers.compat.torchdiffeq`
  (``kwargs`` as its ``odeint`` takes them, ``rtol=1e-4``, ``atol=1e-6`` by default),
  ``backend="torchsde"`` with :mod:`solvers.compat.torchsde` (zero diffusion).

The coefficients without missing values and the Hermite and linear fills come from the native
paths of :func:`solvers.interpolate` (same definitions); the natural cubic spline of a
channel with missing values is fitted through that channel's observed points, as torchcde
does (the native path fills the gaps linearly first). The peer is not imported.
"""

from __future__ import annotations

import warnings

import torch

from .. import HermiteCubicPath, LinearPath, NaturalCubicPath, RectilinearPath
from . import torchdiffeq as _td
from . import torchsde as _ts

__all__ = [
    "CubicSpline",
    "LinearInterpolation",
    "cdeint",
    "hermite_cubic_coefficients_with_backward_differences",
    "linear_interpolation_coeffs",
    "natural_cubic_coeffs",
    "natural_cubic_spline_coeffs",
]


def _times(x, t):
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError("x must be a floating-point tensor of shape (..., length, channels)")
    if x.ndim < 2:
        raise ValueError(
            f"x must have at least two dimensions (length, channels), got shape {tuple(x.shape)}"
        )
    if t is None:
        t = torch.linspace(0, x.shape[-2] - 1, x.shape[-2], dtype=x.dtype, device=x.device)
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.ndim != 1:
        raise ValueError("t must be a one-dimensional floating-point tensor")
    if t.shape[0] != x.shape[-2]:
        raise ValueError(
            f"the time dimension of x ({x.shape[-2]}) must equal the length of t ({t.shape[0]})"
        )
    if t.shape[0] < 2:
        raise ValueError("x must have a time dimension of size at least 2")
    if not bool((t.detach().diff() > 0).all()):
        raise ValueError("t must be strictly increasing")
    return t


def _batch(x):
    """``x`` as ``(batch, length, channels)`` and a function restoring the batch dims."""
    lead = x.shape[:-2]
    flat = x.reshape(-1, *x.shape[-2:])
    return flat, lambda y: y.reshape(*lead, *y.shape[1:])


def _torchcde_layout(coefficients):
    """Native ``(batch, P, channels, 4)`` coefficients ``(a, b, c, d)`` as torchcde's
    ``(batch, P, 4 channels)`` ``[a, b, 2c, 3d]``."""
    a, b, c, d = coefficients.unbind(-1)
    return torch.cat([a, b, 2 * c, 3 * d], dim=-1)


def linear_interpolation_coeffs(x, t=None, rectilinear=None):
    """The knots of the linear interpolation of ``x`` (``(..., length, channels)``): ``x``
    with missing values filled linearly in time (ends held). With ``rectilinear`` (the index
    of the time channel) the ``(..., 2 length - 1, channels)`` knots of the rectilinear
    interpolation (Morrill et al., 2021): values held (forward filled) while time moves."""
    if rectilinear is not None:
        C = x.shape[-1]
        if isinstance(rectilinear, bool) or not isinstance(rectilinear, int):
            raise ValueError(f"rectilinear must be an integer channel index, got {rectilinear!r}")
        if not 0 <= rectilinear < C:
            raise ValueError(f"rectilinear must be in [0, {C - 1}], got {rectilinear}")
        if bool(torch.isnan(x[..., rectilinear]).any()):
            raise ValueError("the time channel of x must not hold missing values (NaN)")
        if bool(torch.isnan(x[..., 0, :]).any()):
            warnings.warn(
                "x begins with missing values in some channels: they are filled backwards from "
                "the first observation, which is not causal; fill them yourself (e.g. with the "
                "channel's mean) if the rectilinear path must be causal",
                stacklevel=2,
            )
        tt = _times(x, t)
        flat, back = _batch(x)
        filled = RectilinearPath(flat, tt, fill_value=0.0).values
        rep = filled.repeat_interleave(2, dim=-2)
        rep[..., :-1, rectilinear] = rep[..., 1:, rectilinear]
        return back(rep[..., :-1, :])
    tt = _times(x, t)
    if not bool(torch.isnan(x).any()):
        return x
    flat, back = _batch(x)
    return back(LinearPath(flat, tt, fill_value=0.0).values)


def hermite_cubic_coefficients_with_backward_differences(x, t=None):
    """Cubic Hermite coefficients with backward differences (Morrill et al., 2021), for
    :class:`CubicSpline`: ``(..., length - 1, 4 channels)``. Missing values are filled as
    :func:`linear_interpolation_coeffs` fills them."""
    tt = _times(x, t)
    flat, back = _batch(x)
    return back(_torchcde_layout(HermiteCubicPath(flat, tt, fill_value=0.0).coefficients))


def natural_cubic_coeffs(x, t=None):
    """Natural cubic spline coefficients, for :class:`CubicSpline`: ``(..., length - 1,
    4 channels)``. A channel with missing values gets the spline through its observed points
    (its leading and trailing gaps hold the first and last observation)."""
    return _natural(x, t, ends="runs")


def natural_cubic_spline_coeffs(x, t=None):
    """The deprecated form of :func:`natural_cubic_coeffs`: of a channel's leading and
    trailing gaps, only the first and last entries are filled."""
    return _natural(x, t, ends="endpoints")


def _natural(x, t, ends):
    tt = _times(x, t)
    flat, back = _batch(x)
    if not bool(torch.isnan(flat).any()):
        return back(_torchcde_layout(NaturalCubicPath(flat, tt).coefficients))
    B, L, C = flat.shape
    out = torch.empty(B, L - 1, C, 4, dtype=x.dtype, device=x.device)
    for i in range(B):
        for c in range(C):
            out[i, :, c] = _natural_channel(flat[i, :, c], tt, ends)
    return back(_torchcde_layout(out))


def _natural_channel(v, t, ends):
    """The ``(L - 1, 4)`` coefficients ``(a, b, c, d)`` on the grid ``t`` of the natural
    spline through the observed entries of one channel ``v``."""
    observed = ~torch.isnan(v.detach())
    if not bool(observed.any()):
        return torch.zeros(v.shape[0] - 1, 4, dtype=v.dtype, device=v.device)
    idx = torch.nonzero(observed)[:, 0]
    first, last = int(idx[0]), int(idx[-1])
    v = v.clone()
    if ends == "runs":
        v[:first] = v[first]
        v[last + 1 :] = v[last]
    else:
        v[0], v[-1] = v[first], v[last]
    observed = ~torch.isnan(v.detach())
    knots = t[observed]
    if knots.shape[0] == 1:
        zero = torch.zeros_like(t[:-1])
        return torch.stack([v[observed].expand_as(zero), zero, zero, zero], dim=-1)
    path = NaturalCubicPath(v[observed][None, :, None], knots)
    coeffs = path.coefficients[0, :, 0]  # (pieces, 4)
    grid = t[:-1]
    piece = torch.searchsorted(knots.detach(), grid.detach(), right=True) - 1
    piece = piece.clamp(0, coeffs.shape[0] - 1)
    a, b, c, d = coeffs[piece].unbind(-1)
    s = grid - knots[piece]
    return torch.stack(
        [a + s * (b + s * (c + s * d)), b + s * (2 * c + 3 * s * d), c + 3 * s * d, d], dim=-1
    )


class _Interpolation(torch.nn.Module):
    """What both of torchcde's interpolation classes share: the grid and the look-up."""

    def _set_grid(self, t, length, like):
        if t is None:
            t = torch.linspace(0, length - 1, length, dtype=like.dtype, device=like.device)
        self.register_buffer("_t", t)

    @property
    def grid_points(self):
        return self._t

    @property
    def interval(self):
        return torch.stack([self._t[0], self._t[-1]])

    def _interpret_t(self, t):
        """``(t - knot, piece index)`` of the piece that ``t`` lies in (torchcde's helper,
        which its tests call)."""
        return self._locate(t, self._t.shape[0] - 1)

    def _locate(self, t, pieces):
        t = torch.as_tensor(t, dtype=self._t.dtype, device=self._t.device)
        # a time on a knot belongs to the piece ending there, as in torchcde
        index = (torch.bucketize(t.detach(), self._t.detach()) - 1).clamp(0, pieces - 1)
        return t - self._t[index], index


class LinearInterpolation(_Interpolation):
    """The linear interpolation of the knots ``coeffs`` (from
    :func:`linear_interpolation_coeffs`, ``(..., length, channels)``) on the grid ``t``."""

    def __init__(self, coeffs, t=None, **kwargs):
        super().__init__(**kwargs)
        self._args = (coeffs, t)
        self._set_grid(t, coeffs.shape[-2], coeffs)
        derivs = (coeffs[..., 1:, :] - coeffs[..., :-1, :]) / self._t.diff().unsqueeze(-1)
        self.register_buffer("_coeffs", coeffs)
        self.register_buffer("_derivs", derivs)

    def evaluate(self, t):
        """``X(t)``: ``(..., channels)`` for a 0-dim ``t``."""
        frac, index = self._locate(t, self._derivs.shape[-2])
        return self._coeffs[..., index, :] + frac.unsqueeze(-1) * self._derivs[..., index, :]

    def derivative(self, t):
        """``dX/dt(t)``: ``(..., channels)`` for a 0-dim ``t``."""
        _, index = self._locate(t, self._derivs.shape[-2])
        return self._derivs[..., index, :]


class CubicSpline(_Interpolation):
    """The piecewise cubic of ``coeffs`` (from :func:`natural_cubic_coeffs` or
    :func:`hermite_cubic_coefficients_with_backward_differences`, ``(..., length - 1,
    4 channels)``) on the grid ``t``."""

    def __init__(self, coeffs, t=None, **kwargs):
        super().__init__(**kwargs)
        if coeffs.shape[-1] % 4:
            raise ValueError(
                f"CubicSpline: coeffs must have 4 x channels entries last, got {coeffs.shape[-1]}"
            )
        self._args = (coeffs, t)
        self._set_grid(t, coeffs.shape[-2] + 1, coeffs)
        C = coeffs.shape[-1] // 4
        for name, part in zip(("_a", "_b", "_two_c", "_three_d"), coeffs.split(C, dim=-1)):
            self.register_buffer(name, part)

    def evaluate(self, t):
        """``X(t)``: ``(..., channels)`` for a 0-dim ``t``."""
        frac, index = self._locate(t, self._b.shape[-2])
        frac = frac.unsqueeze(-1)
        inner = 0.5 * self._two_c[..., index, :] + self._three_d[..., index, :] * frac / 3
        inner = self._b[..., index, :] + inner * frac
        return self._a[..., index, :] + inner * frac

    def derivative(self, t):
        """``dX/dt(t)``: ``(..., channels)`` for a 0-dim ``t``."""
        frac, index = self._locate(t, self._b.shape[-2])
        frac = frac.unsqueeze(-1)
        inner = self._two_c[..., index, :] + self._three_d[..., index, :] * frac
        return self._b[..., index, :] + inner * frac


class _VectorField(torch.nn.Module):
    """``f(t, z) dX/dt(t)`` as an ODE vector field (and as a drift, with zero diffusion)."""

    def __init__(self, X, func, is_tensor, is_prod):
        super().__init__()
        self.X, self.func, self.is_tensor, self.is_prod = X, func, is_tensor, is_prod
        self.noise_type, self.sde_type = "additive", "stratonovich"

    def forward(self, t, z):
        dx = self.X.derivative(t)
        if self.is_prod:
            return self.func.prod(t, z, dx)
        fz = self.func(t, z)
        if self.is_tensor:
            return (fz @ dx.unsqueeze(-1)).squeeze(-1)
        return tuple((f @ d.unsqueeze(-1)).squeeze(-1) for f, d in zip(fz, dx))

    f = forward

    def g(self, t, z):
        return torch.zeros_like(z).unsqueeze(-1)


def _check(X, func, z0, t):
    if not hasattr(X, "derivative"):
        raise ValueError("cdeint: X must have a derivative(t) method")
    if not isinstance(t, torch.Tensor) or t.ndim != 1:
        raise ValueError("cdeint: t must be a one-dimensional tensor")
    dx = X.derivative(t[0].detach())
    is_prod = hasattr(func, "prod")
    out = func.prod(t[0], z0, dx) if is_prod else func(t[0], z0)
    is_tensor = isinstance(z0, torch.Tensor)
    if not is_tensor and not isinstance(z0, (tuple, list)):
        raise ValueError("cdeint: z0 must be a tensor or a tuple/list of tensors")
    zs, dxs, outs = (z0, dx, out) if not is_tensor else ((z0,), (dx,), (out,))
    if not is_tensor and not (len(zs) == len(dxs) == len(outs)):
        raise ValueError("cdeint: z0, X.derivative(t) and func(t, z) must be tuples of one length")
    for z, d, o in zip(zs, dxs, outs):
        if d.shape[:-1] != z.shape[:-1]:
            raise ValueError(
                f"cdeint: X.derivative returned shape {tuple(d.shape)}, whose batch dimensions "
                f"differ from those of z0, shape {tuple(z.shape)}"
            )
        want = z.shape if is_prod else (*z.shape, d.shape[-1])
        if o.shape != want:
            name = "func.prod" if is_prod else "func"
            raise ValueError(
                f"cdeint: {name} returned shape {tuple(o.shape)}; expected {tuple(want)} "
                "(batch..., hidden channels, input channels)"
                if not is_prod
                else f"cdeint: func.prod returned shape {tuple(o.shape)}; expected {tuple(want)}"
            )
    return is_tensor, is_prod


def _adjoint_run(X, func, is_prod, kwargs):
    """The adjoint solve of a path built from tensors in ``adjoint_params``.

    The continuous adjoint differentiates the field with respect to its parameters at every
    backward step; a path's buffers are computed from the tensors it was built from, and
    that graph can be walked only once. So the path is rebuilt from leaf copies of those
    tensors, its buffers are swapped for leaf copies too (the adjoint's parameters), and
    :class:`_PathLeaves` carries the buffers' gradients back through the construction once.
    """

    def rebuild(swap):
        args = [swap.get(id(x), x) if isinstance(x, torch.Tensor) else x for x in X._args]
        return type(X)(*args)

    def solve(path, z0, t, params):
        field = _VectorField(path, func, True, is_prod)
        kw = dict(kwargs, adjoint_params=tuple(params))
        return _td.odeint_adjoint(field, z0, t, **kw).movedim(0, -2)

    return {"built_from": {id(x) for x in X._args if isinstance(x, torch.Tensor)},
            "rebuild": rebuild, "solve": solve}  # fmt: skip


class _PathLeaves(torch.autograd.Function):
    """See :func:`_adjoint_run`."""

    @staticmethod
    def forward(ctx, run, z0, t, *params):
        z0_, t_ = (x.detach().requires_grad_(x.requires_grad) for x in (z0, t))
        args = {id(p): p.detach().requires_grad_(p.requires_grad) for p in params
                if id(p) in run["built_from"]}  # fmt: skip
        keep = [p for p in params if id(p) not in args]
        with torch.enable_grad():
            path = run["rebuild"](args)
            computed = [(n, b) for n, b in path.named_buffers() if b.requires_grad]
            leaves = [b.detach().requires_grad_(True) for _, b in computed]
            for (name, _), leaf in zip(computed, leaves):
                path._buffers[name] = leaf
            out = run["solve"](path, z0_, t_, [*keep, *leaves])
        ctx.out, ctx.z0, ctx.t = out, z0_, t_
        ctx.keep, ctx.leaves, ctx.computed = keep, leaves, [b for _, b in computed]
        ctx.slots = [("arg", args[id(p)]) if id(p) in args else ("keep", p) for p in params]
        return out.detach()

    @staticmethod
    def backward(ctx, grad):
        direct = [ctx.z0, ctx.t, *ctx.keep, *ctx.leaves]
        want = [x for x in direct if x.requires_grad]
        got = iter(torch.autograd.grad(ctx.out, want, grad, allow_unused=True))
        g = {id(x): next(got) for x in want}
        g_bufs = [g[id(x)] if g.get(id(x)) is not None else torch.zeros_like(x)
                  for x in ctx.leaves]  # fmt: skip
        args = [x for kind, x in ctx.slots if kind == "arg" and x.requires_grad]
        if args and ctx.computed:
            through = torch.autograd.grad(ctx.computed, args, g_bufs, allow_unused=True)
            g.update({id(a): d for a, d in zip(args, through)})
        out = [g.get(id(ctx.z0)), g.get(id(ctx.t))]
        out += [g.get(id(x)) for _, x in ctx.slots]
        return (None, *out)


def cdeint(X, func, z0, t, adjoint=True, backend="torchdiffeq", **kwargs):
    """Solve ``z(t) = z(t0) + ∫ f(s, z(s)) dX(s)`` at the times ``t`` (torchcde's call).

    Args:
        X: the control, with ``derivative(t)`` returning ``(..., input channels)`` for a
            0-dim ``t`` (e.g. :class:`CubicSpline`).
        func: ``func(t, z) -> (..., hidden, input)``, or an object with ``prod(t, z, dXdt)``
            returning ``(..., hidden)``. With ``adjoint=True`` an ``nn.Module`` (its parameters
            are differentiated) unless ``adjoint_params`` is given.
        z0: ``(..., hidden)``, or a tuple of such with ``X.derivative`` returning a tuple.
        t: ``(T,)`` output times.
        adjoint: gradients by the continuous adjoint (``odeint_adjoint`` / ``sdeint_adjoint``).
        backend: ``"torchdiffeq"`` or ``"torchsde"`` (the front-ends of this package).
        **kwargs: passed on (``method``, ``rtol``, ``atol``, ``options``, ...).

    Returns:
        ``(..., len(t), hidden)``: the time dimension second to last.
    """
    if backend not in ("torchdiffeq", "torchsde"):
        raise ValueError(
            f"cdeint: unknown backend {backend!r}; expected 'torchdiffeq' or 'torchsde'"
        )
    is_tensor, is_prod = _check(X, func, z0, t)
    field = _VectorField(X, func, is_tensor, is_prod)
    if backend == "torchdiffeq":
        kwargs.setdefault("atol", 1e-6)
        kwargs.setdefault("rtol", 1e-4)
        if adjoint:
            kwargs.setdefault("adjoint_atol", kwargs["atol"])
            kwargs.setdefault("adjoint_rtol", kwargs["rtol"])
            params = kwargs.get("adjoint_params")
            if params is not None and is_tensor and isinstance(X, _Interpolation):
                params = tuple(params)
                built_from = {id(x) for x in X._args if isinstance(x, torch.Tensor)}
                if any(id(p) in built_from and p.requires_grad for p in params):
                    return _PathLeaves.apply(_adjoint_run(X, func, is_prod, kwargs), z0, t, *params)
        odeint = _td.odeint_adjoint if adjoint else _td.odeint
        out = odeint(field, tuple(z0) if not is_tensor else z0, t, **kwargs)
    else:
        if not is_tensor or z0.ndim != 2:
            raise ValueError(
                "cdeint: backend='torchsde' needs z0 of shape (batch, hidden) (a tensor)"
            )
        sdeint = _ts.sdeint_adjoint if adjoint else _ts.sdeint
        out = sdeint(field, z0, t, **kwargs)
    if is_tensor:
        return out.movedim(0, -2)
    return tuple(o.movedim(0, -2) for o in out)

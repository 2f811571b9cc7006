"""torchdiffeq's ``odeint`` and ``odeint_adjoint``, running on :func:`solvers.solve`.

Same signatures, defaults and shapes as torchdiffeq 0.2: ``func(t, y)`` gets a 0-dim ``t``
and the state as the user gave it (a tensor of any shape, or a tuple of tensors), the
solution is time-major, ``(T, *y0.shape)`` (a tuple of those for a tuple state), ``t`` may
increase or decrease. Inside, the state is one sample of the native batch-first solve: the
tensors flattened and concatenated into ``(1, n)``; a decreasing ``t`` is solved forwards in
``s = -t``. The peer is not imported.

Methods (torchdiffeq name → native): ``dopri5``, ``bosh3``, ``tsit5``, ``euler``,
``midpoint``, ``implicit_euler`` → the same; ``heun2`` → ``heun``; ``rk4`` →
:data:`RK4_38`, the 3/8-rule tableau that torchdiffeq's ``rk4`` steps with (the native ``rk4``
is the classical tableau); ``heun3`` → :data:`HEUN3`. The others (``dopri8``,
``adaptive_heun``, ``fehlberg2``, the Adams methods, the other implicit methods,
``scipy_solver``) are a ``ValueError`` naming them; see ``docs/compat.md``.
"""

from __future__ import annotations

import warnings

import torch

from .. import ODE as _ODE
from .. import BacksolveAdjoint, ButcherTableau, ConstantStepSize, PIDController, StepTo
from .. import solve as _solve

__all__ = ["HEUN3", "RK4_38", "odeint", "odeint_adjoint", "odeint_event"]

#: torchdiffeq's ``rk4``: Kutta's 3/8 rule (fourth order).
RK4_38 = ButcherTableau(
    name="rk4_38",
    a=((1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
    b=(1 / 8, 3 / 8, 3 / 8, 1 / 8),
    c=(1 / 3, 2 / 3, 1.0),
    order=4,
    reference="W. Kutta, Beitrag zur näherungsweisen Integration totaler Differentialgleichungen, "
    "Z. Math. Phys. 46 (1901): the 3/8 rule.",
)

#: torchdiffeq's ``heun3``: Heun's third-order method.
HEUN3 = ButcherTableau(
    name="heun3",
    a=((1 / 3,), (0.0, 2 / 3)),
    b=(1 / 4, 0.0, 3 / 4),
    c=(1 / 3, 2 / 3),
    order=3,
    reference="K. Heun, Z. Math. Phys. 45 (1900): the three-stage third-order method.",
)

_FIXED = {
    "euler": "euler",
    "midpoint": "midpoint",
    "heun2": "heun",
    "rk4": RK4_38,
    "heun3": HEUN3,
    "implicit_euler": "implicit_euler",
}
_ADAPTIVE = {"dopri5": "dopri5", "bosh3": "bosh3", "tsit5": "tsit5"}
_ABSENT = {
    "dopri8": "no native 8(5,3) tableau with dense output",
    "adaptive_heun": "no native Heun-Euler tableau with dense output",
    "fehlberg2": "no native Fehlberg 2(1) tableau with dense output",
    "explicit_adams": "no multistep methods",
    "implicit_adams": "no multistep methods",
    "fixed_adams": "no multistep methods",
    "implicit_midpoint": "of the implicit methods only implicit_euler is native",
    "trapezoid": "of the implicit methods only implicit_euler is native",
    "radauIIA3": "of the implicit methods only implicit_euler is native",
    "radauIIA5": "of the implicit methods only implicit_euler is native",
    "gl4": "of the implicit methods only implicit_euler is native",
    "gl6": "of the implicit methods only implicit_euler is native",
    "sdirk2": "of the implicit methods only implicit_euler is native",
    "trbdf2": "of the implicit methods only implicit_euler is native",
    "scipy_solver": "SciPy is not a native method (compare with scipy directly)",
}
_FIXED_OPTIONS = ("step_size", "grid_constructor", "perturb", "interp")
_ADAPTIVE_OPTIONS = ("first_step", "max_num_steps", "jump_t", "safety", "ifactor", "dfactor")
_CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")


def odeint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, event_fn=None):
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0``, at the times ``t`` (torchdiffeq's call).

    Args:
        func: ``func(t, y)`` with ``t`` a 0-dim tensor and ``y`` shaped as ``y0`` (a tuple
            for a tuple ``y0``); returns ``dy/dt`` of the same shape(s).
        y0: a floating-point tensor of any shape (0-dim included) or a tuple of them.
        t: ``(T,)``, strictly increasing or strictly decreasing.
        rtol: relative tolerance of the adaptive methods (torchdiffeq's default 1e-7).
        atol: absolute tolerance of the adaptive methods (torchdiffeq's default 1e-9).
        method: ``None`` (``dopri5``) or one of ``dopri5``, ``bosh3``, ``tsit5``, ``euler``,
            ``midpoint``, ``heun2``, ``heun3``, ``rk4`` (the 3/8 rule, as torchdiffeq's).
        options: fixed-step methods: ``step_size`` (constant steps of at most this size,
            each interval between outputs split into equal steps; without it, one step per
            interval of ``t``), ``grid_constructor`` (``fn(func, y0, t) -> grid``: steps on
            that grid), ``perturb=False``, ``interp="linear"``. Adaptive methods:
            ``first_step``, ``max_num_steps``, ``jump_t``, ``safety``, ``ifactor``,
            ``dfactor``. Any other key, or a key of the other kind of method, is a
            ``ValueError``.
        event_fn: ``event_fn(t, y)`` (0-dim ``t``, ``y`` as ``func`` gets it) returning a
            scalar: the solve starts at ``t[0]``, goes in the direction of ``t[1]`` (forwards
            when ``t`` has one entry) and stops at the first zero crossing of ``event_fn``
            (native terminal events: adaptive methods only). The other entries of ``t`` are
            ignored, as in torchdiffeq.

    Returns:
        ``(T, *y0.shape)``, or a tuple of such for a tuple ``y0``. With ``event_fn``:
        ``(event_t, solution)``, ``event_t`` 0-dim and ``solution`` ``(2, *y0.shape)``,
        the states at ``t[0]`` and at the event; both differentiable (the event time by the
        implicit function theorem).
    """
    run = _Run(func, y0, t, rtol, atol, method, options, event_fn, "odeint")
    if event_fn is not None:
        return run.solve_until_event(event_fn)
    return run.solve(adjoint="direct")


def odeint_adjoint(
    func,
    y0,
    t,
    *,
    rtol=1e-7,
    atol=1e-9,
    method=None,
    options=None,
    event_fn=None,
    adjoint_rtol=None,
    adjoint_atol=None,
    adjoint_method=None,
    adjoint_options=None,
    adjoint_params=None,
):
    """:func:`odeint` with gradients from the continuous adjoint (native ``backsolve``).

    The backward solve uses ``adjoint_method``, ``adjoint_rtol``, ``adjoint_atol`` (default:
    the forward ones) and ``adjoint_options["step_size"]`` (default: ``options``'), and
    differentiates ``adjoint_params`` (default: ``func.parameters()``; ``func`` must then be
    an ``nn.Module``, as in torchdiffeq). Unlike torchdiffeq, a tensor that requires grad and
    that ``func`` reaches without it being in ``adjoint_params`` is refused (a
    ``ValueError``) instead of silently getting no gradient.
    """
    if adjoint_params is None and not isinstance(func, torch.nn.Module):
        raise ValueError(
            "odeint_adjoint: func must be an nn.Module for its parameters to be found; "
            "otherwise pass adjoint_params=(...) (adjoint_params=() when there are none)"
        )
    if adjoint_method is not None and adjoint_method != method and options is not None:
        if adjoint_options is None:
            raise ValueError(
                "odeint_adjoint: adjoint_method differs from method and options were given, "
                "so adjoint_options cannot be inferred from them: pass adjoint_options"
            )
    if event_fn is not None:
        raise ValueError(
            "odeint_adjoint: event_fn is not supported: the native terminal events give "
            "gradients through the event time under direct backpropagation only; use odeint "
            "(or odeint_event(..., odeint_interface=odeint))"
        )
    params = tuple(func.parameters()) if adjoint_params is None else tuple(adjoint_params)
    params = tuple(p for p in params if p.requires_grad)
    run = _Run(func, y0, t, rtol, atol, method, options, event_fn, "odeint_adjoint")
    back_method = run.method if adjoint_method is None else adjoint_method
    back_native, back_fixed = _native_method(back_method, "odeint_adjoint: adjoint_method")
    if adjoint_options is None:
        adjoint_options = {k: v for k, v in run.options.items() if k != "norm"}
    adjoint_options = dict(adjoint_options)
    if adjoint_options.get("norm") == "seminorm":
        del adjoint_options["norm"]  # what the native backward solve does anyway
    _check_options(adjoint_options, back_method, back_fixed, "odeint_adjoint: adjoint_options")
    if back_fixed and "grid_constructor" in adjoint_options:
        raise ValueError(
            "odeint_adjoint: the option grid_constructor is not supported for the backward "
            "solve; pass step_size in adjoint_options"
        )
    dt = adjoint_options.get("step_size")
    if back_fixed and dt is None:
        dt = run.back_step
    adjoint = BacksolveAdjoint(
        method=back_native,
        rtol=rtol if adjoint_rtol is None else adjoint_rtol,
        atol=atol if adjoint_atol is None else adjoint_atol,
        dt=dt,
        params=params,
    )
    return run.solve(adjoint=adjoint)


def odeint_event(func, y0, t0, *, event_fn, reverse_time=False, odeint_interface=odeint, **kwargs):
    """Solve from ``t0`` until the first zero crossing of ``event_fn(t, y)`` (torchdiffeq's
    call): forwards, or backwards with ``reverse_time=True``.

    Returns ``(event_t, solution)`` as :func:`odeint` with ``event_fn`` does: the event time
    (0-dim) and the states at ``t0`` and at the event, ``(2, *y0.shape)``. Gradients reach the
    event time and the state there through the native terminal events (implicit function
    theorem), so ``odeint_interface`` must be :func:`odeint`.
    """
    if odeint_interface is not odeint:
        raise ValueError(
            "odeint_event: odeint_interface other than solvers.compat.torchdiffeq.odeint is not "
            "supported (the native event gradients need direct backpropagation)"
        )
    t0 = torch.as_tensor(t0)
    t0 = t0 if t0.is_floating_point() else t0.to(torch.get_default_dtype())
    step = -1.0 if reverse_time else 1.0
    t = torch.cat([t0.reshape(-1), t0.reshape(-1).detach() + step])
    return odeint(func, y0, t, event_fn=event_fn, **kwargs)


def _native_method(method, where):
    """``(native method, fixed-step?)`` for a torchdiffeq method name."""
    if method is None:
        method = "dopri5"
    if method in _FIXED:
        return _FIXED[method], True
    if method in _ADAPTIVE:
        return _ADAPTIVE[method], False
    if method in _ABSENT:
        raise ValueError(
            f"{where} {method!r} is a torchdiffeq method without a native counterpart "
            f"({_ABSENT[method]}); supported: {', '.join([*_ADAPTIVE, *_FIXED])}"
        )
    raise ValueError(
        f"{where} {method!r} is unknown; supported: {', '.join([*_ADAPTIVE, *_FIXED])}"
    )


def _check_options(options, method, fixed, where):
    allowed = _FIXED_OPTIONS if fixed else _ADAPTIVE_OPTIONS
    kind = "fixed-step" if fixed else "adaptive"
    for key in options:
        if key not in allowed:
            raise ValueError(
                f"{where}: the option {key!r} is not supported for the {kind} method "
                f"{method or 'dopri5'!r}; supported options: {', '.join(allowed)}"
            )
    if options.get("perturb", False):
        raise ValueError(
            f"{where}: the option perturb=True is not supported (the native steps already "
            "evaluate a stage at the end of a step from the left of the output time)"
        )
    if options.get("interp", "linear") != "linear":
        raise ValueError(
            f"{where}: the option interp={options['interp']!r} is not supported (outputs lie "
            "on steps, so no interpolation is done)"
        )


class _Flat:
    """A tensor or tuple state as one ``(1, n)`` sample and back."""

    def __init__(self, y0, where):
        self.is_tuple = isinstance(y0, tuple)
        tensors = y0 if self.is_tuple else (y0,)
        for i, y in enumerate(tensors):
            if not isinstance(y, torch.Tensor):
                name = f"y0[{i}]" if self.is_tuple else "y0"
                raise TypeError(f"{where}: {name} must be a tensor, got {type(y).__name__}")
            if not y.is_floating_point():
                raise ValueError(f"{where}: y0 must be floating point, got dtype {y.dtype}")
        self.dtype = tensors[0].dtype
        for y in tensors[1:]:
            self.dtype = torch.promote_types(self.dtype, y.dtype)
        self.shapes = [y.shape for y in tensors]
        self.sizes = [y.numel() for y in tensors]
        self.flat = torch.cat([y.reshape(-1).to(self.dtype) for y in tensors])[None]

    def unflatten(self, x, lead=()):
        parts = torch.split(x, self.sizes, dim=-1)
        out = tuple(p.reshape((*lead, *s)) for p, s in zip(parts, self.shapes))
        return out if self.is_tuple else out[0]

    def flatten_output(self, out, where):
        outs = out if self.is_tuple else (out,)
        if self.is_tuple and (not isinstance(out, tuple) or len(out) != len(self.shapes)):
            got = f"a tuple of {len(out)}" if isinstance(out, tuple) else type(out).__name__
            raise ValueError(
                f"{where}: func must return a tuple of {len(self.shapes)} tensors, got {got}"
            )
        parts = []
        for i, (o, s) in enumerate(zip(outs, self.shapes)):
            if not isinstance(o, torch.Tensor):
                raise ValueError(f"{where}: func must return tensors, got {type(o).__name__}")
            if o.shape != s and o.numel() != s.numel():
                raise ValueError(
                    f"{where}: func returned shape {tuple(o.shape)} for state {i}; expected "
                    f"{tuple(s)}, the shape of y0"
                )
            parts.append(o.reshape(-1).to(self.dtype))
        return torch.cat(parts)[None]


class _Run:
    """One torchdiffeq-style call mapped onto a native solve."""

    def __init__(self, func, y0, t, rtol, atol, method, options, event_fn, where):
        if not callable(func):
            raise TypeError(f"{where}: func must be callable as func(t, y)")
        self.where, self.func = where, func
        self.state = _Flat(y0, where)
        if not isinstance(t, torch.Tensor) or t.ndim != 1:
            got = f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{where}: t must be a 1-D tensor, got {got}")
        if options is None:
            options = {}
        elif not isinstance(options, dict):
            raise TypeError(f"{where}: options must be a dict, got {type(options).__name__}")
        self.method, self.options = method, dict(options)
        self.native, self.fixed = _native_method(method, f"{where}: method")
        _check_options(self.options, method, self.fixed, where)
        for name in _CALLBACKS:
            if hasattr(func, name) or hasattr(func, name + "_adjoint"):
                warnings.warn(
                    f"{where}: func.{name} is not called by the native solver; remove it or "
                    "count steps from the solution's stats with solvers.solve",
                    stacklevel=3,
                )
                break
        self.reverse = t.shape[0] > 1 and bool(t.detach()[1] < t.detach()[0])
        self.t = t
        self.s = -t if self.reverse else t
        self.rtol, self.atol = float(rtol), float(atol)
        self.back_step = None
        if self.fixed and "grid_constructor" not in self.options and t.shape[0] > 1:
            self.back_step = float(self.options.get("step_size", _span(self.s)))

    def field(self, tt, x):
        s = tt.reshape(())
        time = -s if self.reverse else s
        out = self.func(time, self.state.unflatten(x[0]))
        flat = self.state.flatten_output(out, self.where)
        return -flat if self.reverse else flat

    def controller(self):
        opts = self.options
        if self.fixed:
            if "step_size" in opts:
                return ConstantStepSize(float(opts["step_size"]))
            if "grid_constructor" in opts:
                grid = opts["grid_constructor"](self.func, self.state.flat[0], self.t)
                grid = torch.as_tensor(grid, dtype=self.s.dtype, device=self.s.device).detach()
                grid = -grid if self.reverse else grid
                return StepTo(torch.sort(grid).values)
            return StepTo(self.s.detach())
        names = {"first_step": "first_step", "safety": "safety"}
        names.update(ifactor="factor_max", dfactor="factor_min")
        kwargs = {names[k]: float(v) for k, v in opts.items() if k in names}
        return PIDController(**kwargs)

    def problem(self):
        jumps = self.options.get("jump_t")
        if jumps is not None:
            jumps = torch.as_tensor(jumps, dtype=self.state.dtype, device=self.s.device)
            jumps = torch.sort(-jumps if self.reverse else jumps).values.reshape(-1)
        return _ODE(self.field, jump_times=jumps)

    def solve(self, adjoint):
        T = self.t.shape[0]
        flat = self.state.flat
        if T == 1:
            return self.state.unflatten(flat.expand(1, -1), lead=(1,))
        max_steps = int(self.options.get("max_num_steps", 2**31 - 1))
        sol = _solve(
            self.problem(),
            flat,
            self.s,
            method=self.native,
            rtol=self.rtol,
            atol=self.atol,
            controller=self.controller(),
            adjoint=adjoint,
            max_steps=max_steps,
        )
        return self.state.unflatten(sol.ys[0], lead=(T,))

    def solve_until_event(self, event_fn):
        """Solve from ``t[0]`` in windows of growing length until ``event_fn`` crosses zero;
        returns ``(event_t, solution)`` with ``solution`` the states at ``t[0]`` and at the
        event."""
        if self.fixed:
            raise ValueError(
                f"{self.where}: event_fn with the fixed-step method {self.method!r} is not "
                "supported: native terminal events are located on adaptive steps; use dopri5, "
                "bosh3 or tsit5"
            )
        if not callable(event_fn):
            raise TypeError(f"{self.where}: event_fn must be callable as event_fn(t, y)")

        def event(tt, x):
            time = -tt.reshape(()) if self.reverse else tt.reshape(())
            return event_fn(time, self.state.unflatten(x[0])).reshape(1).to(x.dtype)

        problem, flat = self.problem(), self.state.flat
        start = self.s[:1]
        width = 1.0
        for _ in range(24):  # windows up to 2**24 time units
            window = torch.cat([start, start.detach() + width])
            sol = _solve(
                problem,
                flat,
                window,
                method=self.native,
                rtol=self.rtol,
                atol=self.atol,
                controller=self.controller(),
                max_steps=int(self.options.get("max_num_steps", 2**31 - 1)),
                dense=True,
                event=event,
            )
            s_event = sol.event_t
            if not bool(torch.isnan(s_event.detach()).any()):
                y_event = sol.evaluate(s_event[:, None])[:, 0]
                break
            flat, start, width = sol.ys[:, -1], window[1:], 2 * width
        else:
            raise RuntimeError(
                f"{self.where}: event_fn did not cross zero before t = "
                f"{float(-start if self.reverse else start)}"
            )
        event_t = (-s_event if self.reverse else s_event).reshape(())
        both = torch.cat([self.state.flat, y_event])
        return event_t.to(self.t.dtype), self.state.unflatten(both, lead=(2,))


def _span(s):
    """The largest interval of a grid: one constant step per interval of ``s``."""
    return float(s.detach().diff().max())

"""Implicit methods for stiff problems: diagonally implicit Runge–Kutta tableaus with an
explicit first stage (ESDIRK), each stage solved by Newton iterations on a batched Jacobian.

A stage of an ESDIRK method is the solution ``z`` of ``z = b + hγ f(t_i, z)``, with
``b = y0 + h Σ_{j<i} a_ij k_j`` known from the earlier stages and the same ``γ`` on every
implicit stage. Newton's method solves ``G(z) = z - b - hγ f(t_i, z) = 0`` with the matrix
``M = I - hγ J``, ``J = ∂f/∂y``, per sample:

* the state's components are flattened to ``(batch, D)`` and ``J`` is ``(batch, D, D)``: each
  sample's Jacobian of its own derivative. The vector field must not mix samples (as every
  vector field that a batched solve can split into per-sample solves);
* by default ``J`` is computed once per step at ``(t0, y0)`` and ``M`` factorised once per
  step for every stage (the "chord" or simplified Newton method, as Hairer & Wanner's RADAU5
  and diffrax's ``VeryChord`` do); ``Newton(update="newton")`` recomputes both at every
  iteration (fewer iterations on strongly nonlinear problems, a Jacobian each);
* ``Newton(jacobian="autograd")`` computes ``J`` with one forward evaluation and ``D``
  vector-Jacobian products batched into one backward pass (``is_grads_batched``; one
  backward pass per row if the vector field has an operation without a batching rule);
  ``jacobian="finite_difference"`` with ``D`` forward differences, for vector fields that
  autograd cannot differentiate;
* a sample whose iteration converges (scaled increment ``‖Δ/(atol + rtol |z|)‖_rms ≤ 1``)
  stops; one whose increments grow, become non-finite or that has not converged after
  ``max_iters`` iterations fails, and the step of its lane is rejected: its ``y1`` is NaN
  and its error estimate infinite, so the adaptive loop shrinks that lane's step by the
  controller's ``factor_min`` and retries, and marks the sample ``NONFINITE`` after ten
  failures in a row (the loop's rule for non-finite steps); the other samples go on.
  Under constant steps there is no retry: the sample's state becomes NaN.

Gradients (``adjoint="direct"``) do not go through the Newton iterations: the converged
stage gets them from the implicit function theorem. One extra Newton step with the exact
Jacobian at the solution, ``z = z* - M(z*)^{-1} G(z*)``, is taken with the graph and added
as ``c - c.detach()`` (zero in value: the forward values are the same with and without
gradients), which gives ``dz = M(z*)^{-1} ∂G``: exact with ``jacobian="autograd"``.

Stage derivatives are taken from the stage equation, ``k_i = (z_i - b_i) / (hγ)``, not by
evaluating ``f`` again at ``z_i``: for stiff components ``f`` multiplies the Newton error by
the stiffness (Hairer & Wanner, Solving ODEs II, IV.8).
"""

from __future__ import annotations

import math
import threading
import warnings
from dataclasses import dataclass

import torch

from ._stepper import AbstractStepper
from ._term import AbstractDerivativeTerm, FunctionTerm

__all__ = ["ESDIRK", "ESDIRKTableau", "Newton"]

State = tuple[torch.Tensor, ...]

_JACOBIANS = ("autograd", "finite_difference")
_UPDATES = ("chord", "newton")
# Up to this many state dimensions a Jacobian takes one backward pass per row; above, one
# batched backward pass (vmap: faster for large states, but its first use imports and
# compiles much of torch.func, seconds).
_LOOP_ROWS = 16


@dataclass(frozen=True)
class Newton:
    """How the implicit stages are solved.

    Args:
        rtol: relative tolerance on the Newton increment (default ``1e-8``; never below
            ``100 ε`` of the state's dtype).
        atol: absolute tolerance on the Newton increment (default ``1e-10``).
        max_iters: iterations per stage before the sample's step is rejected (default 10).
        jacobian: ``"autograd"`` (default) or ``"finite_difference"``.
        update: ``"chord"`` (default): one Jacobian and one LU factorisation per step, at
            ``(t0, y0)``; ``"newton"``: both at every iteration.
    """

    rtol: float = 1e-8
    atol: float = 1e-10
    max_iters: int = 10
    jacobian: str = "autograd"
    update: str = "chord"

    def __post_init__(self):
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0):
                raise ValueError(f"Newton: {name} must be a non-negative number, got {v!r}")
        if self.rtol + self.atol == 0:
            raise ValueError("Newton: rtol and atol must not both be zero")
        if isinstance(self.max_iters, bool) or not isinstance(self.max_iters, int):
            raise ValueError(f"Newton: max_iters must be a positive int, got {self.max_iters!r}")
        if self.max_iters < 1:
            raise ValueError(f"Newton: max_iters must be a positive int, got {self.max_iters!r}")
        if self.jacobian not in _JACOBIANS:
            raise ValueError(
                f"Newton: unknown jacobian {self.jacobian!r}; valid: {', '.join(_JACOBIANS)}"
            )
        if self.update not in _UPDATES:
            raise ValueError(
                f"Newton: unknown update {self.update!r}; valid: {', '.join(_UPDATES)}"
            )


@dataclass(frozen=True)
class ESDIRKTableau:
    """A singly diagonally implicit Runge–Kutta tableau with an explicit first stage.

    ``a`` holds the rows of stages ``2..s`` with their diagonal entry last (row ``i`` has
    ``i`` entries, ``a[i][-1] = γ`` for every row); stage 1 is ``k_1 = f(t_0, y_0)``.
    ``c`` are the times of stages ``2..s`` (each the sum of its row). ``b_error`` are the
    weights of the error estimate (``b`` minus the embedded weights), of order
    ``error_order`` (both ``None``: a fixed-step method). ``predictor`` rows give each
    implicit stage's starting guess ``k_i ≈ Σ_{j<i} predictor[i][j] k_j`` (zeros: start from
    ``b_i``). A stiffly accurate tableau (``b`` is the last row, ``c = 1`` last) has a cubic
    Hermite dense output through both ends of the step.
    """

    name: str
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]
    order: int
    b_error: tuple[float, ...] | None
    error_order: int | None
    predictor: tuple[tuple[float, ...], ...]
    reference: str = ""

    def __post_init__(self):
        s = len(self.a) + 1
        if (self.b_error is None) != (self.error_order is None):
            raise ValueError(
                f"tableau {self.name!r}: give both b_error and error_order, or neither"
            )
        for field, n in (("b", s), ("b_error", s), ("c", s - 1), ("predictor", s - 1)):
            if getattr(self, field) is not None and len(getattr(self, field)) != n:
                raise ValueError(f"tableau {self.name!r}: {field} must have {n} entries")
        gamma = self.a[0][-1] if self.a else 0.0
        if not gamma > 0:
            raise ValueError(f"tableau {self.name!r}: the diagonal γ must be positive")
        for i, row in enumerate(self.a):
            if len(row) != i + 2:
                raise ValueError(
                    f"tableau {self.name!r}: row {i + 2} has {len(row)} entries, expected {i + 2}"
                )
            if row[-1] != gamma:
                raise ValueError(
                    f"tableau {self.name!r}: row {i + 2} has diagonal {row[-1]}, expected γ = "
                    f"{gamma} (singly diagonally implicit)"
                )
            if abs(sum(row) - self.c[i]) > 1e-12:
                raise ValueError(
                    f"tableau {self.name!r}: c[{i + 2}] = {self.c[i]} is not the sum of its row "
                    f"({sum(row)})"
                )
        if abs(sum(self.b) - 1) > 1e-12:
            raise ValueError(f"tableau {self.name!r}: the weights b sum to {sum(self.b)}, not 1")
        if self.b_error is not None and abs(sum(self.b_error)) > 1e-12:
            raise ValueError(f"tableau {self.name!r}: the error weights must sum to 0")
        for i, row in enumerate(self.predictor):
            if len(row) != i + 1:
                raise ValueError(
                    f"tableau {self.name!r}: predictor row {i + 2} has {len(row)} entries, "
                    f"expected {i + 1}"
                )

    @property
    def gamma(self) -> float:
        return self.a[0][-1]

    @property
    def stages(self) -> int:
        return len(self.a) + 1

    @property
    def stiffly_accurate(self) -> bool:
        return self.c[-1] == 1.0 and tuple(self.a[-1]) == tuple(self.b)


# ---------------------------------------------------------------------------------------------
# Batched Jacobians


def jacobian(fn, x: torch.Tensor, how: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(x)`` and the per-sample Jacobian of ``fn: (B, D) -> (B, D)`` at ``x``
    (``(B, D, D)``, ``J[b, i, j] = ∂fn(x)[b, i] / ∂x[b, j]``), both without a graph."""
    B, D = x.shape
    if how == "finite_difference":
        with torch.no_grad():
            fx = fn(x)
            step = math.sqrt(torch.finfo(x.dtype).eps) * x.abs().clamp_min(1.0)
            cols = []
            for j in range(D):
                xj = x.clone()
                xj[:, j] += step[:, j]
                hj = xj[:, j] - x[:, j]  # the step actually taken, after rounding
                cols.append((fn(xj) - fx) / hj[:, None])
            return fx, torch.stack(cols, dim=2)
    # The Jacobian's graph is local: its saved tensors are kept as they are, also inside an
    # activation checkpoint, whose hooks would otherwise drop them and recompute the whole
    # segment for every backward pass here.
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(_keep, _keep):
        xg = x.detach().requires_grad_(True)
        fx = fn(xg)
        if not fx.requires_grad:
            return fx.detach(), x.new_zeros(B, D, D)
        eye = torch.eye(D, dtype=x.dtype, device=x.device)[:, None, :].expand(D, B, D)
        rows = None
        if D > _LOOP_ROWS:
            try:
                with warnings.catch_warnings():
                    # operations without a batching rule fall back to a loop inside autograd
                    warnings.simplefilter("ignore")
                    (rows,) = torch.autograd.grad(
                        fx,
                        xg,
                        grad_outputs=eye,
                        is_grads_batched=True,
                        allow_unused=True,
                        retain_graph=True,
                    )
                if rows is None:
                    rows = x.new_zeros(D, B, D)
            except RuntimeError:
                rows = None
        if rows is None:
            rows = torch.stack([_grad_or_zero(fx, xg, eye[i]) for i in range(D)])
    return fx.detach(), rows.detach().permute(1, 0, 2)


def _keep(x):
    return x


def _grad_or_zero(fx, x, cot) -> torch.Tensor:
    (g,) = torch.autograd.grad(fx, x, grad_outputs=cot, retain_graph=True, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


# ---------------------------------------------------------------------------------------------
# Flattened states


class _Flat:
    """The leading ``reads`` components of a tuple state as one ``(B, D)`` matrix."""

    def __init__(self, y: State, reads: int):
        self.reads = reads
        self.shapes = [a.shape[1:] for a in y[:reads]]
        self.sizes = [int(math.prod(s)) for s in self.shapes]

    def flat(self, y: State) -> torch.Tensor:
        parts = [a.reshape(a.shape[0], -1) for a in y[: self.reads]]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def unflat(self, x: torch.Tensor) -> State:
        if len(self.sizes) == 1:
            return (x.reshape(x.shape[0], *self.shapes[0]),)
        parts = x.split(self.sizes, dim=1)
        return tuple(p.reshape(p.shape[0], *s) for p, s in zip(parts, self.shapes))


def _lanes(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``h`` (``(lanes,)``) shaped to broadcast against ``x`` (``(batch, ...)``)."""
    if h.shape[0] == 1:
        return h.reshape(())
    return h.reshape(h.shape + (1,) * (x.ndim - 1))


def _combine(y: State, h: torch.Tensor, weights, ks: list[State]) -> State:
    """``y + h Σ_j weights[j] k_j`` for every component, skipping zero weights."""
    out = []
    for i, yi in enumerate(y):
        acc = None
        for w, k in zip(weights, ks):
            if w != 0.0:
                acc = k[i] * w if acc is None else acc.add(k[i], alpha=w)
        out.append(yi if acc is None else yi + _lanes(h, yi) * acc)
    return tuple(out)


def _inverse(J: torch.Tensor, hg: torch.Tensor) -> torch.Tensor:
    """``(I - hγ J)^{-1}`` per sample (``hg``: ``(B,)``). An explicit inverse: each Newton
    iteration is then one batched matrix-vector product, much cheaper than a triangular
    solve for the small systems of a batch of samples (the iteration corrects the rounding)."""
    D = J.shape[-1]
    eye = torch.eye(D, dtype=J.dtype, device=J.device)
    inv, _ = torch.linalg.inv_ex(eye - hg[:, None, None] * J)
    return inv


def _solve(inv: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    return (inv @ rhs[:, :, None])[:, :, 0]


# ---------------------------------------------------------------------------------------------
# The stepper


class ESDIRK(AbstractStepper):
    """An ESDIRK method given by its :class:`ESDIRKTableau`, its stages solved by Newton
    iterations (:class:`Newton`).

    It accepts the terms that give ``dy/dt`` as a function of the state alone: ODEs, CDEs
    (through ``dX/dt``), Hamiltonian systems and the solvers' own systems. DDEs are refused
    (their history is filled from the dense output of explicit Runge–Kutta steps), SDEs too.
    With an error estimate it runs adaptively (a :class:`~solvers.PIDController`), and with
    constant steps in any case; has a cubic
    Hermite dense output. Each step evaluates the vector field at ``(t0, y0)``, computes one
    Jacobian there (chord update) and iterates each implicit stage; a sample whose Newton
    iteration fails rejects its step (see the module's docstring). A fixed-step solve reads
    back to the host once per Newton iteration (whether every sample has converged), so it
    cannot be captured in a CUDA graph.

    ``Stats.num_function_evals`` counts every batched evaluation of the vector field: one
    per step at its start, one per Newton iteration, ``1`` per Jacobian with
    ``jacobian="autograd"`` (its forward pass; the backward pass is not counted) or ``D + 1``
    with finite differences, and the extra evaluations of the gradient step.

    Args:
        tableau: the method's :class:`ESDIRKTableau`.
        newton: the :class:`Newton` settings (default ``Newton()``).
    """

    term_types = (AbstractDerivativeTerm,)
    has_dense_output = True

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(p for p in super().problems if p != "DDE")

    def reason_to_refuse(self, terms) -> str | None:
        if terms.keeps_history:
            return (
                f"method {self.name!r} does not accept a DDE problem (a DDE's history is "
                "filled from the dense output of explicit Runge–Kutta steps); it accepts "
                f"{', '.join(self.problems)}. Use an explicit method for DDEs, e.g. 'dopri5'"
            )
        return None

    def __init__(self, tableau: ESDIRKTableau, newton: Newton | None = None):
        if not isinstance(tableau, ESDIRKTableau):
            raise TypeError(
                f"ESDIRK: tableau must be an ESDIRKTableau, got {type(tableau).__name__}"
            )
        newton = Newton() if newton is None else newton
        if not isinstance(newton, Newton):
            raise TypeError(f"ESDIRK: newton must be a Newton, got {type(newton).__name__}")
        if not tableau.stiffly_accurate:
            raise ValueError(
                f"ESDIRK: tableau {tableau.name!r} is not stiffly accurate (b must be its last "
                "row, at c = 1): the dense output and the stage derivatives need it"
            )
        self.tableau, self.newton = tableau, newton
        self.name = tableau.name
        self.order = tableau.order
        self.error_order = tableau.error_order
        self.evals_per_step = tableau.stages + 1
        self._count = threading.local()

    def __repr__(self):
        return (
            f"ESDIRK({self.name!r}, order={self.order}, "
            f"{'adaptive' if self.adaptive else 'fixed-step'}, implicit, "
            f"problems=({', '.join(self.problems)}))"
        )

    # evaluations are counted as they happen (Newton iterations vary) and handed to the loop
    # by ``evals``, which it calls after every step (adaptive) or once after the loop (planned)
    def _add(self, n: int) -> None:
        self._count.n = getattr(self._count, "n", 0) + n

    def init(self, terms, t0, y0, f0):
        self._count.n = 0
        return None

    def evals(self, n_steps, state_given):
        n = getattr(self._count, "n", 0)
        self._count.n = 0
        return n

    def step(self, terms, t0, t1, h, y, state, *, control=None, left=None):
        tab, cfg = self.tableau, self.newton
        reads = terms.reads if isinstance(terms, FunctionTerm) and terms.reads else len(y)
        flat = _Flat(y, reads)
        rest = tuple(y[reads:])
        B = y[0].shape[0]
        dtype = y[0].dtype
        gamma = tab.gamma
        hb = h.expand(B) if h.shape[0] == 1 else h  # (B,) per sample
        hg = hb * gamma
        hg_safe = torch.where(hg != 0, hg, torch.ones_like(hg))
        eps = torch.finfo(dtype).eps
        rtol = max(cfg.rtol, 100 * eps)

        def field(ti, live=False):
            """``x -> f(ti, x)`` on flattened states; ``live``: with the graph of ``ti``."""
            tt = ti if live else ti.detach()

            def fn(x):
                self._add(1)
                return flat.flat(terms.derivative(tt, flat.unflat(x) + rest))

            return fn

        # the stage at (t0, y0), with its graph
        self._add(1)
        k1 = terms.derivative(t0, y)
        ks: list[State] = [k1]
        # whether anything the stages depend on carries a graph (the first stage tells for
        # the vector field's parameters and captured tensors)
        graph = torch.is_grad_enabled() and any(a.requires_grad for a in (*k1, *y, h, t0, t1))
        x0 = flat.flat(y).detach()
        inv = None
        if cfg.update == "chord":
            _, J0 = jacobian(field(t0), x0, cfg.jacobian)
            with torch.no_grad():
                inv = _inverse(J0, hg.detach())
        ok = torch.ones(B, dtype=torch.bool, device=y[0].device)
        zs: list[torch.Tensor] = []
        end_left = torch.nextafter(t1, t0)
        past = _stages_past_a_jump(terms, t0, t1, h, max(tab.c))
        for i, row in enumerate(tab.a):
            ci = tab.c[i]
            if ci == 1.0:
                # the left limit at the end of the step (a field piecewise smooth in t)
                ti = end_left
            else:
                ti = t0 + ci * h
                if ci > 1.0 and past is not None:
                    # a stage past the end of a step that ends on a jump would see the next
                    # piece of the field: it sees the left limit at the end instead
                    ti = torch.where(past, end_left, ti)
            base = _combine(y, h, row[:-1], ks)
            base_x = flat.flat(base)
            with torch.no_grad():
                guess = base_x.detach()
                pred = tab.predictor[i]
                if any(w != 0.0 for w in pred):
                    kp = sum(w * flat.flat(k).detach() for w, k in zip(pred, ks) if w != 0.0)
                    guess = guess + hg.detach()[:, None] * kp
                b_x, hgd = base_x.detach(), hg.detach()
                z, conv = self._newton(field(ti), guess, b_x, hgd, inv, rtol, full=inv is None)
                if inv is not None and not bool(conv.all()):
                    # the step's Jacobian is too far off for this stage (a field that changes
                    # fast in t, a large step): full Newton, a fresh Jacobian per iteration
                    z2, conv2 = self._newton(field(ti), guess, b_x, hgd, None, rtol, full=True)
                    z = torch.where(conv[:, None], z, z2)
                    conv = conv | conv2
            ok = ok & conv
            if graph:
                z = self._with_gradient(field, ti, z, base_x, hg)
            zs.append(z)
            k_flat = (z - base_x) / hg_safe[:, None]
            k = flat.unflat(k_flat)
            if rest:
                # the quadratures: what the field returns for them at the converged stage
                self._add(1)
                k = k + tuple(terms.derivative(ti, flat.unflat(z) + rest)[reads:])
            ks.append(k)
        y1 = flat.unflat(zs[-1]) + tuple(
            _combine(rest, h, tab.b, [k[reads:] for k in ks]) if rest else ()
        )
        zeros = tuple(torch.zeros_like(a) for a in y)
        err = None if tab.b_error is None else _combine(zeros, h, tab.b_error, ks)
        if not bool(ok.all()):
            y1 = tuple(_mark(ok, a, float("nan")) for a in y1)
            if err is not None:
                err = tuple(_mark(ok, e, float("inf")) for e in err)
        return y1, err, (y, y1, h, k1, ks[-1]), None

    def _newton(self, fn, z, base, hg, inv, rtol, full: bool):
        """Solve ``z = base + hγ fn(z)`` per sample from the guess ``z``; returns the solution
        and ``(B,)`` whether each sample converged. ``full``: a fresh Jacobian at every
        iteration, else the inverse ``inv`` throughout. No graph."""
        cfg = self.newton
        B, D = z.shape
        hg_col = hg[:, None]
        root_d = math.sqrt(D)
        converged = torch.zeros(B, dtype=torch.bool, device=z.device)
        done = converged
        prev = torch.full((B,), math.inf, dtype=z.dtype, device=z.device)
        for _ in range(cfg.max_iters):
            if full:
                fz, J = jacobian(fn, z, cfg.jacobian)
                inv = _inverse(J, hg)
            else:
                fz = fn(z)
            G = torch.addcmul(z - base, hg_col, fz, value=-1.0)
            dz = _solve(inv, G)  # z - dz is the next iterate
            norm = torch.linalg.vector_norm(dz / (cfg.atol + rtol * z.abs()), dim=1) / root_d
            conv = norm <= 1  # False for NaN
            # diverging: increments that do not shrink (or are not finite)
            bad = ~conv & ~(norm < prev)
            active = ~done
            z = torch.where((active & ~bad)[:, None], z - dz, z)
            converged = converged | (active & conv)
            done = done | conv | bad
            prev = norm
            if bool(done.all()):
                break
        return z, converged

    def _with_gradient(self, field, ti, z, base_x, hg):
        """The converged stage ``z`` with the implicit function theorem's gradient: one
        Newton step with the graph and the exact Jacobian at ``z``, added as zero."""
        fz = field(ti, live=True)(z.detach())
        G = z - base_x - hg[:, None] * fz
        if not G.requires_grad:
            return z
        _, J = jacobian(field(ti), z, self.newton.jacobian)
        inv = _inverse(J, hg.detach())
        c = _solve(inv, G)
        return z - (c - c.detach())

    def interpolate(self, dense_info, theta):
        """Cubic Hermite interpolation through both ends of the step and their slopes."""
        y0, y1, h, k0, k1 = dense_info
        out = []
        for a, b, f0, f1 in zip(y0, y1, k0, k1):
            th = _lanes(theta, a)
            hh = _lanes(h, a)
            th2, th3 = th * th, th * th * th
            h00 = 2 * th3 - 3 * th2 + 1
            h10 = th3 - 2 * th2 + th
            h01 = -2 * th3 + 3 * th2
            h11 = th3 - th2
            out.append(h00 * a + h01 * b + hh * (h10 * f0 + h11 * f1))
        return tuple(out)


def _stages_past_a_jump(terms, t0, t1, h, c_max: float):
    """``(lanes,)``: whether a jump time of ``terms`` lies in ``[t1, t0 + c_max h]`` (a stage
    past the end of the step would cross it); ``None`` when no stage lies past the end or the
    terms have no jump times. Steps never cross a jump, so one at ``t1`` is the only kind."""
    jumps = terms.jump_times() if c_max > 1.0 else None
    if jumps is None or jumps.numel() == 0:
        return None
    j = jumps.detach().to(device=t1.device, dtype=t1.dtype)
    j = j[None] if j.ndim == 1 else j
    lo = t1.detach()[:, None]
    hi = (t0 + c_max * h).detach()[:, None]
    hit = ((j >= lo) & (j <= hi)).any(1)
    if hit.shape[0] != t1.shape[0]:  # per-sample jumps, one lane: any sample's
        hit = hit.any().reshape(1).expand(t1.shape[0])
    return hit


def _mark(ok: torch.Tensor, a: torch.Tensor, value: float) -> torch.Tensor:
    """``a`` with the samples that are not ``ok`` set to ``value``."""
    return torch.where(ok.reshape(ok.shape + (1,) * (a.ndim - 1)), a, torch.full_like(a, value))

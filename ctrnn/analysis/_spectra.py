"""Jacobian spectra: eigenvalues of a cell's state Jacobian along a trajectory, of a
continuous model's vector field, and the stability function of an explicit Runge–Kutta
method.

A fixed-step scheme applied to ``dh/dt = F(h)`` near a state ``h*`` behaves like the scheme
applied to the linear test equation ``y' = λ y`` for each eigenvalue ``λ`` of ``∂F/∂h(h*)``:
one step multiplies that mode by ``R(dt λ)``, where ``R`` is the method's stability
function. The step is stable for that mode when ``|R(dt λ)| ≤ 1``. For an explicit
Runge–Kutta method with tableau ``(A, b)``, ``R(z) = 1 + z bᵀ (I - z A)⁻¹ 1``, a polynomial
of degree at most the number of stages (Hairer & Wanner, *Solving ODEs II*, IV.2).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import solvers

from ._autodiff import expand_rows, jacobian
from ._targets import as_sequence, resolve_cell, resolve_continuous

__all__ = [
    "cell_jacobian_eigenvalues",
    "in_stability_region",
    "stability_function",
    "stability_polynomial",
    "vector_field_eigenvalues",
]


def cell_jacobian_eigenvalues(
    model: nn.Module, inputs: torch.Tensor, h0: torch.Tensor | None = None
) -> torch.Tensor:
    """Eigenvalues of ``∂h_{t+1}/∂h_t`` at every step of a run: ``(batch, T, state_size)``.

    Args:
        model: a cell or a discrete-mode :class:`~ctrnn.models.SequenceModel`.
        inputs: ``(batch, T, input_size)`` or ``(T, input_size)``.
        h0: initial states ``(batch, state_size)`` (default: the cell's initial state).

    Complex eigenvalues (``torch.complex`` of the inputs' precision). A discrete map is
    locally contracting along a mode whose eigenvalue lies inside the unit circle; products of
    Jacobians along a trajectory are what the Lyapunov exponents measure, so these
    eigenvalues show the local picture, not the long-run rates.
    """
    owner = "cell_jacobian_eigenvalues"
    cell = resolve_cell(model, owner)
    inputs = as_sequence(inputs, owner)
    if inputs.shape[2] != cell.input_size:
        raise ValueError(
            f"{owner}: {type(cell).__name__} reads {cell.input_size} input features, got "
            f"inputs of shape {tuple(inputs.shape)}"
        )
    B = inputs.shape[0] if h0 is None else h0.shape[0]
    h = cell.initial_state(B, device=inputs.device, dtype=inputs.dtype) if h0 is None else h0
    out = []
    for x in inputs.unbind(1):

        def step(s, x=x):
            return cell(expand_rows(x, s.shape[0], owner).to(s.dtype), s)

        h, J = jacobian(step, h.detach(), owner)
        out.append(torch.linalg.eigvals(J))
    return torch.stack(out, dim=1)


def vector_field_eigenvalues(
    model: nn.Module,
    h: torch.Tensor,
    x: torch.Tensor,
    t: float | torch.Tensor = 0.0,
    **vector_field_kwargs: torch.Tensor,
) -> torch.Tensor:
    """Eigenvalues of ``∂F/∂h`` of a continuous model's vector field ``F(t, h, x)``.

    Args:
        model: a continuous model or a :class:`~ctrnn.models.SequenceModel` holding one.
        h: states ``(..., state_size)``, for instance a solution ``(batch, T, state_size)``.
        x: inputs ``(..., input_size)`` with the same leading shape (or broadcastable).
        t: the time (the library's models are autonomous given ``x``).
        vector_field_kwargs: extra arguments of ``vector_field``, for instance
            ``h_delayed`` for a τ-GRU (the Jacobian is then with respect to ``h(t)`` alone).

    Returns ``(..., state_size)`` complex eigenvalues. Multiply by ``dt`` and compare with
    :func:`in_stability_region` to see whether a scheme is stable at these states.
    """
    owner = "vector_field_eigenvalues"
    continuous, _ = resolve_continuous(model, owner)
    d = continuous.state_size
    if h.shape[-1] != d or x.shape[-1] != continuous.input_size:
        raise ValueError(
            f"{owner}: expected h (..., {d}) and x (..., {continuous.input_size}), got "
            f"{tuple(h.shape)} and {tuple(x.shape)}"
        )
    lead = torch.broadcast_shapes(h.shape[:-1], x.shape[:-1])
    hf = h.expand(*lead, d).reshape(-1, d)
    xf = x.expand(*lead, x.shape[-1]).reshape(-1, x.shape[-1]).to(h.dtype)
    extra = {
        name: v.expand(*lead, v.shape[-1]).reshape(-1, v.shape[-1])
        for name, v in vector_field_kwargs.items()
    }

    def field(s):
        rows = s.shape[0]
        tt = torch.as_tensor(t, dtype=s.dtype, device=s.device).expand(rows)
        kw = {name: expand_rows(v, rows, owner) for name, v in extra.items()}
        return continuous.vector_field(tt, s, expand_rows(xf, rows, owner), **kw)

    _, J = jacobian(field, hf.detach(), owner)
    return torch.linalg.eigvals(J).reshape(*lead, d)


def _tableau(method) -> solvers.ButcherTableau:
    if isinstance(method, solvers.ButcherTableau):
        return method
    if isinstance(method, solvers.ExplicitRungeKutta):
        return method.tableau
    if isinstance(method, str):
        found = solvers.methods().get(method)
        if isinstance(found, solvers.ExplicitRungeKutta):
            return found.tableau
    rk = [n for n, m in solvers.methods().items() if isinstance(m, solvers.ExplicitRungeKutta)]
    raise ValueError(
        f"stability_function: the stability function is defined here for explicit "
        f"Runge–Kutta methods ({', '.join(rk)}) or a ButcherTableau, got {method!r}"
    )


def _matrices(tab: solvers.ButcherTableau) -> tuple[np.ndarray, np.ndarray]:
    s = tab.stages
    A = np.zeros((s, s))
    for i, row in enumerate(tab.a):
        A[i + 1, : len(row)] = row
    return A, np.asarray(tab.b, dtype=np.float64)


def stability_polynomial(method) -> np.ndarray:
    """Coefficients ``[c_0, c_1, …, c_s]`` of ``R(z) = Σ_j c_j z^j`` for an explicit RK method.

    ``c_0 = 1`` and ``c_j = bᵀ A^{j-1} 1``: the resolvent ``(I - z A)⁻¹`` is the finite
    Neumann series ``Σ_j (z A)^j`` because ``A`` is strictly lower triangular. Explicit Euler
    gives ``1 + z``; the classical RK4, ``1 + z + z²/2 + z³/6 + z⁴/24``.
    """
    A, b = _matrices(_tableau(method))
    s = len(b)
    coeffs = [1.0]
    v = np.ones(s)
    for _ in range(s):
        coeffs.append(float(b @ v))
        v = A @ v
    return np.asarray(coeffs)


def stability_function(method, z) -> np.ndarray:
    """``R(z) = 1 + z bᵀ (I - z A)⁻¹ 1`` of an explicit Runge–Kutta method, at complex ``z``.

    ``method`` is a name (``"euler"``, ``"rk4"``, …), an :class:`solvers.ExplicitRungeKutta`
    or a :class:`solvers.ButcherTableau`; ``z`` any array of complex numbers (a tensor is
    converted). Evaluated by solving with ``I - z A`` at each point.
    """
    A, b = _matrices(_tableau(method))
    z = np.asarray(z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else z, complex)
    s = len(b)
    flat = z.reshape(-1)
    systems = np.eye(s)[None] - flat[:, None, None] * A[None]
    stages = np.linalg.solve(systems, np.ones((flat.size, s, 1), dtype=complex))[..., 0]
    return (1 + flat * (stages @ b)).reshape(z.shape)


def in_stability_region(method, z, tol: float = 1e-12) -> np.ndarray:
    """Whether ``|R(z)| ≤ 1`` (up to ``tol``) at each ``z``: boolean array of ``z``'s shape."""
    return np.abs(stability_function(method, z)) <= 1 + tol

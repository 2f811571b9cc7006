"""Hamiltonian deep networks (Galimberti, Furieri, Xu & Ferrari-Trecate, "Hamiltonian Deep
Neural Networks Guaranteeing Non-vanishing Gradients by Design", IEEE TAC 2023,
arXiv:2105.13205).

The state ``y = (p, q)`` (momenta first, as in :class:`solvers.HamiltonianODE`) follows

    dy/dt = J ∇H(y, t),    H(y, t) = 1ᵀ log cosh(K(t) y + b(t)),    ∇H = Kᵀ tanh(K y + b)

with a skew-symmetric ``J``. Two forms live here:

- :class:`HamiltonianNet`: the paper's depth-wise network; layer ``j`` is one step of size
  ``h`` with its own ``K_j, b_j``. ``H1`` is forward Euler; ``H2`` is semi-implicit Euler on
  the split ``(p, q)`` state, whose layer Jacobians are symplectic, so that
  ``‖∂y_N/∂y_j‖ ≥ 1`` at any depth.
- :class:`HamiltonianRNN`: the same vector field used as a recurrent model; the input
  ``x(t)`` enters additively inside the activation, ``dy/dt = J Kᵀ tanh(K y + U x + b)``
  (so the system stays Hamiltonian for every frozen input, with ``H = 1ᵀ log cosh(K y + U x
  + b)``).

The 2-D classification data sets of the paper (``swiss_roll``, ``double_circles``,
``double_moons``) are synthetic generators written from the paper's description; they live in
:mod:`ctrnn.data` and are re-exported here.
"""

from __future__ import annotations

import math

import torch
from torch import nn

import solvers

from ..data.synthetic import double_circles, double_moons, swiss_roll
from ._base import AbstractCell, AbstractContinuousRNN, check_step
from ._registry import ModelSpec, register_model

__all__ = [
    "HamiltonianNet",
    "HamiltonianRNN",
    "SymplecticCell",
    "double_circles",
    "double_moons",
    "skew_matrix",
    "swiss_roll",
]

#: the symplectic splittings of ``solvers`` that :meth:`HamiltonianRNN.discretize` accepts
SYMPLECTIC_SCHEMES = (
    "semi_implicit_euler",
    "semi_implicit_euler_drift_first",
    "leapfrog",
    "yoshida4",
)


def skew_matrix(kind: str, n: int, *, device=None, dtype=None) -> torch.Tensor:
    """The interconnection matrix ``J`` of size ``(n, n)``.

    ``"J1"`` is the canonical block form ``[[0, -I], [I, 0]]`` (``n`` even), which gives
    ``dp/dt = -∂H/∂q``, ``dq/dt = ∂H/∂p`` as in :class:`solvers.HamiltonianODE`. ``"J2"`` has
    ``+1`` above the diagonal and ``-1`` below it (any ``n``).
    """
    if kind == "J1":
        if n % 2:
            raise ValueError(f"skew_matrix: J1 needs an even size (p and q halves), got {n}")
        m = n // 2
        J = torch.zeros(n, n, device=device, dtype=dtype)
        eye = torch.eye(m, device=device, dtype=dtype)
        J[:m, m:] = -eye
        J[m:, :m] = eye
        return J
    if kind == "J2":
        ones = torch.ones(n, n, device=device, dtype=dtype)
        return torch.triu(ones, 1) - torch.tril(ones, -1)
    raise ValueError(f"skew_matrix: J must be 'J1' or 'J2', got {kind!r}")


class HamiltonianNet(nn.Module):
    """The depth-wise Hamiltonian network of Galimberti et al.: ``(batch, n) -> (batch, n)``.

    Args:
        n_features: size ``n`` of the state ``y = (p, q)`` (even for ``H2`` and ``J1``).
        depth: number of layers ``N``.
        h: step size (the paper's ``T / N``).
        scheme: ``"H1"``: forward Euler, ``y_{j+1} = y_j + h J K_jᵀ tanh(K_j y_j + b_j)``,
            with a full ``K_j`` and either ``J``. ``"H2"``: semi-implicit Euler on the split
            state with ``K_j = blockdiag(K_{p,j}, K_{q,j})`` and ``J = J1``::

                p_{j+1} = p_j - h K_{q,j}ᵀ tanh(K_{q,j} q_j + b_{q,j})
                q_{j+1} = q_j + h K_{p,j}ᵀ tanh(K_{p,j} p_{j+1} + b_{p,j})

            ``"H2_drift_first"``: the same with ``q`` updated first from ``p_j``, then ``p``
            from ``q_{j+1}`` (the adjoint symplectic Euler; the ordering of the authors'
            public code). Both ``H2`` forms are symplectic.
        J: ``"J1"`` or ``"J2"`` (see :func:`skew_matrix`); ``H2`` needs ``J1``.
        init_std: standard deviation of the initial ``K_j`` (the biases start at zero).

    Parameters: ``K (depth, n, n)`` for ``H1``; ``K_p, K_q (depth, n/2, n/2)`` for ``H2``;
    ``b (depth, n)``.
    """

    def __init__(
        self,
        n_features: int,
        depth: int,
        h: float = 0.1,
        scheme: str = "H1",
        J: str = "J1",
        init_std: float = 1.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        for name, v in (("n_features", n_features), ("depth", depth)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"HamiltonianNet: {name} must be a positive integer, got {v!r}")
        if not h > 0:
            raise ValueError(f"HamiltonianNet: h must be positive, got {h!r}")
        if scheme not in ("H1", "H2", "H2_drift_first"):
            raise ValueError(
                f"HamiltonianNet: scheme must be 'H1', 'H2' or 'H2_drift_first', got {scheme!r}"
            )
        if scheme != "H1" and J != "J1":
            raise ValueError(
                f"HamiltonianNet: {scheme} is semi-implicit Euler on the split (p, q) state and "
                f"needs J='J1' (the canonical block form); got J={J!r}. Use scheme='H1' for J2"
            )
        self.n_features, self.depth, self.h = n_features, depth, float(h)
        self.scheme, self.J_kind = scheme, J
        kw = dict(device=device, dtype=dtype)
        self.register_buffer("J", skew_matrix(J, n_features, **kw))
        n = n_features
        if scheme == "H1":
            self.K = nn.Parameter(torch.randn(depth, n, n, **kw) * init_std)
        else:
            m = n // 2
            self.K_p = nn.Parameter(torch.randn(depth, m, m, **kw) * init_std)
            self.K_q = nn.Parameter(torch.randn(depth, m, m, **kw) * init_std)
        self.b = nn.Parameter(torch.zeros(depth, n, **kw))

    def layer(self, j: int, y: torch.Tensor) -> torch.Tensor:
        """Layer ``j`` applied to ``y (batch, n)``."""
        h = self.h
        if self.scheme == "H1":
            K = self.K[j]
            grad = torch.tanh(y @ K.T + self.b[j]) @ K  # ∇H = Kᵀ tanh(K y + b), row form
            return y + h * grad @ self.J.T
        m = self.n_features // 2
        p, q = y[:, :m], y[:, m:]
        b_p, b_q = self.b[j, :m], self.b[j, m:]
        K_p, K_q = self.K_p[j], self.K_q[j]

        def kick(p, q):
            return p - h * torch.tanh(q @ K_q.T + b_q) @ K_q

        def drift(p, q):
            return q + h * torch.tanh(p @ K_p.T + b_p) @ K_p

        if self.scheme == "H2":
            p = kick(p, q)
            q = drift(p, q)
        else:
            q = drift(p, q)
            p = kick(p, q)
        return torch.cat([p, q], dim=1)

    def forward(self, y: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Layers ``start .. end-1`` applied to ``y (batch, n)`` (or unbatched ``(n,)``)."""
        if y.shape[-1] != self.n_features or y.dim() not in (1, 2):
            raise ValueError(
                f"HamiltonianNet: expected y of shape (batch, {self.n_features}), got "
                f"{tuple(y.shape)}"
            )
        unbatched = y.dim() == 1
        if unbatched:
            y = y.unsqueeze(0)
        for j in range(start, self.depth if end is None else end):
            y = self.layer(j, y)
        return y.squeeze(0) if unbatched else y

    def states(self, y: torch.Tensor) -> torch.Tensor:
        """Every layer's output, ``(batch, depth + 1, n)``, the input first."""
        out = [y]
        for j in range(self.depth):
            out.append(self.layer(j, out[-1]))
        return torch.stack(out, dim=1)

    def regularization(self) -> torch.Tensor:
        """The smoothness regulariser on consecutive layers' weights (the paper's ``R``):
        ``h Σ_j ½ (‖K_{j+1} - K_j‖² + ‖b_{j+1} - b_j‖²)``; multiply by your ``α``."""
        weights = [self.K] if self.scheme == "H1" else [self.K_p, self.K_q]
        total = sum(((w[1:] - w[:-1]) ** 2).sum() for w in [*weights, self.b])
        return 0.5 * self.h * total

    def extra_repr(self) -> str:
        return (
            f"{self.n_features}, depth={self.depth}, h={self.h}, scheme={self.scheme!r}, "
            f"J={self.J_kind!r}"
        )


class HamiltonianRNN(AbstractContinuousRNN):
    """The Hamiltonian vector field as a recurrent model, input as additive forcing::

        dy/dt = J Kᵀ tanh(K y + U x(t) + b),    y = (p, q),  state (batch, hidden_size)

    Args:
        input_size: channels of ``x``.
        hidden_size: size of ``y``, even (``p`` and ``q`` halves, as
            :class:`solvers.HamiltonianODE` requires); the hidden output is all of ``y``.
        J: ``"J1"`` (canonical, :func:`skew_matrix`) or ``"J2"``.
        split: ``True`` (default) uses ``K = blockdiag(K_p, K_q)`` with ``J1``: the system is
            separable, ``dp/dt = -K_qᵀ tanh(K_q q + U_q x + b_q)``,
            ``dq/dt = K_pᵀ tanh(K_p p + U_p x + b_p)``, :meth:`problem` is a separable
            :class:`solvers.HamiltonianODE` and the symplectic schemes apply. ``False`` uses a
            full ``K`` and any ``J``; :meth:`problem` is ``HamiltonianODE.from_gradient``.

    ``discretize("euler", dt)`` is the H1-type cell, ``discretize("semi_implicit_euler", dt)``
    the H2-type cell; ``semi_implicit_euler_drift_first``, ``leapfrog`` and ``yoshida4`` are
    the other symplectic splittings; every explicit Runge–Kutta scheme applies as well.
    """

    extra_schemes = SYMPLECTIC_SCHEMES

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        J: str = "J1",
        split: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__(input_size, hidden_size)
        if split and J != "J1":
            raise ValueError(
                f"HamiltonianRNN: split=True is the separable (p, q) form and needs J='J1'; "
                f"got J={J!r}. Use split=False for J2"
            )
        if hidden_size % 2:
            raise ValueError(
                f"HamiltonianRNN: hidden_size must be even (the state is (p, q), as in "
                f"solvers.HamiltonianODE), got {hidden_size}"
            )
        kw = dict(device=device, dtype=dtype)
        self.split, self.J_kind = split, J
        self.register_buffer("J", skew_matrix(J, hidden_size, **kw))
        n = hidden_size
        self.input_map = nn.Linear(input_size, n, **kw)  # U x + b
        if split:
            m = n // 2
            self.K_p = nn.Parameter(torch.randn(m, m, **kw) / math.sqrt(m))
            self.K_q = nn.Parameter(torch.randn(m, m, **kw) / math.sqrt(m))
        else:
            self.K = nn.Parameter(torch.randn(n, n, **kw) / math.sqrt(n))

    # -- the vector field -------------------------------------------------------------------

    def force(self, q: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``dp/dt = -K_qᵀ tanh(K_q q + u_q)`` for the split form; ``u = U x + b``."""
        m = self.hidden_size // 2
        return -torch.tanh(q @ self.K_q.T + u[:, m:]) @ self.K_q

    def velocity(self, p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``dq/dt = K_pᵀ tanh(K_p p + u_p)`` for the split form."""
        m = self.hidden_size // 2
        return torch.tanh(p @ self.K_p.T + u[:, :m]) @ self.K_p

    def grad_H(self, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``∇H = Kᵀ tanh(K y + u)`` for the full form."""
        return torch.tanh(y @ self.K.T + u) @ self.K

    def vector_field(self, t, h, x):
        u = self.input_map(x)
        if self.split:
            m = self.hidden_size // 2
            return torch.cat([self.force(h[:, m:], u), self.velocity(h[:, :m], u)], dim=1)
        return self.grad_H(h, u) @ self.J.T

    # -- discretizations and the continuous problem ------------------------------------------

    def discretize(self, scheme: str = "semi_implicit_euler", dt: float = 1.0) -> AbstractCell:
        if scheme in SYMPLECTIC_SCHEMES:
            dt = check_step("HamiltonianRNN.discretize", dt)
            if not self.split:
                raise ValueError(
                    f"HamiltonianRNN.discretize: {scheme!r} is a symplectic splitting and needs "
                    "the separable (p, q) system, dp/dt depending on q only and dq/dt on p "
                    f"only; this model has split=False (full K, J={self.J_kind!r}). Build it "
                    "with split=True and J='J1', or use an explicit scheme such as 'euler'"
                )
            return SymplecticCell(self, solvers.methods()[scheme].scheme, float(dt))
        return super().discretize(scheme, dt)

    def problem(self, inputs):
        if self.split:
            return solvers.HamiltonianODE(_Force(self, inputs), _Velocity(self, inputs))
        return solvers.HamiltonianODE.from_gradient(_Gradient(self, inputs), self.J)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, J={self.J_kind!r}, split={self.split}"


class _Force(nn.Module):
    # Modules (not closures), so that a backsolve adjoint finds the model's parameters.
    def __init__(self, model: HamiltonianRNN, inputs):
        super().__init__()
        self.model, self.inputs = model, inputs

    def forward(self, t, q):
        return self.model.force(q, self.model.input_map(self.inputs(t)))


class _Velocity(_Force):
    def forward(self, t, p):
        return self.model.velocity(p, self.model.input_map(self.inputs(t)))


class _Gradient(_Force):
    def forward(self, t, y):
        return self.model.grad_H(y, self.model.input_map(self.inputs(t)))


class SymplecticCell(AbstractCell):
    """One step of a symplectic splitting of a split :class:`HamiltonianRNN`, input held.

    The coefficients are those of the ``solvers`` splitting scheme of the same name
    (``solvers.methods()[scheme].scheme``); a per-sample step ``dt (batch,)`` scales them
    per sample. With ``semi_implicit_euler`` this is the H2 cell, ``u = U x + b``::

        p' = p - dt K_qᵀ tanh(K_q q + u_q)
        q' = q + dt K_pᵀ tanh(K_p p' + u_p)
    """

    takes_dt = True

    def __init__(self, model: HamiltonianRNN, scheme, dt: float):
        super().__init__(model.input_size, model.hidden_size)
        self.model, self.scheme, self.dt = model, scheme, dt

    def step(self, x, h, dt=None):
        m = self.hidden_size // 2
        u = self.model.input_map(x)
        p, q = h[:, :m], h[:, m:]
        dt = self.dt if dt is None else dt[:, None]
        kicks, drifts = self.scheme.kicks, self.scheme.drifts
        for i, b in enumerate(kicks):
            if b != 0.0:
                p = p + (b * dt) * self.model.force(q, u)
            if i < len(drifts) and drifts[i] != 0.0:
                q = q + (drifts[i] * dt) * self.model.velocity(p, u)
        return torch.cat([p, q], dim=1)

    def extra_repr(self):
        return f"HamiltonianRNN, scheme={self.scheme.name!r}, dt={self.dt}"


register_model(
    ModelSpec(
        "hamiltonian",
        HamiltonianRNN,
        defaults=dict(scheme="semi_implicit_euler", dt=1.0),
        summary="Hamiltonian recurrent network (Galimberti et al., IEEE TAC 2023)",
    )
)

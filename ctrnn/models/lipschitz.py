"""The Lipschitz RNN: ``dh/dt = A h + tanh(W h + U x + b)`` (Erichson, Azencot, Queiruga,
Hodgkinson & Mahoney, "Lipschitz recurrent neural networks", ICLR 2021).

``A = (1-β_A)(M_A + M_Aᵀ) + β_A(M_A - M_Aᵀ) - γ_A I`` and ``W`` is built the same way from
its own matrix ``M_W`` with ``β_W, γ_W``: β blends a symmetric and a skew-symmetric part and
γ shifts the spectrum to the left, which bounds the Lipschitz constant of the dynamics.
:class:`LipschitzDynamics` (this construction and the vector field) is shared with the
noise-injected RNN (:mod:`ctrnn.models.noisy`).
"""

from __future__ import annotations

import torch
from torch import nn

from ._base import AbstractContinuousRNN
from ._registry import ModelSpec, register_model

__all__ = ["LipschitzDynamics", "LipschitzRNN", "lipschitz_matrix"]


def lipschitz_matrix(M: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """``(1-β)(M + Mᵀ) + β(M - Mᵀ) - γI`` for a square ``M (n, n)``."""
    eye = torch.eye(M.shape[0], dtype=M.dtype, device=M.device)
    return (1 - beta) * (M + M.T) + beta * (M - M.T) - gamma * eye


def _check_beta_gamma(owner: str, suffix: str, beta, gamma) -> tuple[float, float]:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta <= 1:
        raise ValueError(
            f"{owner}: beta_{suffix} must be a number in [0, 1] (it blends the symmetric and "
            f"skew-symmetric parts), got {beta!r}"
        )
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma >= 0:
        raise ValueError(
            f"{owner}: gamma_{suffix} must be a number >= 0 (it shifts the spectrum of "
            f"{suffix} to the left), got {gamma!r}"
        )
    return float(beta), float(gamma)


class LipschitzDynamics(nn.Module):
    """``F(h, x) = A h + tanh(W h + U x + b)`` with ``A``, ``W`` from :func:`lipschitz_matrix`.

    Parameters: ``M_A``, ``M_W`` ``(hidden_size, hidden_size)``, initialised
    ``N(0, (init_std / hidden_size)²)`` as in the authors' code; ``U`` a ``nn.Linear`` (its
    bias is ``b``), Xavier-normal weight and zero bias as in the authors' code.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        beta_A: float = 0.75,
        gamma_A: float = 0.001,
        beta_W: float = 0.75,
        gamma_W: float = 0.001,
        init_std: float = 1.0,
        bias: bool = True,
        owner: str = "LipschitzDynamics",
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.beta_A, self.gamma_A = _check_beta_gamma(owner, "A", beta_A, gamma_A)
        self.beta_W, self.gamma_W = _check_beta_gamma(owner, "W", beta_W, gamma_W)
        if isinstance(init_std, bool) or not isinstance(init_std, (int, float)) or init_std < 0:
            raise ValueError(f"{owner}: init_std must be a number >= 0, got {init_std!r}")
        kw = dict(device=device, dtype=dtype)
        std = init_std / hidden_size
        self.M_A = nn.Parameter(torch.randn(hidden_size, hidden_size, **kw) * std)
        self.M_W = nn.Parameter(torch.randn(hidden_size, hidden_size, **kw) * std)
        self.U = nn.Linear(input_size, hidden_size, bias=bias, **kw)
        nn.init.xavier_normal_(self.U.weight)
        if bias:
            nn.init.zeros_(self.U.bias)

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, W)``, each ``(hidden_size, hidden_size)``."""
        return (
            lipschitz_matrix(self.M_A, self.beta_A, self.gamma_A),
            lipschitz_matrix(self.M_W, self.beta_W, self.gamma_W),
        )

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``A h + tanh(W h + U x + b)`` for ``h (batch, hidden)``, ``x (batch, input)``."""
        A, W = self.matrices()
        return h @ A.T + torch.tanh(h @ W.T + self.U(x))

    def extra_repr(self) -> str:
        return (
            f"beta_A={self.beta_A}, gamma_A={self.gamma_A}, "
            f"beta_W={self.beta_W}, gamma_W={self.gamma_W}"
        )


class LipschitzRNN(AbstractContinuousRNN):
    """The Lipschitz RNN ``dh/dt = A h + tanh(W h + U x + b)`` (Erichson et al., ICLR 2021).

    Args:
        input_size, hidden_size: sizes of ``x`` and ``h``.
        beta_A, gamma_A: ``A = (1-β_A)(M_A + M_Aᵀ) + β_A(M_A - M_Aᵀ) - γ_A I``;
            ``β_A ∈ [0, 1]``, ``γ_A ≥ 0`` (default 0.75, 0.001).
        beta_W, gamma_W: the same for ``W`` (default 0.75, 0.001).
        init_std: ``M_A, M_W ~ N(0, (init_std / hidden_size)²)`` (default 1).
        bias: whether ``U`` has the bias ``b``.

    ``discretize("euler", ε)`` is the paper's cell ``h ← h + ε(A h + tanh(W h + U x + b))``;
    the paper also uses a second-order scheme (``"midpoint"`` or ``"heun"``); ``"rk4"`` and
    the other explicit Runge–Kutta schemes apply too. The input is held over a step.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        beta_A: float = 0.75,
        gamma_A: float = 0.001,
        beta_W: float = 0.75,
        gamma_W: float = 0.001,
        init_std: float = 1.0,
        bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__(input_size, hidden_size)
        self.dynamics = LipschitzDynamics(
            input_size,
            hidden_size,
            beta_A=beta_A,
            gamma_A=gamma_A,
            beta_W=beta_W,
            gamma_W=gamma_W,
            init_std=init_std,
            bias=bias,
            owner=type(self).__name__,
            device=device,
            dtype=dtype,
        )

    def vector_field(self, t, h, x):
        return self.dynamics(h, x)

    def linear_part(self):
        """``A``: ``discretize("exponential_euler", dt)`` integrates ``A h`` exactly."""
        return self.dynamics.matrices()[0]


register_model(
    ModelSpec(
        "lipschitz_rnn",
        LipschitzRNN,
        defaults=dict(dt=0.03),
        summary="Lipschitz RNN (Erichson et al., ICLR 2021)",
    )
)

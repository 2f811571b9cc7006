"""Step-size control for adaptive methods."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PIDController"]


@dataclass(frozen=True)
class PIDController:
    """A PID step-size controller (Söderlind), applied per sample.

    The new step is ``h · safety · ε_n^(-β1/k) · ε_{n-1}^(-β2/k) · ε_{n-2}^(-β3/k)`` with
    ``β1 = p + i + d``, ``β2 = -(p + 2d)``, ``β3 = d``, ``ε`` the scaled error norms of the
    last accepted steps and ``k`` one more than the order of the error estimate; the factor
    is clipped to ``[factor_min, factor_max]``. The defaults (``i = 1``) give the classical
    integral controller; ``pcoeff=0.4, icoeff=0.3`` is a common PI choice for 5(4) pairs.

    Reference: G. Söderlind, Digital filters in adaptive time-stepping, ACM TOMS 29 (2003).
    """

    pcoeff: float = 0.0
    icoeff: float = 1.0
    dcoeff: float = 0.0
    safety: float = 0.9
    factor_min: float = 0.2
    factor_max: float = 10.0

    def __post_init__(self):
        if not 0 < self.safety <= 1:
            raise ValueError(f"PIDController: safety must be in (0, 1], got {self.safety}")
        if not 0 < self.factor_min < 1 < self.factor_max:
            raise ValueError(
                "PIDController: need 0 < factor_min < 1 < factor_max, got "
                f"factor_min={self.factor_min}, factor_max={self.factor_max}"
            )
        if self.icoeff <= 0:
            raise ValueError(f"PIDController: icoeff must be positive, got {self.icoeff}")

    def factor(self, norm, prev1, prev2, k: int) -> torch.Tensor:
        """Multiplier of the step size given this step's norm and the two before."""
        b1 = (self.pcoeff + self.icoeff + self.dcoeff) / k
        b2 = -(self.pcoeff + 2 * self.dcoeff) / k
        b3 = self.dcoeff / k
        tiny = torch.finfo(norm.dtype).tiny
        f = self.safety * norm.clamp_min(tiny) ** (-b1)
        if b2:
            f = f * prev1.clamp_min(tiny) ** (-b2)
        if b3:
            f = f * prev2.clamp_min(tiny) ** (-b3)
        return f.nan_to_num(nan=self.factor_min).clamp(self.factor_min, self.factor_max)

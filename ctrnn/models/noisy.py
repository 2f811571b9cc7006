"""The noise-injected RNN (Lim, Erichson, Hodgkinson & Mahoney, "Noisy recurrent neural
networks", NeurIPS 2021): the Lipschitz RNN's dynamics driven by a Brownian motion,

``dh = (A h + tanh(W h + U x + b)) dt + ε (σ_add I + σ_mult diag(h)) dB``

with ``A`` and ``W`` built as in :mod:`ctrnn.models.lipschitz`. Noise is injected in
training only (``module.training``); in evaluation the model is its drift.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

import solvers

from ._base import AbstractCell, AbstractContinuousRNN, check_step, runge_kutta
from ._registry import ModelSpec, register_model
from .lipschitz import LipschitzDynamics

__all__ = ["NoisyRNN", "NoisyRNNCell", "NoisyRNNCodeCell"]

_VARIANTS = ("paper", "code")


class BoundField(nn.Module):
    """``fn(t, h)`` as an ``nn.Module`` whose parameters are ``owner``'s, so that
    ``adjoint="backsolve"`` finds them (a plain closure exposes none to ``solvers``)."""

    def __init__(self, owner: nn.Module, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.owner, self.fn = owner, fn

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.fn(t, h)


def _nonnegative(owner: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{owner}: {name} must be a number >= 0, got {value!r}")
    return float(value)


class NoisyRNN(AbstractContinuousRNN):
    """The noise-injected RNN: an Itô SDE with diagonal noise (Lim et al., NeurIPS 2021).

    Args:
        input_size, hidden_size: sizes of ``x`` and ``h``.
        beta_A, gamma_A, beta_W, gamma_W, init_std, bias: the drift, as in
            :class:`~ctrnn.models.lipschitz.LipschitzRNN` (defaults 0.75, 0.001, 0.75, 0.001).
        sigma_add, sigma_mult: additive and multiplicative noise levels (default 0.02 each,
            the authors' "small noise" setting).
        noise_scale: ``ε`` in the diffusion ``ε (σ_add + σ_mult h)`` (default 1).
        sde_type: ``"ito"`` (the paper's SDE) or ``"stratonovich"``: the *same* process
            written in Stratonovich form (drift ``F - ½ ε² σ_mult (σ_add + σ_mult h)``), for
            the Stratonovich methods and ``adjoint="backsolve"``.
        variant: ``"paper"`` (the SDE above, Euler–Maruyama cell) or ``"code"``: the
            authors' code's cell ``h ← h + d ⊙ m ⊙ F(h, x) + σ_add ξ`` with a learned
            per-unit step ``d`` (initialised to ``step_init``), ``m ~ U[1 - σ_mult, 1)``
            and ``ξ ~ N(0, I)`` in training (``m = 1``, ``ξ = 0`` in evaluation). The code
            variant has no SDE form: it is discrete only.
        step_init: initial value of ``d`` (``variant="code"``; default 0.01).

    Schemes: ``"euler_maruyama"`` (the paper's; :class:`NoisyRNNCell`, or
    :class:`NoisyRNNCodeCell` for ``variant="code"``), and the explicit Runge–Kutta schemes
    (``"euler"``, ``"rk4"``, ...) of the drift alone, noise off. Continuous mode solves the
    :meth:`problem`, a :class:`solvers.SDE`, with an SDE method.
    """

    problem_type = "sde"
    extra_schemes = ("euler_maruyama",)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        beta_A: float = 0.75,
        gamma_A: float = 0.001,
        beta_W: float = 0.75,
        gamma_W: float = 0.001,
        sigma_add: float = 0.02,
        sigma_mult: float = 0.02,
        noise_scale: float = 1.0,
        sde_type: str = "ito",
        variant: str = "paper",
        step_init: float = 0.01,
        init_std: float = 1.0,
        bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__(input_size, hidden_size)
        name = type(self).__name__
        self.dynamics = LipschitzDynamics(
            input_size,
            hidden_size,
            beta_A=beta_A,
            gamma_A=gamma_A,
            beta_W=beta_W,
            gamma_W=gamma_W,
            init_std=init_std,
            bias=bias,
            owner=name,
            device=device,
            dtype=dtype,
        )
        self.sigma_add = _nonnegative(name, "sigma_add", sigma_add)
        self.sigma_mult = _nonnegative(name, "sigma_mult", sigma_mult)
        self.noise_scale = _nonnegative(name, "noise_scale", noise_scale)
        if sde_type not in ("ito", "stratonovich"):
            raise ValueError(f"{name}: sde_type must be 'ito' or 'stratonovich', got {sde_type!r}")
        if variant not in _VARIANTS:
            raise ValueError(
                f"{name}: variant must be one of {', '.join(_VARIANTS)}, got {variant!r}"
            )
        self.sde_type, self.variant = sde_type, variant
        if variant == "code":
            step_init = _nonnegative(name, "step_init", step_init)
            self.unit_step = nn.Parameter(
                torch.full((hidden_size,), step_init, device=device, dtype=dtype)
            )
        else:
            self.unit_step = None

    def vector_field(self, t, h, x):
        """The drift ``A h + tanh(W h + U x + b)`` (Itô form)."""
        return self.dynamics(h, x)

    def diffusion(self, h: torch.Tensor) -> torch.Tensor:
        """The diagonal diffusion ``ε (σ_add + σ_mult h)``, ``(batch, hidden_size)``."""
        return self.noise_scale * (self.sigma_add + self.sigma_mult * h)

    def noisy(self) -> bool:
        """Whether noise is injected now: in training, with a nonzero noise level."""
        return (
            self.training and self.noise_scale > 0 and (self.sigma_add > 0 or self.sigma_mult > 0)
        )

    def discretize(self, scheme: str = "euler_maruyama", dt: float = 0.01) -> AbstractCell:
        """``"euler_maruyama"``: :class:`NoisyRNNCell` (or :class:`NoisyRNNCodeCell` for
        ``variant="code"``); an explicit Runge–Kutta name: that scheme on the drift, no noise."""
        name = type(self).__name__
        if scheme == "euler_maruyama":
            dt = check_step(f"{name}.discretize", dt)
            if self.variant == "code":
                return NoisyRNNCodeCell(self)
            return NoisyRNNCell(self, dt)
        if scheme in solvers.sde_methods() and runge_kutta(scheme) is None:
            raise ValueError(
                f"{name}.discretize: {scheme!r} is an SDE method without a cell here; the "
                "noisy RNN's cell is 'euler_maruyama' (the paper's scheme). Use "
                f"mode='continuous' with solver=dict(method={scheme!r}, dt=...) to solve with it"
            )
        return super().discretize(scheme, dt)

    def default_solver(self, dt: float) -> dict:
        """Euler–Maruyama with the discrete mode's step ``dt`` (the paper's scheme)."""
        return dict(method="euler_maruyama", dt=dt)

    def continuous_form_error(self) -> str | None:
        if self.variant == "code":
            return (
                f"{type(self).__name__}: variant='code' (the authors' code's cell) is discrete "
                "only; use mode='discrete' or variant='paper'"
            )
        return None

    def problem(
        self,
        inputs: Callable[[torch.Tensor], torch.Tensor],
        *,
        brownian: solvers.BrownianPath | None = None,
        seed: int | None = None,
    ) -> solvers.SDE:
        """The :class:`solvers.SDE` for inputs given as a function of time.

        In training the diffusion is :meth:`diffusion` and, unless ``seed`` or ``brownian``
        is given, the seed of the Brownian path is drawn from torch's global generator, so
        every forward pass sees a fresh path (reproducible under ``torch.manual_seed``). In
        evaluation the diffusion is zero: the solve is the drift's, deterministic.
        """
        if self.variant == "code":
            raise ValueError(
                f"{type(self).__name__}: variant='code' (the authors' code's cell) has no SDE "
                "form; use mode='discrete' with scheme='euler_maruyama', or variant='paper'"
            )
        noisy = self.noisy()
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item()) if noisy and brownian is None else 0
        ito = self.noise_scale**2 * self.sigma_mult / 2

        def drift(t, h):
            f = self.vector_field(t, h, inputs(t))
            if noisy and self.sde_type == "stratonovich":
                f = f - ito * (self.sigma_add + self.sigma_mult * h)
            return f

        def diffusion(t, h):
            return self.diffusion(h) if noisy else torch.zeros_like(h)

        return solvers.SDE(
            BoundField(self, drift),
            BoundField(self, diffusion),
            noise="diagonal",
            sde_type=self.sde_type,
            brownian=brownian,
            seed=seed,
        )

    def extra_repr(self) -> str:
        return (
            f"sigma_add={self.sigma_add}, sigma_mult={self.sigma_mult}, "
            f"noise_scale={self.noise_scale}, sde_type={self.sde_type!r}, variant={self.variant!r}"
        )


class NoisyRNNCell(AbstractCell):
    """One Euler–Maruyama step of :class:`NoisyRNN` (the paper's cell):

    ``h ← h + Δt F(h, x) + ε (σ_add + σ_mult h) ⊙ ΔB``, ``ΔB ~ N(0, Δt I)``

    drawn with torch's generator when the model is training; ``h + Δt F(h, x)`` (the
    Lipschitz RNN's Euler cell) otherwise. :meth:`step_with_increment` takes a given ``ΔB``.
    A per-sample step ``dt (batch,)`` gives each sample its own ``Δt`` and ``ΔB ~ N(0, Δt)``.
    """

    takes_dt = True

    def __init__(self, model: NoisyRNN, dt: float):
        super().__init__(model.input_size, model.hidden_size)
        self.model, self.dt = model, dt

    def step_with_increment(
        self, x, h, dw: torch.Tensor | None, dt: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The step with Brownian increment ``dw (batch, hidden_size)``; ``None``: no noise;
        ``dt (batch,)``: per-sample steps (``dw`` must then have variance ``dt``)."""
        step = self.dt if dt is None else dt[:, None]
        h_next = h + step * self.model.dynamics(h, x)
        if dw is not None:
            h_next = h_next + self.model.diffusion(h) * dw
        return h_next

    def step(self, x, h, dt=None):
        dw = None
        if self.model.noisy():
            scale = math.sqrt(self.dt) if dt is None else dt.sqrt()[:, None]
            dw = torch.randn_like(h) * scale
        return self.step_with_increment(x, h, dw, dt)

    def extra_repr(self):
        return f"dt={self.dt}"


class NoisyRNNCodeCell(AbstractCell):
    """The cell of the authors' code (``solver='noisy'``), :class:`NoisyRNN` ``variant="code"``:

    ``h ← h + d ⊙ m ⊙ F(h, x) + σ_add ξ``, ``d`` a learned per-unit step,
    ``m ~ U[1 - σ_mult, 1)`` and ``ξ ~ N(0, I)`` in training, ``m = 1`` and ``ξ = 0`` otherwise.
    The noise is not scaled by the step and ``ε`` does not apply.

    Its nominal step is ``dt = 1`` (one learned step ``d``); a per-sample ``dt (batch,)``
    (irregular observations) takes ``dt`` learned steps: ``h ← h + dt d ⊙ m ⊙ F(h, x) +
    √dt σ_add ξ`` (the noise grows as a Brownian increment's would).
    """

    takes_dt = True
    dt = 1.0

    def __init__(self, model: NoisyRNN):
        super().__init__(model.input_size, model.hidden_size)
        self.model = model

    def step(self, x, h, dt=None):
        m = self.model
        update = m.dynamics(h, x)
        if m.training and m.sigma_mult > 0:
            update = update * (1 - m.sigma_mult + m.sigma_mult * torch.rand_like(h))
        step = m.unit_step if dt is None else dt[:, None] * m.unit_step
        h_next = h + step * update
        if m.training and m.sigma_add > 0:
            noise = m.sigma_add * torch.randn_like(h)
            h_next = h_next + (noise if dt is None else dt.sqrt()[:, None] * noise)
        return h_next


register_model(
    ModelSpec(
        "noisy_rnn",
        NoisyRNN,
        defaults=dict(scheme="euler_maruyama", dt=0.01),
        summary="noise-injected RNN (Lim et al., NeurIPS 2021)",
    )
)

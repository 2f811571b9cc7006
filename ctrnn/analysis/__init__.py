"""Stability studies of recurrent dynamics (see docs/analysis.md).

- Lyapunov spectra by the QR method: :func:`lyapunov_spectrum` for a map or a flow; models
  go through the same function as :func:`cell_map` (a cell driven by inputs) or
  :func:`flow_map` (a continuous model's flow over each observation interval).
- Gradient norms through time, :func:`gradient_norms`, and their growth rate against the
  largest exponent, :func:`gradient_growth` (Mikhaeil et al., NeurIPS 2022).
- Jacobian spectra: :func:`cell_jacobian_eigenvalues`, :func:`vector_field_eigenvalues`, and
  the stability function of explicit Runge–Kutta methods (:func:`stability_function`,
  :func:`stability_polynomial`, :func:`in_stability_region`).
- Discretization analysis: :func:`empirical_order`, :func:`symplecticity_error`,
  :func:`energy_drift` (:func:`hamiltonian_energy`).
- Noise and stability for the noise-injected RNN: :func:`noise_study`.
- Figures (matplotlib, ``pip install "ctrnn[plot]"``): the ``plot_*`` functions.
"""

from ._discretization import (
    EnergyDrift,
    OrderResult,
    empirical_order,
    energy_drift,
    hamiltonian_energy,
    symplecticity_error,
)
from ._gradients import GradientGrowth, gradient_growth, gradient_norms
from ._lyapunov import CellMap, FlowMap, LyapunovResult, cell_map, flow_map, lyapunov_spectrum
from ._noise import NoiseStudy, noise_study
from ._plot import (
    plot_eigenvalues,
    plot_energy_drift,
    plot_gradient_growth,
    plot_gradient_norms,
    plot_lyapunov_convergence,
    plot_order,
    plot_spectra,
    plot_stability_region,
)
from ._spectra import (
    cell_jacobian_eigenvalues,
    in_stability_region,
    stability_function,
    stability_polynomial,
    vector_field_eigenvalues,
)

__all__ = [
    "CellMap",
    "EnergyDrift",
    "FlowMap",
    "GradientGrowth",
    "LyapunovResult",
    "NoiseStudy",
    "OrderResult",
    "cell_jacobian_eigenvalues",
    "cell_map",
    "empirical_order",
    "energy_drift",
    "flow_map",
    "gradient_growth",
    "gradient_norms",
    "hamiltonian_energy",
    "in_stability_region",
    "lyapunov_spectrum",
    "noise_study",
    "plot_eigenvalues",
    "plot_energy_drift",
    "plot_gradient_growth",
    "plot_gradient_norms",
    "plot_lyapunov_convergence",
    "plot_order",
    "plot_spectra",
    "plot_stability_region",
    "stability_function",
    "stability_polynomial",
    "symplecticity_error",
    "vector_field_eigenvalues",
]

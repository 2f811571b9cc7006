"""Figures of the analyses, drawn with matplotlib's Agg canvas (no display needed).

Each function returns a ``matplotlib.figure.Figure`` and, given ``path``, also saves it as a
PNG. matplotlib is imported when a figure is drawn; without it an ImportError says which
extra to install.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "plot_eigenvalues",
    "plot_energy_drift",
    "plot_gradient_growth",
    "plot_gradient_norms",
    "plot_lyapunov_convergence",
    "plot_order",
    "plot_spectra",
    "plot_stability_region",
]


def _figure(ncols: int = 1, size=(5.0, 3.6)):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            'ctrnn.analysis figures need matplotlib; install it with pip install "ctrnn[plot]"'
        ) from e
    fig = Figure(figsize=(size[0] * ncols, size[1]), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _finish(fig, path):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=100)
    return fig


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _named(items, default: str) -> dict:
    if isinstance(items, dict):
        return dict(items)
    if isinstance(items, (list, tuple)):
        return {getattr(r, "scheme", f"{default} {i}"): r for i, r in enumerate(items)}
    return {default: items}


def plot_lyapunov_convergence(result, *, path=None, title: str | None = None):
    """Running estimates of each exponent against the number of steps averaged.

    ``result`` is a :class:`LyapunovResult` (``return_history=True``). Each line is the
    running mean over the batch; the band is the spread (min to max) over the batch. A
    converged estimate has flattened; the final value carries ``± stderr``.
    """
    fig, (ax,) = _figure()
    steps = _numpy(result.history_steps)
    hist = _numpy(result.history)  # (records, batch, k)
    final, err = _numpy(result.exponents), _numpy(result.stderr)
    if hist.ndim == 2:
        hist, final, err = hist[:, None], final[None], err[None]
    k = hist.shape[2]
    for i in range(k):
        mean = hist[:, :, i].mean(axis=1)
        # a legend entry for at most the 6 largest exponents and the smallest
        label = f"λ{i + 1} = {final[:, i].mean():.3f}" if i < 6 or i == k - 1 else None
        line = ax.plot(steps, mean, label=label)[0]
        ax.fill_between(
            steps,
            hist[:, :, i].min(axis=1),
            hist[:, :, i].max(axis=1),
            alpha=0.2,
            color=line.get_color(),
            linewidth=0,
        )
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    ax.set_xlabel("steps averaged")
    ax.set_ylabel(f"exponent (per {result.per})")
    ax.set_title(title or "Lyapunov exponents: running estimates")
    ax.legend(fontsize="small", title=f"{k} exponents" if k > 7 else None)
    return _finish(fig, path)


def plot_spectra(spectra, *, path=None, title: str | None = None):
    """Exponents against their index for one or several models (``{label: exponents}``).

    Values are ``(batch, k)`` tensors or :class:`LyapunovResult`; the mean over the batch is
    drawn with the spread over the batch (or the standard error) as error bars. Exponents
    above zero are expanding directions (chaos), below zero contracting ones.
    """
    fig, (ax,) = _figure()
    for label, value in _named(spectra, "spectrum").items():
        ex = _numpy(getattr(value, "exponents", value))
        ex = ex[None] if ex.ndim == 1 else ex
        mean = ex.mean(axis=0)
        spread = ex.std(axis=0) if ex.shape[0] > 1 else _numpy(value.stderr).reshape(-1)
        if not np.isfinite(spread).all():
            spread = None
        idx = np.arange(1, mean.shape[0] + 1)
        ax.errorbar(idx, mean, yerr=spread, marker="o", markersize=3, capsize=2, label=label)
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("index i")
    ax.set_ylabel("exponent λ_i")
    ax.set_title(title or "Lyapunov spectrum")
    ax.legend(fontsize="small")
    return _finish(fig, path)


def plot_gradient_norms(norms, *, path=None, title: str | None = None, xlabel: str = "t"):
    """``‖∂L/∂h_t‖`` against ``t`` on a log scale (``{label: (batch, T + 1)}`` or a tensor).

    The line is the median over the batch and the band the 10–90 % range. A line falling
    towards ``t = 0`` (the start) is a vanishing gradient, a rising one an exploding
    gradient; its slope is the rate per step.
    """
    fig, (ax,) = _figure()
    for label, value in _named(norms, "gradient").items():
        g = _numpy(value)
        g = g[None] if g.ndim == 1 else g
        t = np.arange(g.shape[1])
        line = ax.plot(t, np.median(g, axis=0), label=label)[0]
        if g.shape[0] > 1:
            lo, hi = np.quantile(g, [0.1, 0.9], axis=0)
            ax.fill_between(t, lo, hi, alpha=0.2, color=line.get_color(), linewidth=0)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("‖∂L/∂h_t‖")
    ax.set_title(title or "Gradient norms through time")
    ax.legend(fontsize="small")
    return _finish(fig, path)


def plot_gradient_growth(growth, *, path=None, title: str | None = None):
    """``log ‖∂L/∂h_t‖`` against steps back ``T - t``, with the line of slope ``λ_max``.

    ``growth`` is a :class:`GradientGrowth`. Mikhaeil et al. (2022): the curve's slope
    approaches the largest Lyapunov exponent; the fitted window is shaded.
    """
    fig, (ax,) = _figure()
    norms = _numpy(growth.norms)
    T = norms.shape[1] - 1
    back = np.arange(T, -1, -1)
    logs = np.log(np.maximum(norms, np.finfo(norms.dtype).tiny)).mean(axis=0)
    ax.plot(back, logs, label="mean log ‖∂L/∂h_t‖")
    lam = float(_numpy(growth.lyapunov).mean())
    rate = float(_numpy(growth.rate).mean())
    a, b = growth.window
    anchor = logs[T - a]
    s = np.array([a, b])
    ax.plot(s, anchor + lam * (s - a), "--", label=f"slope λ_max = {lam:.3f}")
    ax.axvspan(a, b, alpha=0.08, color="0.3")
    ax.set_xlabel("steps back T - t")
    ax.set_ylabel("log gradient norm")
    ax.set_title(title or f"Gradient growth: fitted rate {rate:.3f} per step")
    ax.legend(fontsize="small")
    return _finish(fig, path)


def plot_eigenvalues(eigenvalues, *, path=None, title: str | None = None, unit_circle=True):
    """Eigenvalues in the complex plane (any shape; a cell's Jacobian eigenvalues along a
    run from :func:`cell_jacobian_eigenvalues`), with the unit circle: a discrete map
    expands along modes outside it and contracts along modes inside."""
    fig, (ax,) = _figure(size=(4.2, 4.0))
    ev = _numpy(eigenvalues).reshape(-1)
    ax.scatter(ev.real, ev.imag, s=4, alpha=0.4)
    if unit_circle:
        th = np.linspace(0, 2 * math.pi, 400)
        ax.plot(np.cos(th), np.sin(th), color="0.3", linewidth=0.8)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("Re")
    ax.set_ylabel("Im")
    ax.set_title(title or "Jacobian eigenvalues")
    return _finish(fig, path)


def plot_stability_region(
    methods, *, eigenvalues=None, dt: float = 1.0, path=None, extent=None, title=None
):
    """The stability region ``|R(z)| ≤ 1`` of one or several explicit Runge–Kutta methods,
    with ``dt · λ`` for eigenvalues ``λ`` of a vector field's Jacobian on top.

    Points inside a method's region are modes its step damps (as the exact flow does when
    ``Re λ < 0``); points outside are modes it amplifies: the step is unstable there.
    """
    from ._spectra import stability_function

    fig, (ax,) = _figure(size=(4.6, 4.0))
    methods = [methods] if isinstance(methods, str) or not hasattr(methods, "__iter__") else methods
    z_pts = None
    if eigenvalues is not None:
        z_pts = _numpy(eigenvalues).reshape(-1) * dt
    if extent is None:
        r = 3.2
        if z_pts is not None and z_pts.size:
            r = max(r, 1.1 * float(np.abs(z_pts).max()))
        extent = (-r, max(1.0, 0.3 * r), -r, r)
    xs = np.linspace(extent[0], extent[1], 200)
    ys = np.linspace(extent[2], extent[3], 200)
    Z = xs[None, :] + 1j * ys[:, None]
    for i, method in enumerate(methods):
        mag = np.abs(stability_function(method, Z))
        color = f"C{i}"
        ax.contourf(xs, ys, mag, levels=[0, 1], colors=[color], alpha=0.15)
        ax.contour(xs, ys, mag, levels=[1], colors=[color], linewidths=1.2)
        name = method if isinstance(method, str) else getattr(method, "name", str(method))
        ax.plot([], [], color=color, label=name)
    if z_pts is not None:
        ax.scatter(z_pts.real, z_pts.imag, s=6, color="k", alpha=0.6, label=f"dt·λ, dt = {dt}")
    ax.axhline(0, color="0.5", linewidth=0.6)
    ax.axvline(0, color="0.5", linewidth=0.6)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("Re z")
    ax.set_ylabel("Im z")
    ax.set_title(title or "Stability regions |R(z)| ≤ 1")
    ax.legend(fontsize="small", loc="lower left")
    return _finish(fig, path)


def plot_order(results, *, path=None, title: str | None = None):
    """Error against step size on log–log axes for one or several :class:`OrderResult`;
    the slope is the empirical order (written in the legend, next to the nominal one)."""
    fig, (ax,) = _figure()
    for label, r in _named(results, "scheme").items():
        line = ax.loglog(r.dts, r.errors, "o-", label=f"{label}: slope {r.order:.2f}")[0]
        if r.expected is not None:
            ref = r.errors[0] * (r.dts / r.dts[0]) ** r.expected
            ax.loglog(r.dts, ref, ":", color=line.get_color(), linewidth=0.8)
    ax.set_xlabel("dt")
    ax.set_ylabel("error at the last observation")
    ax.set_title(title or "Empirical order (dotted: nominal slope)")
    ax.legend(fontsize="small")
    return _finish(fig, path)


def plot_energy_drift(drifts, *, path=None, title: str | None = None):
    """``|H_n - H_0|`` against time for one or several :class:`EnergyDrift` runs (the
    median over the batch). Bounded oscillation: a symplectic scheme; steady growth: not."""
    fig, (ax,) = _figure()
    for label, r in _named(drifts, "run").items():
        d = np.median(np.abs(_numpy(r.drift)), axis=0)[1:]  # H_0 - H_0 = 0 has no log
        ax.plot(_numpy(r.times)[1:], d, label=f"{label} (dt = {r.dt})")
    ax.set_yscale("log")
    ax.set_xlabel("time")
    ax.set_ylabel("|H - H0|")
    ax.set_title(title or "Energy error over a long run")
    ax.legend(fontsize="small")
    return _finish(fig, path)

"""Drop-in front-ends for users of the peer libraries, running on :func:`solvers.solve`.

- :mod:`solvers.compat.torchdiffeq`: ``odeint``, ``odeint_adjoint``, ``odeint_event``;
- :mod:`solvers.compat.torchcde`: ``cdeint``, the coefficient functions and the
  interpolation classes;
- :mod:`solvers.compat.torchsde`: ``sdeint``, ``sdeint_adjoint``.

Each keeps its peer's signature, defaults and shapes (time-major outputs, a 0-dim ``t``
handed to the user's functions, unbatched and tuple states where the peer takes them) and
maps them onto the batch-first native solve. Options and methods that have no native
counterpart are a ``ValueError`` naming them. The peers themselves are not imported. What
differs from the peers, and what is absent, is listed in ``docs/compat.md``.
"""

from . import torchcde, torchdiffeq, torchsde

__all__ = ["torchcde", "torchdiffeq", "torchsde"]

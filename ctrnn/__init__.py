"""Continuous-time recurrent neural networks.

Models written as differential equations (ODE, CDE, SDE, DDE, Hamiltonian), solved by the
pluggable solver layer in the sibling package :mod:`solvers`, and discretized into ordinary
discrete RNN cells.
"""

__version__ = "0.1.0"

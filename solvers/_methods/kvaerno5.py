"""Kværnø's ESDIRK 5(4): fifth order, L-stable and stiffly accurate, seven stages (an explicit
first stage and six implicit ones sharing ``γ = 0.26``), with an embedded fourth-order
solution (the sixth stage, also at ``c = 1``) for the error estimate.

Stage 3 lies past the end of the step (``c = 1.2303``): the vector field is evaluated
slightly beyond ``t1``. Dense output: the cubic Hermite polynomial through both ends of the
step (third order). Newton's starting guesses for the stages are the predictors of
OrdinaryDiffEq.jl's ``Kvaerno5`` (with ``α21 = 1``, as diffrax corrects it).
"""

from .._implicit import ESDIRKTableau

_G = 0.26
_ROW6 = (0.13855640231268224, 0.0, -0.04245337201752043, 0.02446657898003141, 0.61943039072480676)
_B = (
    0.13659751177640291,
    0.0,
    -0.05496908796538376,
    -0.04118626728321046,
    0.62993304899016403,
    0.06962479448202728,
    _G,
)
_B_HAT = (*_ROW6, _G, 0.0)  # the sixth stage's value: the embedded fourth-order solution

KVAERNO5 = ESDIRKTableau(
    name="kvaerno5",
    a=(
        (_G, _G),
        (0.13, 0.84033320996790809, _G),
        (0.22371961478320505, 0.47675532319799699, -0.06470895363112615, _G),
        (0.16648564323248321, 0.10450018841591720, 0.03631482272098715, -0.13090704451073998, _G),
        (*_ROW6, _G),
        _B,
    ),
    b=_B,
    c=(0.52, 1.230333209967908, 0.8957659843500759, 0.43639360985864756, 1.0, 1.0),
    order=5,
    b_error=tuple(x - y for x, y in zip(_B, _B_HAT)),
    error_order=4,
    predictor=(
        (1.0,),
        (-1.366025403784441, 2.3660254037844357),
        (-0.19650552613122207, 0.8113579546496623, 0.38514757148155954),
        (0.10375304369958693, 0.937994698066431, -0.04174774176601781, 0.0),
        (-0.17281112873898072, 0.6235784481025847, 0.5492326806363959, 0.0, 0.0),
        (*_ROW6, _G),
    ),
    reference="A. Kværnø, Singly diagonally implicit Runge–Kutta methods with an explicit "
    "first stage, BIT Numerical Mathematics 44 (2004) 489–502.",
)

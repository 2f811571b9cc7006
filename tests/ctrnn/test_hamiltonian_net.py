"""Hamiltonian deep networks (Galimberti et al. 2023): the paper's identities, the
discretizations of the recurrent form, continuous mode, and the 2-D data sets."""

import math

import pytest
import torch

import solvers
from ctrnn.models import create
from ctrnn.models.hamiltonian import (
    HamiltonianNet,
    HamiltonianRNN,
    double_circles,
    double_moons,
    skew_matrix,
    swiss_roll,
)

D = torch.float64


def _symplectic_error(step, n):
    y = torch.randn(n, dtype=D)
    M = torch.autograd.functional.jacobian(step, y)
    J = skew_matrix("J1", n, dtype=D)
    return (M.T @ J @ M - J).abs().max().item()


@pytest.mark.parametrize("scheme", ["H2", "H2_drift_first"])
def test_h2_layer_is_symplectic(scheme):
    torch.manual_seed(0)
    net = HamiltonianNet(6, 3, h=0.5, scheme=scheme, dtype=D)
    with torch.no_grad():
        net.b.normal_()
    for j in range(3):
        assert _symplectic_error(lambda y, j=j: net.layer(j, y[None])[0], 6) < 1e-12


def test_h1_layer_is_not_symplectic():
    torch.manual_seed(0)
    net = HamiltonianNet(6, 1, h=0.5, scheme="H1", dtype=D)
    assert _symplectic_error(lambda y: net.layer(0, y[None])[0], 6) > 1e-3


def _sensitivity_norms(net, n):
    y0 = torch.randn(1, n, dtype=D)
    with torch.no_grad():
        states = net.states(y0)[0]
    norms = []
    for j in range(net.depth):
        M = torch.autograd.functional.jacobian(lambda y, j=j: net(y, start=j), states[j])
        norms.append(torch.linalg.matrix_norm(M, ord=2).item())
    return torch.tensor(norms)


def test_h2_backward_sensitivity_does_not_vanish_at_depth_64():
    torch.manual_seed(0)
    net = HamiltonianNet(4, 64, h=0.1, scheme="H2", dtype=D)
    norms = _sensitivity_norms(net, 4)
    assert norms.min() >= 1 - 1e-10


def test_h1_layer_equals_its_equation():
    torch.manual_seed(0)
    net = HamiltonianNet(5, 2, h=0.3, scheme="H1", J="J2", dtype=D)
    y = torch.randn(7, 5, dtype=D)
    K, b, J = net.K[1], net.b[1], skew_matrix("J2", 5, dtype=D)
    expected = y + 0.3 * (J @ K.T @ torch.tanh(K @ y.T + b[:, None])).T
    torch.testing.assert_close(net.layer(1, y), expected)


def test_regularization_is_the_smoothness_penalty():
    torch.manual_seed(0)
    net = HamiltonianNet(4, 5, h=0.2, scheme="H1", dtype=D)
    with torch.no_grad():
        net.b.normal_()
    expected = sum(
        0.5 * 0.2 * ((net.K[j + 1] - net.K[j]).norm() ** 2 + (net.b[j + 1] - net.b[j]).norm() ** 2)
        for j in range(4)
    )
    torch.testing.assert_close(net.regularization(), expected)
    net.regularization().backward()
    assert net.K.grad.abs().sum() > 0


def test_net_unbatched_equals_batched():
    torch.manual_seed(0)
    net = HamiltonianNet(4, 3, scheme="H2", dtype=D)
    y = torch.randn(3, 4, dtype=D)
    torch.testing.assert_close(torch.stack([net(r) for r in y]), net(y))


def test_net_errors():
    with pytest.raises(ValueError, match="needs J='J1'"):
        HamiltonianNet(4, 2, scheme="H2", J="J2")
    with pytest.raises(ValueError, match="scheme must be"):
        HamiltonianNet(4, 2, scheme="H3")
    with pytest.raises(ValueError, match="even size"):
        HamiltonianNet(5, 2, J="J1")
    with pytest.raises(ValueError, match="J must be"):
        skew_matrix("J3", 4)
    with pytest.raises(ValueError, match="expected y of shape"):
        HamiltonianNet(4, 2)(torch.randn(3, 5))


# -- the recurrent form ----------------------------------------------------------------------


def _model(split=True, J="J1", n=4, seed=0):
    torch.manual_seed(seed)
    return HamiltonianRNN(3, n, J=J, split=split, dtype=D)


def test_semi_implicit_euler_cell_is_the_h2_step():
    model = _model()
    x, h = torch.randn(5, 3, dtype=D), torch.randn(5, 4, dtype=D)
    u = model.input_map(x)
    p, q = h[:, :2], h[:, 2:]
    Kp, Kq = model.K_p, model.K_q
    p1 = p - 0.1 * torch.tanh(q @ Kq.T + u[:, 2:]) @ Kq
    q1 = q + 0.1 * torch.tanh(p1 @ Kp.T + u[:, :2]) @ Kp
    cell = model.discretize("semi_implicit_euler", 0.1)
    torch.testing.assert_close(cell(x, h), torch.cat([p1, q1], dim=1))


@pytest.mark.parametrize("split,J", [(True, "J1"), (False, "J1"), (False, "J2")])
def test_euler_cell_is_the_h1_step(split, J):
    model = _model(split, J)
    x, h = torch.randn(5, 3, dtype=D), torch.randn(5, 4, dtype=D)
    if split:
        zero = torch.zeros(2, 2, dtype=D)
        K = torch.cat([torch.cat([model.K_p, zero], 1), torch.cat([zero, model.K_q], 1)], 0)
    else:
        K = model.K
    Jm = skew_matrix(J, 4, dtype=D)
    u = model.input_map(x)
    expected = h + 0.1 * (Jm @ K.T @ torch.tanh(K @ h.T + u.T)).T
    torch.testing.assert_close(model.discretize("euler", 0.1)(x, h), expected)


@pytest.mark.parametrize("scheme", ["semi_implicit_euler", "leapfrog", "yoshida4"])
def test_symplectic_cells_are_symplectic(scheme):
    model = _model(n=6)
    cell = model.discretize(scheme, 0.3)
    x = torch.randn(3, dtype=D)
    assert _symplectic_error(lambda h: cell(x, h), 6) < 1e-12


def _order(model, scheme, x, h0, T=1.0, steps=(8, 16, 32, 64)):
    ref = solvers.solve(
        model.problem(lambda t: x.expand(t.shape[0], -1)),
        h0,
        torch.tensor([0.0, T], dtype=D),
        method="dopri5",
        rtol=1e-12,
        atol=1e-12,
    ).ys[:, -1]
    errs = []
    for N in steps:
        cell = model.discretize(scheme, T / N)
        h = h0
        with torch.no_grad():
            for _ in range(N):
                h = cell(x, h)
        errs.append((h - ref).abs().max().item())
    dts = [T / N for N in steps]
    slope = (math.log(errs[0]) - math.log(errs[-1])) / (math.log(dts[0]) - math.log(dts[-1]))
    return slope, errs


@pytest.mark.parametrize(
    "scheme,order,split",
    [
        ("euler", 1, True),
        ("rk4", 4, True),
        ("semi_implicit_euler", 1, True),
        ("semi_implicit_euler_drift_first", 1, True),
        ("leapfrog", 2, True),
        ("yoshida4", 4, True),
        ("euler", 1, False),
        ("rk4", 4, False),
    ],
)
def test_discretization_converges_at_its_order(scheme, order, split):
    model = _model(split, n=4)
    x = torch.randn(2, 3, dtype=D)
    h0 = torch.randn(2, 4, dtype=D)
    slope, errs = _order(model, scheme, x, h0, T=2.0)
    assert abs(slope - order) < 0.3, (slope, errs)


def test_semi_implicit_euler_needs_the_split_system():
    model = _model(split=False, J="J2")
    with pytest.raises(ValueError, match="needs the separable"):
        model.discretize("semi_implicit_euler", 0.1)
    with pytest.raises(ValueError, match="dt must be positive"):
        _model().discretize("leapfrog", 0.0)
    with pytest.raises(ValueError, match="unknown scheme"):
        _model().discretize("nope", 0.1)
    with pytest.raises(ValueError, match="needs J='J1'"):
        HamiltonianRNN(3, 4, J="J2", split=True)
    with pytest.raises(ValueError, match="must be even"):
        HamiltonianRNN(3, 5, split=False)


def test_problem_is_separable_when_the_structure_allows():
    x = torch.randn(2, 3, dtype=D)
    assert _model().problem(lambda t: x).separable
    assert not _model(split=False).problem(lambda t: x).separable


def test_continuous_symplectic_solve_equals_the_discrete_cell():
    torch.manual_seed(1)
    disc = create("hamiltonian", input_size=3, hidden_size=4, scheme="semi_implicit_euler")
    cont = create(
        "hamiltonian",
        input_size=3,
        hidden_size=4,
        mode="continuous",
        solver=dict(method="semi_implicit_euler", dt=1.0),
    )
    cont.model.load_state_dict(disc.model.state_dict())
    x = torch.randn(2, 6, 3)
    torch.testing.assert_close(cont(x)[0], disc(x)[0])


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(scheme="rk4", split=False, J="J2"),
        dict(mode="continuous", solver=dict(method="leapfrog", dt=0.5)),
        dict(mode="continuous", solver=dict(method="rk4", dt=0.5, adjoint="backsolve")),
        dict(mode="continuous", split=False, solver=dict(method="rk4", dt=0.5)),
    ],
)
def test_gradients_reach_every_parameter(options):
    torch.manual_seed(0)
    model = create("hamiltonian", input_size=3, hidden_size=4, num_classes=2, **options)
    model.classify(torch.randn(2, 5, 3)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_backsolve_gradients_equal_direct():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, dtype=D)
    grads = []
    for adjoint in ("direct", "backsolve"):
        torch.manual_seed(0)
        model = create(
            "hamiltonian",
            input_size=3,
            hidden_size=4,
            mode="continuous",
            solver=dict(method="rk4", dt=0.05, adjoint=adjoint),
        ).to(D)
        model(x)[1].pow(2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("scheme", ["semi_implicit_euler", "euler"])
def test_cell_unbatched_equals_batched(scheme):
    cell = _model().discretize(scheme, 0.2)
    x, h = torch.randn(3, 3, dtype=D), torch.randn(3, 4, dtype=D)
    torch.testing.assert_close(torch.stack([cell(a, b) for a, b in zip(x, h)]), cell(x, h))


@pytest.mark.parametrize("make", [swiss_roll, double_circles, double_moons])
def test_datasets(make):
    points, labels = make(100, noise=0.01, seed=3)
    assert points.shape == (100, 2) and points.dtype == torch.float32
    assert labels.shape == (100,) and labels.dtype == torch.int64
    assert labels.sum() == 50
    torch.testing.assert_close(make(100, noise=0.01, seed=3)[0], points)
    assert points.abs().max() < 2
    with pytest.raises(ValueError, match="n must be"):
        make(1)


@pytest.mark.gpu
def test_trains_on_gpu():
    torch.manual_seed(0)
    points, labels = swiss_roll(256, noise=0.01)
    points, labels = points.cuda(), labels.cuda()
    net = HamiltonianNet(4, 32, h=0.2, scheme="H2", init_std=0.5).cuda()
    head = torch.nn.Linear(4, 2).cuda()
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=1e-2)
    y0 = torch.cat([points, torch.zeros_like(points)], dim=1)
    losses = []
    for _ in range(100):
        loss = torch.nn.functional.cross_entropy(head(net(y0)), labels)
        loss = loss + 1e-3 * net.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]

    seq = create("hamiltonian", input_size=3, hidden_size=8, num_classes=2).cuda()
    x = torch.randn(16, 20, 3, device="cuda")
    y = (x[:, :, 0].sum(1) > 0).long()
    opt = torch.optim.Adam(seq.parameters(), lr=1e-2)
    first = None
    for _ in range(50):
        loss = torch.nn.functional.cross_entropy(seq.classify(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first

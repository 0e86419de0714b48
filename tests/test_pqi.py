"""Property tests of the PQ Index (the six sparsity properties, Theorems 1 and 2), its reference values (recomputed by
numerical integration and Monte Carlo, independently of the closed forms), and of SAP's pruning rule and loop."""
import copy, math, os, tempfile
import pytest
import torch, torch.nn as nn
from hypothesis import given, settings, assume, strategies as st, HealthCheck
from scipy import integrate
from prunebook.pqi import (pq_index, gaussian_pqi, uniform_pqi, retained_bound, prune_count, tail_ratio, sap_masks,
                           prunable_weights, three_phases)
from prunebook.sap import sap_prune, one_shot_prune, structured_drop, sap_scores, train_masked
from prunebook.data import TensorLoader, random_crop_flip
from prunebook.graph import channel_groups
from prunebook.models import cifar_resnet

PAIRS = [(0.5, 1.0), (1.0, 2.0), (0.3, 1.7), (0.2, 0.6), (1.5, 3.0)]
vectors = st.lists(st.floats(0.05, 20.0, allow_nan=False), min_size=2, max_size=40).map(
    lambda v: torch.tensor(v, dtype=torch.float64))
pairs = st.sampled_from(PAIRS)
S = lambda w, p, q: pq_index(w, p, q)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- the six properties (Hurley & Rickard), on non-negative vectors ----

@FAST
@given(w=vectors, pq=pairs, data=st.data())
def test_d1_robin_hood(w, pq, data):
    "Moving alpha in (0, (w_i - w_j)/2) from a larger entry to a smaller one decreases PQI."
    i, j = int(w.argmax()), int(w.argmin())
    assume(w[i] - w[j] > 0.05)
    alpha = data.draw(st.floats(0.02, 0.98)) * float(w[i] - w[j]) / 2
    v = w.clone(); v[i] -= alpha; v[j] += alpha
    assert S(v, *pq) < S(w, *pq)


@FAST
@given(w=vectors, pq=pairs, alpha=st.floats(1e-3, 1e3))
def test_d2_scaling(w, pq, alpha):
    assert math.isclose(S(alpha * w, *pq), S(w, *pq), rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(S(-alpha * w, *pq), S(w, *pq), rel_tol=1e-9, abs_tol=1e-12)   # magnitudes only


@FAST
@given(w=vectors, pq=pairs, alpha=st.floats(0.01, 100.0))
def test_d3_rising_tide(w, pq, alpha):
    assume(float(w.max() - w.min()) > 1e-3)
    assert S(w + alpha, *pq) < S(w, *pq)


def test_d3_rising_tide_equal_entries():
    w = torch.full((7,), 3.0, dtype=torch.float64)
    assert S(w + 1, 0.5, 1) == S(w, 0.5, 1) == 0.0


@FAST
@given(w=vectors, pq=pairs, k=st.integers(2, 4))
def test_d4_cloning(w, pq, k):
    assert math.isclose(S(w.repeat(k), *pq), S(w, *pq), rel_tol=1e-9, abs_tol=1e-12)


@FAST
@given(w=vectors, pq=pairs, i=st.integers(0, 39))
def test_p1_bill_gates(w, pq, i):
    "Growing one entry without bound eventually increases PQI, towards the 1-sparse maximum."
    i %= len(w)
    p, q = pq
    top = 1 - len(w) ** (1 / q - 1 / p)
    assume(top - S(w, p, q) > 1e-6)
    v = w.clone(); v[i] = float(w.max()) * 1e40
    assert S(v, p, q) > S(w, p, q)
    assert S(v, p, q) > top - 1e-3


@FAST
@given(w=vectors, pq=pairs, n=st.integers(1, 5))
def test_p2_babies(w, pq, n):
    grown = torch.cat([w, torch.zeros(n, dtype=w.dtype)])
    assert S(grown, *pq) > S(w, *pq)
    # ... unless the zeros are masked out: PQI over survivors ignores them
    assert math.isclose(pq_index(grown, *pq, masks=grown != 0), S(w, *pq), rel_tol=1e-12, abs_tol=1e-15)


# ---- Theorem 1 (range) and Theorem 2 (bound on retained weights) ----

@FAST
@given(w=st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=60).map(lambda v: torch.tensor(v, dtype=torch.float64)),
       pq=pairs)
def test_theorem1_range(w, pq):
    assume(float(w.abs().max()) > 1e-6)
    p, q = pq
    d = len(w)
    s = S(w, p, q)
    assert -1e-12 <= s <= 1 - d ** (1 / q - 1 / p) + 1e-9


@settings(max_examples=150, deadline=None)
@given(w=st.lists(st.floats(-10, 10, allow_nan=False), min_size=2, max_size=80).map(lambda v: torch.tensor(v, dtype=torch.float64)),
       pq=pairs)
def test_theorem2_bound_holds_for_every_r(w, pq):
    assume(float(w.abs().max()) > 1e-6)
    p, q = pq
    eta = tail_ratio(w, p)
    r = torch.arange(1, len(w) + 1, dtype=torch.float64)
    assert bool((r >= retained_bound(pq_index(w, p, q), len(w), p, q, eta) * (1 - 1e-9) - 1e-9).all())


def test_one_sparse_and_uniform_extremes():
    for d in (2, 10, 100, 1000):
        v = torch.zeros(d); v[d // 2] = -3.0
        for p, q in PAIRS: assert math.isclose(S(v, p, q), 1 - d ** (1 / q - 1 / p), rel_tol=1e-12)
        assert S(torch.full((d,), 0.7), 0.5, 1) == 0.0


# ---- reference values, recomputed independently ----

@pytest.mark.parametrize('p,q', [(0.5, 1.0), (1.0, 2.0), (0.5, 2.0), (0.3, 1.7)])
def test_gaussian_pqi_by_numerical_integration(p, q):
    "The closed form against the moments of |w| integrated numerically from the half-normal density."
    moment = lambda r: integrate.quad(lambda x: x ** r * math.sqrt(2 / math.pi) * math.exp(-x * x / 2), 0, math.inf)[0]
    ref = 1 - moment(p) ** (1 / p) / moment(q) ** (1 / q)
    assert math.isclose(gaussian_pqi(p, q), ref, rel_tol=1e-7)


def test_gaussian_pqi_monte_carlo():
    g = torch.Generator().manual_seed(123)
    w = torch.randn(2_000_000, generator=g, dtype=torch.float64)
    for (p, q), value in [((0.5, 1.0), 0.1528), ((1.0, 2.0), 0.2021)]:
        mc = S(w, p, q)
        assert abs(mc - gaussian_pqi(p, q)) < 1e-3      # Monte Carlo agrees with the derivation ...
        assert abs(mc - value) < 1.5e-3                 # ... and with the reference values of the issue


def test_uniform_and_laplace_pqi_monte_carlo():
    g = torch.Generator().manual_seed(7)
    u = torch.rand(2_000_000, generator=g, dtype=torch.float64) * 2 - 1
    lap = torch.distributions.Laplace(0., 1.).sample((2_000_000,)).double()
    for p, q in [(0.5, 1.0), (1.0, 2.0)]:
        assert abs(S(u, p, q) - uniform_pqi(p, q)) < 1e-3
        lap_ref = 1 - math.gamma(p + 1) ** (1 / p) / math.gamma(q + 1) ** (1 / q)   # E|w|^r = Gamma(r + 1)
        assert abs(S(lap, p, q) - lap_ref) < 2e-3


# ---- masks, scopes, errors ----

@FAST
@given(w=st.lists(st.floats(-5, 5, allow_nan=False), min_size=3, max_size=50).map(lambda v: torch.tensor(v, dtype=torch.float64)),
       seed=st.integers(0, 10_000), pq=pairs)
def test_mask_equals_survivors(w, seed, pq):
    m = torch.rand(len(w), generator=torch.Generator().manual_seed(seed)) < 0.6
    assume(bool(m.any()) and float(w[m].abs().max()) > 1e-6)
    assert math.isclose(pq_index(w, *pq, masks=m), S(w[m], *pq), rel_tol=1e-9, abs_tol=1e-12)


def test_scopes_on_a_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    ws = prunable_weights(net)
    assert list(ws) == ['0.weight', '3.weight']
    flat = torch.cat([w.detach().reshape(-1) for w in ws.values()])
    assert math.isclose(pq_index(net), S(flat, 0.5, 1), rel_tol=1e-12)
    layer = pq_index(net, 1.0, 2.0, 'layer')
    assert math.isclose(layer['0.weight'], S(net[0].weight, 1, 2), rel_tol=1e-12)
    neuron = pq_index(net, scope='neuron')
    assert neuron['0.weight'].shape == (8,) and neuron['3.weight'].shape == (5,)
    assert math.isclose(float(neuron['0.weight'][2]), S(net[0].weight[2].reshape(-1), 0.5, 1), rel_tol=1e-12)
    # masks: explicit, 'nonzero', and carried by the model
    m = {n: torch.rand_like(w) > 0.5 for n, w in ws.items()}
    with torch.no_grad():
        for n, w in ws.items(): w.mul_(m[n])
    by_mask = pq_index(net, masks=m)
    assert math.isclose(pq_index(net, masks='nonzero'), by_mask, rel_tol=1e-12)
    net.prunebook_masks = m
    assert math.isclose(pq_index(net), by_mask, rel_tol=1e-12)
    assert pq_index(net, masks={n: torch.ones_like(v, dtype=torch.bool) for n, v in m.items()}) > by_mask   # babies


def test_errors_name_the_argument():
    w = torch.randn(10)
    with pytest.raises(ValueError, match='0 < p < q'): pq_index(w, 1.0, 1.0)
    with pytest.raises(ValueError, match='0 < p < q'): pq_index(w, -0.5, 1.0)
    with pytest.raises(ValueError, match="scope='row'"): pq_index(w, scope='row')
    with pytest.raises(TypeError, match='expected a model or a tensor'): pq_index([1.0, 2.0])
    with pytest.raises(ValueError, match='mask has shape'): pq_index(w, masks=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match='beta'): prune_count(0.1, 10, beta=1.2)
    with pytest.raises(ValueError, match='fraction'): sap_masks(nn.Linear(3, 3), fraction=1.5)
    with pytest.raises(ValueError, match="no entry for prunable weight '1.weight'"):
        pq_index(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), masks={'0.weight': torch.ones(2, 2, dtype=torch.bool)})


def test_zero_and_empty():
    assert pq_index(torch.zeros(5)) == 0.0
    assert pq_index(torch.randn(5), masks=torch.zeros(5, dtype=torch.bool)) == 0.0
    rows = pq_index(torch.tensor([[0., 0, 0], [1, 0, 0]]), scope='neuron')
    assert rows.tolist() == [0.0, pytest.approx(1 - 3 ** (1 - 2))]


# ---- the pruning rule ----

@FAST
@given(index=st.floats(0, 0.999), d=st.integers(1, 10**6), pq=pairs, eta=st.floats(0, 2), gamma=st.floats(0, 5),
       beta=st.floats(0, 0.99))
def test_prune_count_matches_the_formula(index, d, pq, eta, gamma, beta):
    p, q = pq
    r = math.ceil(d * (1 + eta) ** (-q / (q - p)) * (1 - index) ** (q * p / (q - p)) - 1e-9)
    expect = math.floor(d * min(max(gamma * (1 - r / d), 0), beta) + 1e-9)
    got = int(prune_count(index, d, p, q, eta, gamma, beta))
    assert got == expect
    assert 0 <= got <= math.floor(beta * d + 1e-9) < d


def test_closed_form_default_prunes_fraction_pqi():
    for I in (0.0, 0.1, 0.2537, 0.5, 0.8):
        assert int(prune_count(I, 10_000)) == min(math.floor(10_000 * I + 1e-9), 9000)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 1000), scope=st.sampled_from(['global', 'layer', 'neuron']), pq=st.sampled_from(PAIRS[:3]),
       fraction=st.sampled_from([None, 0.2, 0.5]))
def test_sap_masks_counts_and_monotonicity(seed, scope, pq, fraction):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 4))
    p, q = pq
    m0 = {n: torch.rand_like(w) > 0.3 for n, w in prunable_weights(net).items()}
    m1, info = sap_masks(net, m0, p, q, scope=scope, fraction=fraction)
    assert all(bool((m1[n] <= m0[n]).all()) for n in m0)                 # only survivors can be pruned
    removed = sum(int(m0[n].sum() - m1[n].sum()) for n in m0)
    assert removed == info['pruned']
    # continuous weights: no ties, so exactly the rule's count goes, in each scope unit
    units = ([(torch.cat([w.detach().reshape(-1) for w in prunable_weights(net).values()]),
               torch.cat([m0[n].reshape(-1) for n in m0]), torch.cat([m1[n].reshape(-1) for n in m1]))] if scope == 'global' else
             [(w.detach().reshape(-1), m0[n].reshape(-1), m1[n].reshape(-1)) for n, w in prunable_weights(net).items()] if scope == 'layer' else
             [(w.detach()[i], m0[n][i], m1[n][i]) for n, w in prunable_weights(net).items() for i in range(w.shape[0])])
    for w, a, b in units:
        d = int(a.sum())
        c = math.floor(d * fraction + 1e-9) if fraction is not None else int(prune_count(pq_index(w, p, q, masks=a), d, p, q))
        assert int(a.sum() - b.sum()) == c
        if 0 < c < d: assert float(w[a & ~b].abs().max()) <= float(w[b].abs().min())   # the smallest went


def test_structured_drop_layer_and_global():
    torch.manual_seed(0)
    net = cifar_resnet(8).eval()
    with torch.no_grad():      # filters of unequal sizes, as after training (fresh filters all have about the same norm)
        for m in net.modules():
            if isinstance(m, nn.Conv2d): m.weight.mul_(torch.rand(m.out_channels, 1, 1, 1) ** 3)
    x = torch.randn(1, 3, 32, 32)
    groups = channel_groups(net, x)
    for scope in ('layer', 'global'):
        drop, info = structured_drop(net, groups, 1.0, 2.0, scope=scope)
        assert info['pruned'] == sum(map(len, drop.values())) > 0
        for i, idxs in drop.items():
            g = groups[i]
            assert g.prunable and len(idxs) < len(g)
            s = sap_scores(net, groups)[g]
            kept = [k for k in range(len(g)) if k not in idxs]
            assert float(s[idxs].max()) <= float(s[kept].min())              # the lowest-scoring channels go
    with pytest.raises(ValueError, match="scope='neuron'"): structured_drop(net, groups, scope='neuron')
    with pytest.raises(ValueError, match="allocation='best'"): structured_drop(net, groups, allocation='best')
    # a shared allocation rule places SAP's global count: as many channels go, every group keeps its floor
    _, ref = structured_drop(net, groups, 1.0, 2.0, scope='global')
    drop, info = structured_drop(net, groups, 1.0, 2.0, allocation='normalized')
    assert abs(info['pruned'] - ref['pruned']) <= len(groups) and all(len(d) < len(groups[i]) for i, d in drop.items())


# ---- the loop ----

def _toy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return TensorLoader(x[:300], y[:300], 50, shuffle=True), TensorLoader(x[300:], y[300:], 100)


def test_sap_prune_loop_invariants():
    torch.manual_seed(0)
    init = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    before = {k: v.clone() for k, v in init.state_dict().items()}
    tr, va = _toy()
    r = sap_prune(init, tr, va, rounds=3, epochs_per_round=1, lr=0.05, device='cpu', log=None, p=1.0, q=2.0)
    assert all(torch.equal(before[k], v) for k, v in init.state_dict().items())      # caller's model untouched
    assert len(r.history) == 4 and r.history[0]['density'] == 1.0
    for a, b in zip(r.history, r.history[1:]):
        assert b['kept'] == a['kept'] - a['pruned'] and b['density'] < a['density']
    for n, w in prunable_weights(r.model).items(): assert bool(w[~r.masks[n]].eq(0).all())
    assert r.history[-1]['kept'] == sum(int(m.sum()) for m in r.masks.values())
    assert set(r.history[0]['pqi']) == {'1,2', '0.5,1'}
    best = r.best(0.5)
    assert best['density'] == r.history[-1]['density']          # a tolerance of 50 points accepts every round


def test_rewind_restores_initial_values_of_survivors():
    torch.manual_seed(1)
    init = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    tr, va = _toy()
    seen = []
    import prunebook.sap as P
    original = P.train_masked
    def spy(model, loader, epochs, masks, *a, **k):
        seen.append({n: w.detach().clone() for n, w in prunable_weights(model).items()})
        return original(model, loader, epochs, masks, *a, **k)
    P.train_masked = spy
    try: sap_prune(init, tr, va, rounds=2, epochs_per_round=1, device="cpu", log=None)
    finally: P.train_masked = original
    for start in seen:                  # every round starts from w_init ⊙ m
        for n, w in start.items():
            w0 = dict(init.named_parameters())[n].detach()
            assert bool(((w == w0) | (w == 0)).all())


def test_one_shot_density_and_train_masked_keeps_zeros():
    torch.manual_seed(2)
    init = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    tr, va = _toy()
    dense = train_masked(copy.deepcopy(init), tr, 1, device='cpu')
    r = one_shot_prune(init, dense.state_dict(), 0.3, tr, va, device='cpu')
    total = sum(w.numel() for w in prunable_weights(init).values())
    assert r.history[0]['kept'] == total - math.floor(total * 0.7 + 1e-9)
    for n, w in prunable_weights(r.model).items(): assert bool(w[~r.masks[n]].eq(0).all())


def test_checkpoint_resume_and_mismatch():
    torch.manual_seed(3)
    init = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    tr, va = _toy()
    with tempfile.TemporaryDirectory() as d:
        ck = os.path.join(d, 'ck.pt')
        first = sap_prune(init, tr, va, rounds=1, device='cpu', log=None, checkpoint=ck)
        with pytest.raises(ValueError, match='other settings'): sap_prune(init, tr, va, rounds=3, device='cpu', log=None, checkpoint=ck)
        again = sap_prune(init, tr, va, rounds=1, device='cpu', log=None, checkpoint=ck)
        assert [h['kept'] for h in again.history] == [h['kept'] for h in first.history]


def test_structured_sap_removes_channels_physically():
    torch.manual_seed(4)
    net = cifar_resnet(8)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)
    r = sap_prune(net, TensorLoader(x, y, 32), TensorLoader(x[:32], y[:32], 32), rounds=1, structured=True, p=1.0, q=2.0,
                  scope='global', device='cpu', log=None)
    h0, h1 = r.history
    assert h0['pruned'] > 0 and h1['params'] < h0['params'] and h1['macs'] < h0['macs']
    from prunebook.core import count_params
    assert count_params(r.model) == h1['params'] < count_params(net)
    with torch.no_grad(): assert r.model(x[:2]).shape == (2, 10)


def test_three_phases_and_crop():
    assert three_phases([0.3, 0.25, 0.2, 0.3, 0.4, 0.2])['found']
    assert not three_phases([0.3, 0.3, 0.3])['found']
    x = torch.randn(4, 3, 6, 6)
    out = random_crop_flip(x, 0, torch.Generator().manual_seed(0))
    assert all(torch.equal(o, a) or torch.equal(o, a.flip(2)) for o, a in zip(out, x))

"Property and Monte-Carlo tests of prunebook.tvbounds, prunebook.tvs and prunebook.ldiff (fast, CPU, no data needed)."
import math
import pytest, torch, torch.nn as nn
from hypothesis import given, settings, strategies as st
from prunebook.tvbounds import (bhattacharyya_diag, bhattacharyya_full, hellinger_sq, tv_bounds,
                                tv_equal_cov, tv_monte_carlo, diag_gaussian, pairwise_bhattacharyya, class_pairs, moments_of)
from prunebook.tvs import (tvsprune, itertvsprune, threshold_drop, plan_sparsity, group_scores, collect_stats, tvs_scores,
                           select_groups, feature_module, per_sample_stats, filter_scores)
from prunebook.allocation import ALLOCATIONS
from prunebook.ldiff import ldiff, spearman
from prunebook.graph import channel_groups
from prunebook.surgery import remove_channels
from prunebook.core import count_params
from prunebook.models import cifar_resnet, vgg_cifar

floats = st.floats(-3, 3, allow_nan=False)

@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(0, 10_000))
def test_bounds_hold_monte_carlo(P, seed):
    "Monte-Carlo TV between random diagonal Gaussians lies within [H², H·sqrt(2−H²)] (4 standard errors)."
    g = torch.Generator().manual_seed(seed)
    mu1, mu2 = torch.randn(P, generator=g, dtype=torch.float64), torch.randn(P, generator=g, dtype=torch.float64) * 0.7
    v1 = torch.rand(P, generator=g, dtype=torch.float64) * 2 + 0.1
    v2 = torch.rand(P, generator=g, dtype=torch.float64) * 2 + 0.1
    (sp, lp), (sq, lq) = diag_gaussian(mu1, v1, g), diag_gaussian(mu2, v2, g)
    tv, se = tv_monte_carlo(sp, sq, lp, lq, n=20_000)
    lo, hi = tv_bounds(hellinger_sq(bhattacharyya_diag(mu1, v1, mu2, v2)))
    assert lo.item() - 4 * se - 1e-3 <= tv <= hi.item() + 4 * se + 1e-3

@settings(max_examples=60, deadline=None)
@given(st.floats(0, 6))
def test_equal_covariance_exact_tv_within_bounds(delta):
    "The exact TV of equal-covariance Gaussians, 2Φ(Δ/2)−1, lies within the Hellinger bounds with H² = 1 − exp(−Δ²/8)."
    d2 = torch.tensor(delta ** 2, dtype=torch.float64)
    tv = tv_equal_cov(d2)
    lo, hi = tv_bounds(hellinger_sq(d2 / 8))
    assert lo - 1e-12 <= tv <= hi + 1e-12

@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(0, 10_000))
def test_distance_properties(P, seed):
    "D_B ≥ 0, symmetric, zero for equal distributions; full covariance with diagonal matrices equals the diagonal form."
    g = torch.Generator().manual_seed(seed)
    mu1, mu2 = torch.randn(P, generator=g, dtype=torch.float64), torch.randn(P, generator=g, dtype=torch.float64)
    v1, v2 = torch.rand(P, generator=g, dtype=torch.float64) + .1, torch.rand(P, generator=g, dtype=torch.float64) + .1
    d = bhattacharyya_diag(mu1, v1, mu2, v2)
    assert d >= 0 and torch.isclose(d, bhattacharyya_diag(mu2, v2, mu1, v1))
    assert bhattacharyya_diag(mu1, v1, mu1, v1) == 0
    assert torch.isclose(bhattacharyya_full(mu1, torch.diag(v1), mu2, torch.diag(v2)), d)

def test_pairwise_matches_loop_and_debias():
    g = torch.Generator().manual_seed(0)
    K, C, P = 4, 3, 7
    mean, var = torch.randn(K, C, P, generator=g, dtype=torch.float64), torch.rand(K, C, P, generator=g, dtype=torch.float64) + .1
    d = pairwise_bhattacharyya(mean, var)
    for i, (a, b) in enumerate(class_pairs(K).tolist()):
        assert torch.allclose(d[i], bhattacharyya_diag(mean[a], var[a], mean[b], var[b]))
    # identical distributions: the debiased distance averages near 0, the raw one near its predicted inflation
    x, y = torch.randn(400, 16, 256, generator=g, dtype=torch.float64), torch.arange(400) % 2
    m, v, n = moments_of(x, y, 2)
    raw, fixed = pairwise_bhattacharyya(m, v, n), pairwise_bhattacharyya(m, v, n, debias=True, clamp=False)
    assert abs(fixed.mean()) < 0.05 and abs(raw.mean() - (256 / 8 * 2 / 200 + 256 / 16 * 4 / 199)) < 0.1

def test_scores_rank_a_planted_filter():
    "A filter whose mean depends on the class outranks pure-noise filters, for every score."
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 1), nn.Flatten(), nn.Linear(64, 3)).eval()
    with torch.no_grad(): net[0].weight.copy_(torch.eye(4)[:, :1].view(4, 1, 1, 1) + 0.0); net[0].bias.zero_()
    with torch.no_grad(): net[0].weight[1:] = 0.0; net[0].bias[1:] = torch.tensor([0.1, 0.2, 0.3])
    y = torch.arange(300) % 3
    x = torch.randn(300, 1, 4, 4, generator=g) + y.view(-1, 1, 1, 1).float()
    groups = channel_groups(net, x[:1])
    chosen = select_groups(groups)
    stats = collect_stats(net, (x, y), ['0'], 3, device='cpu')
    for score in ('hellinger_diag', 'hellinger_iso', 'mean_diff'):
        s, d = group_scores(chosen, stats, score)[chosen[0]]
        assert int(d.argmax()) == 0, (score, d)
    with pytest.raises(ValueError, match='score='): filter_scores(stats['0'], 'l2')

@pytest.mark.parametrize('make', [lambda: cifar_resnet(20), lambda: vgg_cifar(11)])
def test_plan_sparsity_reports_the_real_sparsity(make):
    "The sparsity `plan_sparsity` reports is that of the network `remove_channels` builds, and near the target."
    m = make().eval()
    gs = channel_groups(m, torch.zeros(1, 3, 32, 32))
    g = torch.Generator().manual_seed(0)
    scores = {grp: (torch.rand(len(grp), generator=g),) * 2 for grp in select_groups(gs)}
    base = count_params(m)
    for target in (0.05, 0.2):
        drop, alpha, sp = plan_sparsity(scores, gs, target, base)
        assert sp == 1 - count_params(remove_channels(m, gs, drop)) / base and abs(sp - target) < 0.02 and alpha > 0

def test_threshold_is_monotone_and_relative():
    "More α never prunes less; the rule is scale-free (multiplying a layer's scores changes nothing)."
    m = cifar_resnet(8).eval()
    gs = channel_groups(m, torch.zeros(1, 3, 32, 32))
    chosen = select_groups(gs)
    g = torch.Generator().manual_seed(0)
    scores = {grp: (torch.rand(len(grp), generator=g),) * 2 for grp in chosen}
    counts = [sum(len(v) for v in threshold_drop(scores, a).values()) for a in (0.1, 0.3, 0.6, 1.0, 1.5)]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    scaled = {grp: (s * 7, d * 7) for grp, (s, d) in scores.items()}
    assert {k.idx: v for k, v in threshold_drop(scores, 0.8).items()} == {k.idx: v for k, v in threshold_drop(scaled, 0.8).items()}
    assert all(len(v) <= int(0.9 * len(k)) for k, v in threshold_drop(scores, 100.0).items())   # max_fraction

def _data():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 3
    x = torch.randn(120, 3, 16, 16, generator=g) + 0.5 * y.view(-1, 1, 1, 1).float()
    return x, y

def test_tvsprune_keeps_caller_model_and_hits_sparsity():
    torch.manual_seed(0)
    m = cifar_resnet(8, num_classes=3).eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    small, rep = tvsprune(m, _data(), n_per_class=30, sparsity=0.25, device='cpu')
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert abs(rep['sparsity'] - 0.25) < 0.03 and count_params(small) == rep['params']
    _, rep_single = tvsprune(m, _data(), n_per_class=30, sparsity=0.1, groups='single', device='cpu')
    assert all(len(l['producers']) == 1 for l in rep_single['layers'])
    with pytest.raises(ValueError, match='not both'): tvsprune(m, _data(), sparsity=0.1, threshold=0.5)
    with pytest.raises(ValueError, match='sparsity='): tvsprune(m, _data(), sparsity=1.2)

@pytest.mark.parametrize('rule', ALLOCATIONS)
def test_every_allocation_reaches_the_sparsity(rule):
    "Any allocation rule of prunebook.allocation, on TVS's scores, hits a parameter target; the scores cover the scored groups."
    m = cifar_resnet(8, num_classes=3).eval()
    small, rep = tvsprune(m, _data(), n_per_class=30, sparsity=0.2, allocation=rule, device='cpu')
    assert abs(rep['sparsity'] - 0.2) < 0.03 and rep['allocation'] == rule and count_params(small) == rep['params']
    sc = tvs_scores(m, _data(), n_per_class=30, device='cpu')
    assert sorted(g.idx for g in sc) == sorted(l['group'] for l in rep['layers'])
    assert all(len(s) == len(g) and (s >= 0).all() for g, s in sc.items())
    with pytest.raises(ValueError, match='needs a `sparsity`'): tvsprune(m, _data(), threshold=0.5, allocation=rule)
    with pytest.raises(ValueError, match="allocation='greedy'"): tvsprune(m, _data(), sparsity=0.1, allocation='greedy')

def test_itertvsprune_milestones_and_accuracy_target():
    torch.manual_seed(0)
    m = cifar_resnet(8, num_classes=3).eval()
    x, y = _data()
    pruned, rep = itertvsprune(m, (x, y), heldout=[(x, y)], sparsity=[0.1, 0.2], step=0.1, n_per_class=30, device='cpu')
    assert sorted(rep['snapshots']) == [0.1, 0.2] and abs(rep['sparsity'] - 0.2) < 0.03
    assert all(abs(s['sparsity'] - k) < 0.03 for k, s in rep['snapshots'].items())
    # an impossible accuracy target: nothing is ever accepted, the model comes back whole
    same, rep2 = itertvsprune(m, (x, y), heldout=[(x, y)], target_acc=1.01, n_per_class=30, max_iters=3, device='cpu')
    assert count_params(same) == count_params(m) and not any(i['accepted'] for i in rep2['iterations'])
    with pytest.raises(ValueError, match='heldout'): itertvsprune(m, (x, y), target_acc=0.5)

def test_one_pass_equals_per_sample_loop():
    m = cifar_resnet(8, num_classes=3).eval()
    x, y = _data()
    gs = channel_groups(m, x[:1])
    names = [feature_module(g, p) for g in select_groups(gs) for p in g.producers][:4]
    fast = collect_stats(m, (x[:24], y[:24]), names, 3, device='cpu')
    slow = per_sample_stats(m, x[:24], y[:24], names, 3, 'cpu')
    for n in names: assert torch.allclose(fast[n].mean, slow[n], atol=1e-4)

@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 10, allow_nan=False), min_size=2, max_size=30))
def test_ldiff_properties(v):
    s = torch.tensor(v, dtype=torch.float64)
    l = ldiff(s)
    assert 0 <= l <= 1 + 1e-12
    assert math.isclose(l, ldiff(s * 3.5), abs_tol=1e-9)                    # scale-free
    assert math.isclose(l, ldiff(s.flip(0)), abs_tol=1e-12)                 # order-free
    if s.max() > 0 and (s == s.max()).all(): assert l == 0

def test_spearman_invariant_to_monotone_maps():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(20, generator=g), torch.randn(20, generator=g)
    assert math.isclose(spearman(a.tolist(), b.tolist()), spearman(a.exp().tolist(), (b ** 3).tolist()), abs_tol=1e-12)

"DFPC: the factorised saliency equals the unrolled-matrix formula, bounds the reconstruction error, and prunes exactly."
import copy, math
import pytest, torch, torch.nn as nn, torch.nn.functional as F
from prunebook.core import count_macs, count_params
from prunebook.graph import channel_groups
from prunebook.models import cifar_resnet, cifar_stem_resnet, cifar_mobilenet_v2
from prunebook.surgery import mask_channels, remove_channels
from prunebook.dfpc import (dfpc_saliency, dataflow_pairs, lexicographic_pairs, dfpc_prune, dfpc_plan, dfpc_scores,
                            removal_order, is_coupled, rowsum, colsum)

def randomize_bn(model: nn.Module, seed: int = 0, shift: bool = True) -> nn.Module:
    "Random BatchNorm scales and statistics (signed γ); zero shifts (β and running mean) unless `shift`."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1 if shift else torch.zeros(m.num_features))
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1 if shift else torch.zeros(m.num_features))
    return model.eval()

def close(a, b, rtol=2e-5):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    assert torch.allclose(a, b, rtol=rtol, atol=rtol * float(b.abs().max())), (a, b)

# ---------------------------------------------------------------------------------------------------------------------
# The library's unrolled reference (sparse) on real architectures; the dense one and a hand-written one are checked
# in nbs/21_dfpc_reference.ipynb.

def test_unrolled_sparse_mobilenet_and_bottleneck():
    pytest.importorskip('scipy', reason='the unrolled reference needs scipy (a development requirement)')
    from prunebook.dfpc_reference import unrolled_saliency
    torch.manual_seed(0)
    for net, x in ((cifar_mobilenet_v2(width_mult=0.25), torch.randn(1, 3, 8, 8)), (cifar_stem_resnet(50), torch.randn(1, 3, 4, 4))):
        net = randomize_bn(net)
        gs = channel_groups(net, x)
        fast = dfpc_saliency(net, x, gs)
        pick = {g: [0, len(g) - 1] for g in fast}
        ref = unrolled_saliency(net, x, gs, channels=pick)
        for g, ks in pick.items(): close(fast[g][ks], ref[g][ks])

def test_rowsum_colsum_against_jacobian():
    torch.manual_seed(0)
    for conv, size in ((nn.Conv2d(3, 5, 3, stride=2, padding=1), 8), (nn.Conv2d(3, 5, 3, stride=2, padding=1), 7),
                       (nn.Conv2d(2, 3, 5, stride=3, padding=2), 8), (nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2), 6),
                       (nn.Conv2d(4, 6, 1), 5)):
        xs = (1, conv.in_channels, size, size)
        ys = conv(torch.zeros(xs)).shape
        A = torch.autograd.functional.jacobian(
            lambda v: F.conv2d(v.view(xs), conv.weight.detach().abs(), None, conv.stride, conv.padding, conv.dilation, conv.groups).flatten(),
            torch.zeros(math.prod(xs)))
        close(rowsum(conv, xs, ys).flatten(), A.sum(1)); close(colsum(conv, xs, ys).flatten(), A.sum(0))

# ---------------------------------------------------------------------------------------------------------------------
# What the saliency means: a bound on the consumers' l1 reconstruction error.

def test_saliency_bounds_reconstruction_error():
    torch.manual_seed(0)
    net = randomize_bn(cifar_resnet(8), shift=False)          # the bound ignores BN shifts: make them zero
    x = torch.randn(2, 3, 8, 8)
    gs = channel_groups(net, x[:1])
    sal = dfpc_saliency(net, x[:1], gs)
    acts = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, i[0].detach()))
             for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad(): net(x[1:])
    for h in hooks: h.remove()
    ratios = []
    for g, s in sal.items():
        box = max(float(acts[a].abs().max()) for a in g.producers)      # max over producers of ||x_a||_inf
        for k in range(len(g)):
            err = 0.0
            for b in g.consumers:
                m, u = net.get_submodule(b), acts[b]
                mask = torch.zeros(u.shape[1]); mask[g.positions(b, 'in')[k]] = 1
                v = u * (mask.view(1, -1, 1, 1) if u.dim() == 4 else mask)
                err += float((F.conv2d(v, m.weight.detach(), None, m.stride, m.padding) if isinstance(m, nn.Conv2d) else v @ m.weight.detach().T).abs().sum())
            assert err <= float(s[k]) * box * (1 + 1e-5), (g.idx, k, err, float(s[k]) * box)
            ratios.append(err / (float(s[k]) * box))
    assert max(ratios) > 1e-3          # not vacuous

# ---------------------------------------------------------------------------------------------------------------------
# Pairs: data flow, not names.

def test_lexicographic_rule_on_resnet101():
    net = cifar_stem_resnet(101).eval()
    gs = channel_groups(net, torch.randn(1, 3, 32, 32))
    stage3 = next(g for g in gs if len(g.producers) == 24)
    true, lex = set(dataflow_pairs(stage3)), set(lexicographic_pairs(stage3))
    assert (len(stage3.producers) * len(stage3.consumers), len(true)) == (576, 323)
    assert (len(lex - true), len(true - lex)) == (101, 101)
    for g in gs:                                   # the other groups (one digit block indices) agree
        if g.prunable and g is not stage3: assert set(dataflow_pairs(g)) == set(lexicographic_pairs(g))

def test_lexicographic_scores_reproduce_dataflow_where_rules_agree():
    net = randomize_bn(cifar_stem_resnet(50))
    x = torch.randn(1, 3, 8, 8)
    gs = channel_groups(net, x)
    a, b = dfpc_saliency(net, x, gs), dfpc_saliency(net, x, gs, pairs='lexicographic')
    for g in a: close(a[g], b[g])
    none = dfpc_saliency(net, x, gs, pairs=lambda p, c: False)
    assert all(float(v.abs().sum()) == 0 for v in none.values())

# ---------------------------------------------------------------------------------------------------------------------
# Pruning.

RESNET20, MOBILENET = lambda: (cifar_resnet(20), 32), lambda: (cifar_mobilenet_v2(width_mult=0.25), 16)

@pytest.mark.parametrize('build,score', [(RESNET20, 'dfpc'), (RESNET20, 'l1'), (RESNET20, 'random'), (MOBILENET, 'dfpc')])
def test_sizes_exact_and_removal_equals_masking(build, score):
    torch.manual_seed(0)
    net, size = build()
    net, x = randomize_bn(net), torch.randn(2, 3, size, size)
    before = copy.deepcopy(net.state_dict())
    gs = channel_groups(net, x[:1])
    scores = dfpc_scores(net, x[:1], gs, score)
    for metric, target in (('macs', 0.6), ('params', 0.55), ('channels', 0.8)):
        drop, reached = dfpc_plan(scores, target, metric)
        assert reached[metric] <= target
        small, masked = remove_channels(net, gs, drop), mask_channels(net, gs, drop)
        assert reached['macs'] == count_macs(small, x[:1]) / count_macs(net, x[:1])
        assert reached['params'] == count_params(small) / count_params(net)
        with torch.no_grad(): close(small(x), masked(x), rtol=1e-5)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())     # the caller's model is untouched

def test_removal_order():
    torch.manual_seed(0)
    net, x = cifar_resnet(20), torch.randn(1, 3, 32, 32)
    gs = channel_groups(net, x)
    scores = dfpc_scores(net, x, gs, 'random')
    order = removal_order(scores)
    vals = [float(scores[g][k]) for g, k in order]
    assert vals == sorted(vals)
    for g in scores:                                       # every group keeps exactly its best channel at the end
        assert sorted(k for h, k in order if h is g) == sorted(set(range(len(g))) - {int(scores[g].argmax())})
    no_cc = removal_order(scores, prune_coupled=False)
    assert no_cc and not any(is_coupled(g) for g, _ in no_cc)
    assert {g for g, _ in order if is_coupled(g)}          # streams are coupled and eligible by default

def test_dfpc_prune_reaches_target_and_records():
    torch.manual_seed(0)
    net, x = randomize_bn(cifar_resnet(20)), torch.randn(1, 3, 32, 32)
    p = dfpc_prune(net, x, 0.7)
    assert 0.69 < count_macs(p, x) / count_macs(net, x) <= 0.7
    assert p.dfpc_info['removed'] > 0 and p.dfpc_info['metric'] == 'macs'
    q = dfpc_prune(net, x, 0.7, prune_coupled=False)
    assert type(q) is type(net)                           # only insides of blocks: no shortcut rewritten
    with pytest.warns(UserWarning, match='no eligible channel'):
        dfpc_prune(net, x, 0.01, prune_coupled=False)

@pytest.mark.parametrize('rule', ['uniform', 'normalized', 'rank', 'cost'])
def test_shared_allocation_reaches_target_and_prunes_streams(rule):
    "DFPC's scores with a shared allocation rule: the target is met, and normalized scores reach the coupled channels."
    torch.manual_seed(0)
    net, x = randomize_bn(cifar_resnet(20)), torch.randn(1, 3, 32, 32)
    scores = dfpc_scores(net, x)
    drop, reached = dfpc_plan(scores, 0.6, 'macs', allocation=rule)
    assert abs(reached['macs'] - 0.6) < 0.02
    assert all(len(d) < len(g) for g, d in drop.items())                  # every group keeps channels
    if rule == 'normalized': assert any(is_coupled(g) for g in drop)
    p = dfpc_prune(net, x, 0.6, score=scores, allocation=rule)
    assert p.dfpc_info['allocation'] == rule and abs(count_macs(p, x) / count_macs(net, x) - reached['macs']) < 1e-9

def test_errors():
    net, x = cifar_resnet(8), torch.randn(1, 3, 8, 8)
    gs = channel_groups(net, x)
    with pytest.raises(ValueError, match='target=1.5'): dfpc_prune(net, x, 1.5)
    with pytest.raises(ValueError, match="metric='flops'"): dfpc_prune(net, x, 0.5, 'flops')
    with pytest.raises(ValueError, match="score='l2'"): dfpc_prune(net, x, 0.5, score='l2')
    with pytest.raises(ValueError, match="allocation='best'"): dfpc_prune(net, x, 0.5, allocation='best')
    with pytest.raises(ValueError, match="pairs='names'"): dfpc_saliency(net, x, pairs='names')
    with pytest.raises(ValueError, match='not the model the groups were traced from'): dfpc_saliency(cifar_resnet(14), x, gs)
    bad = {g: torch.full((len(g),), float('nan')) for g in gs if g.prunable}
    with pytest.raises(ValueError, match='NaN'): removal_order(bad)
    with pytest.raises(ValueError, match='running statistics'):
        m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.Conv2d(4, 2, 1)).eval()
        dfpc_saliency(m, torch.randn(1, 3, 8, 8))

def test_backward_pass_equals_pair_by_pair():
    torch.manual_seed(0)
    for net, x in ((cifar_resnet(14), torch.randn(1, 3, 16, 16)), (cifar_mobilenet_v2(width_mult=0.25), torch.randn(1, 3, 16, 16)),
                   (cifar_stem_resnet(50), torch.randn(1, 3, 8, 8))):
        net = randomize_bn(net)
        gs = channel_groups(net, x)
        fast, pairs = dfpc_saliency(net, x, gs), dfpc_saliency(net, x, gs, by_pair=True)
        assert set(fast) == set(pairs)
        for g in fast:
            assert set(pairs[g]) == set(dataflow_pairs(g))
            close(fast[g], sum(pairs[g].values()))

"DFPC: the factorised saliency equals the unrolled-matrix formula, bounds the reconstruction error, and prunes exactly."
import copy, math
import numpy as np
import pytest, torch, torch.nn as nn, torch.nn.functional as F
from prunebook.core import count_macs, count_params
from prunebook.graph import channel_groups
from prunebook.models import cifar_resnet, BasicBlock
from prunebook.surgery import mask_channels, remove_channels
from prunebook.dfpc import (dfpc_saliency, unrolled_saliency, dataflow_pairs, lexicographic_pairs, dfpc_prune, dfpc_plan,
                            channel_scores, removal_order, is_coupled, PruningSize, cifar_stem_resnet, cifar_mobilenet_v2,
                            rowsum, colsum)

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
# An independent reference, written out by hand for a two-block option-A network: every matrix built with loops.

class TwoBlock(nn.Module):
    "Stem, an identity block and a downsampling block with an option-A shortcut, pooling and a classifier."
    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.b1, self.b2 = BasicBlock(4, 4), BasicBlock(4, 8, stride=2)
        self.fc = nn.Linear(8, 3)
    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.b2(self.b1(x)), 1), 1))

def conv_matrix(W: torch.Tensor, H: int, stride: int, pad: int) -> np.ndarray:
    "The unrolled |W| of a square-kernel convolution on an H×H input, by six nested loops."
    co, ci, k, _ = W.shape
    Ho = (H + 2 * pad - k) // stride + 1
    A = np.zeros((co * Ho * Ho, ci * H * H))
    for o in range(co):
        for i in range(ci):
            for y in range(Ho):
                for x in range(Ho):
                    for u in range(k):
                        for v in range(k):
                            iy, ix = y * stride - pad + u, x * stride - pad + v
                            if 0 <= iy < H and 0 <= ix < H: A[(o * Ho + y) * Ho + x, (i * H + iy) * H + ix] += abs(float(W[o, i, u, v]))
    return A

def bn_matrix(bn: nn.BatchNorm2d, HW: int) -> np.ndarray:
    s = (bn.weight.detach().abs() / (bn.running_var + bn.eps).sqrt()).double().numpy()
    return np.diag(np.repeat(s, HW))

def shortcut_matrix(C: int, H: int, pad: int) -> np.ndarray:
    "Option-A shortcut: channel c, pixel (2y, 2x) -> channel c + pad, pixel (y, x)."
    Ho = H // 2
    S = np.zeros(((C + 2 * pad) * Ho * Ho, C * H * H))
    for c in range(C):
        for y in range(Ho):
            for x in range(Ho): S[((c + pad) * Ho + y) * Ho + x, (c * H + 2 * y) * H + 2 * x] = 1
    return S

def test_hand_written_reference():
    torch.manual_seed(0)
    net = randomize_bn(TwoBlock())
    H = 6
    gs = channel_groups(net, torch.randn(1, 3, H, H))
    sal = dfpc_saliency(net, torch.randn(1, 3, H, H), gs)
    W = lambda m: m.weight.detach()
    J = {'stem': conv_matrix(W(net.stem), H, 1, 1), 'b1.conv1': conv_matrix(W(net.b1.conv1), H, 1, 1),
         'b1.conv2': conv_matrix(W(net.b1.conv2), H, 1, 1), 'b2.conv1': conv_matrix(W(net.b2.conv1), H, 2, 1),
         'b2.conv2': conv_matrix(W(net.b2.conv2), 3, 1, 1)}
    P = np.kron(np.eye(8), np.full((1, 9), 1 / 9))                       # global average pooling of 8 channels, 3×3
    M = {'b1.conv1': J['b1.conv1'], 'b1.conv2': J['b1.conv2'], 'b2.conv1': J['b2.conv1'], 'b2.conv2': J['b2.conv2'],
         'fc': np.abs(W(net.fc).double().numpy()) @ P}
    D = {'stem': bn_matrix(net.bn, 36), 'b1.conv1': bn_matrix(net.b1.bn1, 36), 'b1.conv2': bn_matrix(net.b1.bn2, 36),
         'b2.conv1': bn_matrix(net.b2.bn1, 9), 'b2.conv2': bn_matrix(net.b2.bn2, 9)}
    S = shortcut_matrix(4, 6, 2)
    # (producer, consumer): transfer matrix from the producer's output to the consumer's input; by hand.
    stream1 = {('stem', 'b1.conv1'): D['stem'], ('stem', 'b2.conv1'): D['stem'], ('stem', 'fc'): S @ D['stem'],
               ('b1.conv2', 'b2.conv1'): D['b1.conv2'], ('b1.conv2', 'fc'): S @ D['b1.conv2'], ('b2.conv2', 'fc'): D['b2.conv2']}
    expected = {  # group (by producers): (pairs, channel k -> (input channel of each consumer))
        ('stem', 'b1.conv2', 'b2.conv2'): (stream1, lambda b, k: k + 2 if b in ('fc',) else k),
        ('b1.conv1',): ({('b1.conv1', 'b1.conv2'): D['b1.conv1']}, lambda b, k: k),
        ('b2.conv1',): ({('b2.conv1', 'b2.conv2'): D['b2.conv1']}, lambda b, k: k),
        ('b2.conv2',): ({('b2.conv2', 'fc'): D['b2.conv2']}, lambda b, k: [0, 1, 6, 7][k])}
    per = {'b1.conv1': 36, 'b1.conv2': 36, 'b2.conv1': 36, 'b2.conv2': 9, 'fc': 9}
    found = 0
    for g, s in sal.items():
        key = tuple(g.producers)
        if key not in expected: continue
        found += 1
        pairs, chan = expected[key]
        test_pairs = {(a, b) for a, b in dataflow_pairs(g)}
        assert test_pairs == set(pairs), (key, test_pairs)
        ref = np.zeros(len(g))
        for (a, b), T in pairs.items():
            for k in range(len(g)):
                c = chan(b, k)
                Sk = np.arange(c * per[b], (c + 1) * per[b]) if b != 'fc' else np.arange(c * 9, (c + 1) * 9)
                Mb = M[b] if b != 'fc' else M['fc']
                ref[k] += (Mb[:, Sk] @ T[Sk, :] @ J[a]).sum()             # the full product, summed
        close(s, ref)
    assert found == 4

# ---------------------------------------------------------------------------------------------------------------------
# The library's unrolled reference (dense and sparse) on real architectures.

def test_unrolled_dense_resnet8():
    torch.manual_seed(0)
    net, x = randomize_bn(cifar_resnet(8)), torch.randn(1, 3, 8, 8)
    gs = channel_groups(net, x)
    fast, ref = dfpc_saliency(net, x, gs), unrolled_saliency(net, x, gs, dense=True)
    assert len(fast) == 6
    for g in fast: close(fast[g], ref[g])

def test_unrolled_sparse_mobilenet_and_bottleneck():
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
    scores = channel_scores(net, x[:1], gs, score)
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
    scores = channel_scores(net, x, gs, 'random')
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

def test_errors():
    net, x = cifar_resnet(8), torch.randn(1, 3, 8, 8)
    gs = channel_groups(net, x)
    with pytest.raises(ValueError, match='target=1.5'): dfpc_prune(net, x, 1.5)
    with pytest.raises(ValueError, match="metric='flops'"): dfpc_prune(net, x, 0.5, 'flops')
    with pytest.raises(ValueError, match="score='l2'"): dfpc_prune(net, x, 0.5, score='l2')
    with pytest.raises(ValueError, match="pairs='names'"): dfpc_saliency(net, x, pairs='names')
    with pytest.raises(ValueError, match='not traced from `model`'): dfpc_saliency(cifar_resnet(14), x, gs)
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

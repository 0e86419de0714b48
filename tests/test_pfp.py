"Tests of prunebook.pfp: exact sensitivities, the (1 ± ε) guarantee at small ε and δ, coupled groups, allocation, pruning."
import copy
from collections import OrderedDict
import pytest, torch, torch.nn as nn, torch.nn.functional as F
from hypothesis import given, settings, strategies as st, HealthCheck
from prunebook.core import count_params
from prunebook.graph import channel_groups
from prunebook.surgery import remove_channels, mask_channels
from prunebook.models import cifar_resnet, lenet5, lenet300_100, train
from prunebook.data import dataloader
from prunebook.sensitivity import layer_sensitivity, reference_sensitivity, pfp_sensitivities
from prunebook.pfp import (group_sensitivity, sample_size, sample_channels, reweighting, empirical_coverage, expected_unique,
                           adapt_sample_size, ParamModel, pfp_prune, _scale_columns, default_points)


@pytest.fixture(autouse=True)
def one_thread():
    "Small tensors: one thread is faster, and immune to oversubscribed cores."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------ sensitivities
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=st.integers(1, 5), o=st.integers(1, 6), k=st.sampled_from([1, 2, 3]), stride=st.integers(1, 2),
       pad=st.integers(0, 2), dil=st.integers(1, 2), groups=st.sampled_from([1, 2]), hw=st.integers(3, 9),
       signed=st.booleans(), seed=st.integers(0, 10**6))
def test_fast_sensitivity_is_exact(c, o, k, stride, pad, dil, groups, hw, signed, seed):
    "The bound-and-refine computation equals the definition on random convolutions."
    torch.manual_seed(seed)
    c, o = c * groups, o * groups
    if hw + 2 * pad < dil * (k - 1) + 1: return
    m = nn.Conv2d(c, o, k, stride=stride, padding=pad, dilation=dil, groups=groups)
    a = torch.randn(4, c, hw, hw)
    a = a if signed else a.relu() * (torch.rand_like(a) < 0.7)           # sparse, like ReLU outputs
    torch.testing.assert_close(layer_sensitivity(m, a), reference_sensitivity(m, a), atol=1e-5, rtol=1e-5)


def test_linear_and_conv1d_exact():
    torch.manual_seed(0)
    for m, a in ((nn.Linear(30, 20), torch.randn(50, 30).relu()), (nn.Linear(8, 3), torch.randn(6, 5, 8)),
                 (nn.Conv1d(4, 6, 5, padding=2, stride=2), torch.randn(7, 4, 20).relu())):
        torch.testing.assert_close(layer_sensitivity(m, a), reference_sensitivity(m, a), atol=1e-5, rtol=1e-5)


def test_sensitivities_are_shares():
    "Each sensitivity is a share of a sum of like-signed terms: in [0, 1]; a channel alone somewhere gets 1; a dead one 0."
    m = nn.Conv2d(3, 4, 3, padding=1)
    a = torch.rand(5, 3, 6, 6); a[:, 2] = 0                              # channel 2 never active
    a[0, :, :, :] = 0; a[0, 0, 3, 3] = 1.0                               # channel 0 alone in some patches
    with torch.no_grad(): m.weight.abs_()                                # all terms positive
    s = layer_sensitivity(m, a)
    assert (s >= 0).all() and (s <= 1 + 1e-6).all()
    assert s[0] == pytest.approx(1.0) and s[2] == 0


def test_streaming_equals_one_batch():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 81, 4))
    x = torch.randn(23, 3, 20, 20)
    s_stream = pfp_sensitivities(net, [(b, None) for b in x.split(5)], ['0', '2', '5'], 23, 'cpu')
    s_once = pfp_sensitivities(net, [x], ['0', '2', '5'], 23, 'cpu')
    s_first = pfp_sensitivities(net, [x], ['0', '2', '5'], 10, 'cpu')
    for n in s_once: torch.testing.assert_close(s_stream[n].s, s_once[n].s)
    assert s_once['0'].points == 46 and s_first['2'].points == 10        # the image has both signs: twice the points
    assert (s_first['2'].s <= s_once['2'].s + 1e-7).all()                # maxima over fewer points


# ------------------------------------------------------------------ sampling and the guarantee
def teacher_mlp():
    "A small MLP trained on a synthetic teacher task (about a second on one thread); returns it and its data."
    def data(n, seed):
        x = torch.randn(n, 20, generator=torch.Generator().manual_seed(seed))
        gt = torch.Generator().manual_seed(1234)
        T1, T2 = torch.randn(20, 64, generator=gt), torch.randn(64, 10, generator=gt)
        return x, ((x @ T1).relu() @ T2).argmax(1)
    torch.manual_seed(0)
    (xt, yt), (xv, yv) = data(4000, 0), data(1000, 1)
    mlp = nn.Sequential(OrderedDict(fc1=nn.Linear(20, 128), relu1=nn.ReLU(), fc2=nn.Linear(128, 64), relu2=nn.ReLU(), fc3=nn.Linear(64, 10)))
    train(mlp, dataloader(torch.utils.data.TensorDataset(xt, yt), 200, shuffle=True, seed=0), epochs=8, lr=0.2, device='cpu', progress=False)
    return mlp.eval(), xv, yv


@pytest.fixture(scope='module')
def trained_mlp():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    try: return teacher_mlp()
    finally: torch.set_num_threads(n)


def test_unbiased():
    torch.manual_seed(0)
    lay, a = nn.Linear(10, 3, bias=False), torch.rand(1, 10)
    s = layer_sensitivity(lay, a); p = s / s.sum()
    gen = torch.Generator().manual_seed(0)
    g = torch.stack([reweighting(sample_channels(p, 5, gen), p) for _ in range(20000)]).float()
    W = lay.weight.detach()
    for Wx in (W.clamp(min=0), W.clamp(max=0)):
        z = (Wx * a).sum(1)
        est = (Wx.unsqueeze(0) * g.unsqueeze(1) * a).sum(2).mean(0)
        torch.testing.assert_close(est, z, atol=0.03 * z.abs().max(), rtol=0)


@pytest.mark.parametrize('eps,delta', [(0.1, 0.01), (0.05, 0.001)])
def test_coverage_trained_linear(trained_mlp, eps, delta):
    "On a trained layer, at the computed sample size, at least 1 - δ of (draw, input) pairs stay within (1 ± ε)."
    mlp, xv, _ = trained_mlp
    with torch.no_grad(): hS, hT = mlp[:2](xv[:200]), mlp[:2](xv[200:])
    r = empirical_coverage(mlp.fc2, hS, hT, eps=eps, delta=delta, trials=10)
    assert r['pairs'] == 8000 and r['m'] == sample_size(r['S'], eps, delta, 64)
    assert r['coverage'] >= 1 - delta, r


def test_coverage_has_teeth(trained_mlp):
    "Too few draws, or a wrong reweighting at the bound's draws, break the coverage."
    mlp, xv, _ = trained_mlp
    with torch.no_grad(): hS, hT = mlp[:2](xv[:200]), mlp[:2](xv[200:])
    r = empirical_coverage(mlp.fc2, hS, hT, eps=0.1, delta=0.01, trials=2)
    assert empirical_coverage(mlp.fc2, hS, hT, eps=0.1, delta=0.01, m=r['m'] // 1000, trials=5)['coverage'] < 0.99
    wrong = lambda counts, p: counts * len(p) / counts.sum()
    assert empirical_coverage(mlp.fc2, hS, hT, eps=0.1, delta=0.01, trials=2, gamma=wrong)['coverage'] < 0.5


def test_coverage_trained_conv():
    "The same on a trained convolution (a tiny CNN on a synthetic task), over every output position."
    torch.manual_seed(0)
    x = torch.randn(1200, 1, 8, 8)
    y = (F.avg_pool2d(x, 4).flatten(1) @ torch.randn(4, 5, generator=torch.Generator().manual_seed(7))).argmax(1)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 5))
    train(net, dataloader(torch.utils.data.TensorDataset(x[:1000], y[:1000]), 100, shuffle=True, seed=0), epochs=5, lr=0.1, device='cpu', progress=False)
    with torch.no_grad(): hS, hT = net[:2](x[1000:1100]), net[:2](x[1100:])
    r = empirical_coverage(net[2], hS, hT, eps=0.1, delta=0.01, trials=10)
    assert r['coverage'] >= 0.99, r
    assert empirical_coverage(net[2], hS, hT, eps=0.1, delta=0.01, m=r['m'] // 3000, trials=5)['coverage'] < 0.99


def test_sample_size_and_unique():
    assert sample_size(10, 0.5, 0.1, 4) == pytest.approx((6 + 1) * 3 * 10 * torch.log(torch.tensor(160.)).item() / 0.25, abs=1)
    assert sample_size(10, 0.5, 1e-12, 4) < 2 * sample_size(10, 0.5, 1e-6, 4)     # logarithmic in 1/δ
    p = torch.tensor([0.4, 0.3, 0.2, 0.1, 0.0])
    for n in (1, 2, 3, 4):
        m = adapt_sample_size(p, n)
        assert expected_unique(p, m) >= n - 1e-6 and (m == 1 or expected_unique(p, m - 1) < n - 1e-6)
    counts = sample_channels(p, 10**7, torch.Generator().manual_seed(0))            # large m: binomial path
    assert counts.sum() == 10**7 and counts[-1] == 0
    torch.testing.assert_close(counts / 10**7, p.double(), atol=1e-3, rtol=0)
    for bad in (lambda: sample_size(1, 0.1, 0, 2), lambda: sample_size(1, -1, 0.1, 2), lambda: sample_channels(torch.zeros(3), 5)):
        with pytest.raises(ValueError): bad()


# ------------------------------------------------------------------ coupled channels
class Res(nn.Module):
    def __init__(self, c=6):
        super().__init__()
        self.stem, self.conv1, self.conv2, self.head = nn.Conv2d(3, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1), nn.Linear(c * 16, 4)
    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(x + self.conv2(F.relu(self.conv1(x))))
        return self.head(F.adaptive_avg_pool2d(x, 4).flatten(1))
    def parts(self, x):
        h = F.relu(self.stem(x)); h2 = F.relu(h + self.conv2(F.relu(self.conv1(h))))
        return h, F.adaptive_avg_pool2d(h2, 4).flatten(1)


def test_group_sensitivity_is_max_over_consumers():
    torch.manual_seed(0)
    net, x = Res().eval(), torch.randn(10, 3, 8, 8)
    g = channel_groups(net, x[:1])[0]
    assert g.consumers == ['conv1', 'head']
    sens = pfp_sensitivities(net, [x], g.consumers, 10, 'cpu')
    with torch.no_grad(): h, f = net.parts(x)
    expect = torch.maximum(reference_sensitivity(net.conv1, h), reference_sensitivity(net.head, f).view(6, 16).amax(1))
    torch.testing.assert_close(group_sensitivity(g, sens).float(), expect, atol=1e-5, rtol=0)


def test_coupled_guarantee_for_every_consumer():
    "Sampling a coupled group with the max-sensitivities keeps (1 ± ε) for each of its consumers."
    torch.manual_seed(0)
    net, x = Res(c=16).eval(), torch.randn(60, 3, 8, 8)
    g = channel_groups(net, x[:1])[0]
    sens = pfp_sensitivities(net, [x[:30]], g.consumers, 30, 'cpu')
    s = group_sensitivity(g, sens); p = s / s.sum()
    eps, delta = 0.2, 0.01
    m = sample_size(float(s.sum()), eps, delta, 16 * 2 + 4)          # union over both consumers' outputs
    with torch.no_grad(): h, f = net.parts(x[30:])
    gen, ok = torch.Generator().manual_seed(0), []
    for _ in range(10):
        gam = reweighting(sample_channels(p, m, gen), p).float()
        inside = torch.ones(30, dtype=torch.bool)
        for W, a, conv in ((net.conv1.weight.detach(), h, True), (net.head.weight.detach(), f, False)):
            scale = gam.view(1, -1, 1, 1) if conv else gam.repeat_interleave(16).view(1, -1)
            for Wx in (W.clamp(min=0), W.clamp(max=0)):
                run = (lambda w: F.conv2d(a, w, padding=1).flatten(1)) if conv else (lambda w: a @ w.T)
                z, zh = run(Wx), run(Wx * scale)
                inside &= ((zh - z).abs() <= eps * z.abs() + 1e-6).all(1)
        ok.append(inside)
    assert torch.cat(ok).float().mean() >= 1 - delta


# ------------------------------------------------------------------ allocation and pruning
def test_param_model_exact():
    gen = torch.Generator().manual_seed(0)
    for net, x in ((cifar_resnet(8), torch.rand(1, 3, 32, 32)), (lenet5(), torch.rand(1, 1, 28, 28)), (lenet300_100(), torch.rand(1, 1, 28, 28))):
        gs = channel_groups(net, x)
        active = [g for g in gs if g.prunable and g.consumers]
        orders = {g: torch.randperm(len(g), generator=gen) for g in active}
        pm = ParamModel(net, orders)
        assert pm([len(g) for g in active]) == count_params(net)
        for _ in range(4):
            n = [int(torch.randint(1, len(g) + 1, (1,), generator=gen)) for g in active]
            drop = {g: orders[g][k:].tolist() for g, k in zip(active, n) if k < len(g)}
            assert pm(n) == count_params(remove_channels(net, gs, drop))


@pytest.mark.parametrize('variant', ['deterministic', 'randomized'])
def test_pfp_prune_hits_target_and_leaves_model(variant):
    torch.manual_seed(0)
    net, x = cifar_resnet(8).eval(), torch.rand(12, 3, 32, 32)
    before = copy.deepcopy(net.state_dict())
    for ratio in (0.3, 0.7):
        out = pfp_prune(net, [x], prune_ratio=ratio, variant=variant, n_points=12)
        h = out.pfp_history[-1]
        if variant == 'deterministic':
            assert h['params'] == h['estimate'] == count_params(out)
            assert abs(count_params(out) - (1 - ratio) * count_params(net)) < 0.01 * count_params(net)
        with torch.no_grad(): assert out(x).shape == (12, 10)
    for k, v in net.state_dict().items(): assert torch.equal(v, before[k]), k
    assert not hasattr(net, 'pfp_history')


def test_deterministic_keeps_most_sensitive():
    torch.manual_seed(0)
    net, x = lenet300_100().eval(), torch.rand(40, 1, 28, 28)
    out = pfp_prune(net, [x], prune_ratio=0.5, n_points=40)
    gs = channel_groups(net, x[:1])
    sens = pfp_sensitivities(net, [x], ['fc2', 'fc3'], 40, 'cpu')
    for g, layer in ((gs[0], out.fc1), (gs[1], out.fc2)):
        s = group_sensitivity(g, sens)
        kept = layer.out_features
        keep_idx = torch.argsort(-s, stable=True)[:kept].sort().values
        src = net.fc1 if g.idx == 0 else net.fc2
        w = src.weight.detach()[keep_idx]
        if g.idx == 1: w = w[:, torch.argsort(-group_sensitivity(gs[0], sens), stable=True)[:out.fc1.out_features].sort().values]
        torch.testing.assert_close(layer.weight.detach(), w)


def test_randomized_equals_reweighted_mask():
    torch.manual_seed(0)
    net, x = Res().eval(), torch.rand(24, 3, 8, 8)
    out = pfp_prune(net, [x], prune_ratio=0.4, variant='randomized', n_points=24, seed=3)
    gs = channel_groups(net, x[:1])
    ref, drop = copy.deepcopy(net), {}
    for g in gs:
        gam = out.pfp_history[-1]['gamma'].get(g.idx)
        if gam is None: continue
        for name in g.consumers:
            pos = g.positions(name, 'in')
            _scale_columns(ref.get_submodule(name), [q for ps in pos for q in ps], torch.tensor([float(gam[c]) for c, ps in enumerate(pos) for _ in ps]))
        d = [c for c in range(len(g)) if gam[c] == 0]
        if d: drop[g] = d
    assert drop
    with torch.no_grad(): torch.testing.assert_close(out(x), mask_channels(ref, gs, drop)(x), atol=1e-4, rtol=1e-4)


def test_iterative_and_finetune_hook():
    torch.manual_seed(0)
    net, x = cifar_resnet(8).eval(), torch.rand(8, 3, 32, 32)
    seen = []
    out = pfp_prune(net, [x], prune_ratio=0.5, iterative_steps=3, n_points=8, finetune=lambda m: seen.append(count_params(m)) or m)
    assert len(out.pfp_history) == 3 and len(seen) == 3
    targets = [h['target'] for h in out.pfp_history]
    assert targets == sorted(targets, reverse=True) and abs(targets[-1] - 0.5 * count_params(net)) <= 1

@pytest.mark.parametrize('rule', ['uniform', 'normalized', 'cost'])
def test_shared_allocation_hits_target(rule):
    "PFP's sensitivities allocated by a shared rule: the parameter target is met and every group keeps channels."
    torch.manual_seed(0)
    net, x = cifar_resnet(8).eval(), torch.rand(12, 3, 32, 32)
    out = pfp_prune(net, [x], prune_ratio=0.5, n_points=12, allocation=rule)
    h = out.pfp_history[-1]
    assert h['allocation'] == rule and h['eps'] is None and h['params'] == count_params(out)
    assert abs(count_params(out) - 0.5 * count_params(net)) < 0.02 * count_params(net)
    assert all(0 < kept for kept, _ in h['kept'].values())


def test_errors():
    net, x = lenet300_100(), [torch.rand(4, 1, 28, 28)]
    for kw, msg in ((dict(prune_ratio=1.0), 'prune_ratio'), (dict(prune_ratio=-0.1), 'prune_ratio'), (dict(delta=1.0), 'delta'),
                    (dict(variant='x'), 'variant'), (dict(iterative_steps=0), 'iterative_steps'),
                    (dict(allocation='best'), 'allocation'), (dict(allocation='normalized', variant='randomized'), "variant='deterministic'")):
        with pytest.raises(ValueError, match=msg): pfp_prune(net, x, **kw)
    with pytest.raises(ValueError, match='no inputs'): pfp_sensitivities(net, [], ['fc2'], 4)
    with pytest.raises(KeyError, match='fc9'): pfp_sensitivities(net, x, ['fc9'], 4)
    with pytest.raises(NotImplementedError, match='ConvTranspose'):
        pfp_sensitivities(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ConvTranspose2d(2, 2, 3)), x, ['1'], 4)


def test_lenet5_on_mnist():
    "pfp_prune on LeNet-5 with MNIST digits (skipped without the data)."
    from prunebook.data import mnist, NotDownloadedError
    try: ds = mnist('test')
    except NotDownloadedError as e: pytest.skip(f'MNIST not available: {e}')
    x = torch.stack([ds[i][0] for i in range(130)])
    net = lenet5().eval()
    out = pfp_prune(net, [(x, None)], prune_ratio=0.8, delta=1e-12)
    assert out.pfp_history[-1]['n_points'] == default_points(net, 1e-12) == 120 and abs(count_params(out) - 0.2 * count_params(net)) < 0.01 * count_params(net)
    with torch.no_grad(): assert out(x).shape == (130, 10)

def test_small_prune_ratio_does_not_overflow():
    "A tiny prune ratio drives the ε bisection to ε ~ 1e-10, where sample sizes pass int64: no OverflowError, a smaller model."
    torch.manual_seed(0)
    net, x = lenet5(), torch.randn(64, 1, 28, 28)
    out = pfp_prune(net, [x], prune_ratio=0.01, n_points=64, device='cpu')
    assert count_params(out) < count_params(net)

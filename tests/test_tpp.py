"Tests of prunebook.tpp: the Gram penalty and its gradient by hand, the L2 and BatchNorm terms, the schedule, removal."
import copy
import pytest, torch, torch.nn as nn, torch.nn.functional as F
from hypothesis import given, settings, strategies as st, HealthCheck
from prunebook.tpp import TPPRegularizer, tpp_prune, tpp_regularize, l1_drop, jacobian_singular_values
from prunebook.graph import channel_groups
from prunebook.surgery import remove_channels
from prunebook.models import cifar_resnet


def test_gram_gradient_by_hand():
    "W = [[1,0],[1,1],[0,2]], filter 3 pruned: L = (G33^2 + 2 G23^2 + 2 G13^2)/9 = 24/9, dL/dW = 4/9 (M*G) W."
    lin = nn.Linear(2, 3, bias=False)
    with torch.no_grad(): lin.weight.copy_(torch.tensor([[1., 0], [1, 1], [0, 2]]))
    reg = TPPRegularizer(lin, {'': [2]})
    pen = reg.gram_penalty()
    assert abs(pen.item() - 24 / 9) < 1e-6
    pen.backward()
    # row 1: G13 w3 = 0; row 2: G23 w3 = 2*(0,2); row 3: G31 w1 + G32 w2 + G33 w3 = (0,0) + 2*(1,1) + 4*(0,2)
    expected = torch.tensor([[0., 0], [0, 4], [2, 10]]) * 4 / 9
    torch.testing.assert_close(lin.weight.grad, expected)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 9), d=st.integers(1, 7), data=st.data())
def test_gram_gradient_formula(n, d, data):
    "For any layer and pruned set: the value is (1/N^2) sum over entries touching P of G_ij^2 (written as loops), the gradient (4/N^2)(M*G)W."
    pruned = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n - 1, unique=True))
    torch.manual_seed(n * 100 + d)
    lin = nn.Linear(d, n, bias=False)
    reg = TPPRegularizer(lin, {'': pruned})
    W = lin.weight.detach().double()
    G = W @ W.T
    value = sum(G[i, j] ** 2 for i in range(n) for j in range(n) if i in pruned or j in pruned) / n ** 2
    M = torch.tensor([[float(i in pruned or j in pruned) for j in range(n)] for i in range(n)], dtype=torch.double)
    pen = reg.gram_penalty()
    pen.backward()
    torch.testing.assert_close(pen.double(), value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lin.weight.grad.double(), 4 / n ** 2 * (M * G) @ W, rtol=1e-4, atol=1e-6)


def official_v5(w, pruned):
    "The official code's formulation: MSE between the Gram matrix and a detached copy with pruned rows/columns zeroed."
    w = w.flatten(1)
    target = (w @ w.T).detach().clone()
    target[pruned, :] = 0; target[:, pruned] = 0
    return F.mse_loss(w @ w.T, target)


def test_stacked_layers_match_official_formula():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 6, 1), nn.Linear(4, 5))
    pruned = {'0': [1, 5], '1': [0, 2, 7], '2': [3], '3': [0, 1], '4': [4]}
    reg = TPPRegularizer(net, pruned)
    assert len(reg._buckets) == 4                           # '1' and '2' stacked
    got = reg.gram_penalties()
    for name, idx in pruned.items():
        torch.testing.assert_close(got[name], official_v5(net.get_submodule(name).weight, idx))
    # the full penalty's gradient equals that of the per-layer sum
    reg.t = 10 ** 6
    net.zero_grad(); reg(l2=False).backward()
    a = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    net.zero_grad(); (reg.alpha * reg.lam * sum(official_v5(net.get_submodule(n).weight, i) for n, i in pruned.items())).backward()
    b = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    for x, y in zip(a, b): torch.testing.assert_close(x, y)


def test_l2_terms_loss_equals_gradient_form():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, bias=True), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.BatchNorm2d(4))
    reg = TPPRegularizer(net, {'0': [1, 4], '3': [2]}, {'1': [1, 4], '4': [2]}, delta=0.3, interval=1)
    for _ in range(2): reg.step()
    x = torch.randn(2, 3, 9, 9)
    net.zero_grad(); (net(x).square().mean() + reg()).backward()
    a = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(); (net(x).square().mean() + reg(l2=False)).backward(); reg.add_l2_gradients()
    b = [p.grad.clone() for p in net.parameters()]
    for x_, y_ in zip(a, b): torch.testing.assert_close(x_, y_)
    # the L2 gradient touches only the pruned entries: lam * p there
    net.zero_grad(); (reg.lam * reg.l2_penalty()).backward()
    g = net[1].weight.grad
    torch.testing.assert_close(g[[1, 4]], 0.6 * net[1].weight.detach()[[1, 4]])
    assert g[[0, 2, 3, 5]].abs().sum() == 0
    assert net[0].bias.grad[[0, 2, 3, 5]].abs().sum() == 0 and net[0].bias.grad[[1, 4]].abs().sum() > 0


def test_flags_switch_terms_off():
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6))
    assert TPPRegularizer(net, {'0': [1]}, {'1': [1]}, weight_reg=False, bn_reg=False).l2_penalty().item() == 0
    only_bn = TPPRegularizer(net, {'0': [1]}, {'1': [1]}, weight_reg=False).l2_penalty().item()
    assert abs(only_bn - 0.5 * (net[1].weight[1] ** 2 + net[1].bias[1] ** 2).item()) < 1e-6


def test_schedule():
    reg = TPPRegularizer(nn.Linear(3, 4), {'': [0]}, delta=0.25, interval=2, ceiling=1.0)
    lams = []
    for _ in range(12): lams.append(reg.lam); reg.step()
    assert lams == [0, 0, .25, .25, .5, .5, .75, .75, 1, 1, 1, 1]
    assert reg.ramp_iters == 8
    assert TPPRegularizer(nn.Linear(3, 4), {'': [0]}).ramp_iters == 100_000      # the paper's CIFAR schedule


def test_from_groups_resnet20():
    m = cifar_resnet(20)
    groups = channel_groups(m, torch.randn(1, 3, 32, 32))
    drop = l1_drop(groups, 0.5)
    reg = TPPRegularizer.from_groups(m, groups, drop)
    assert sorted(reg.pruned) == sorted(f'layer{s}.{b}.conv1' for s in (1, 2, 3) for b in range(3))
    for name, rows in reg.pruned.items():
        assert reg.norms[name.replace('conv1', 'bn1')] == rows
        n = m.get_submodule(name).out_channels
        assert len(rows) == n // 2
        scores = m.get_submodule(name).weight.detach().abs().flatten(1).sum(1)
        assert set(rows) == set(scores.argsort()[:n // 2].tolist())            # the smallest L1 norms
    # a residual stream: every producer of the group regularized on the same channels, all its BatchNorms too
    stream = next(g for g in groups if g.prunable and len(g.producers) > 1)
    reg = TPPRegularizer.from_groups(m, groups, {stream: [0, 1]})
    assert set(reg.pruned) == set(stream.producers) and len(reg.units) == 1
    for name in stream.producers: assert reg.pruned[name] == sorted(q for i in (0, 1) for q in stream.positions(name, 'out')[i])
    bns = [n for n in stream.dependents if isinstance(m.get_submodule(n), nn.BatchNorm2d)]
    assert sorted(reg.norms) == sorted(bns) and len(bns) >= len(stream.producers)
    for name in bns: assert reg.norms[name] == sorted(q for i in (0, 1) for q in stream.positions(name, 'dep')[i])
    assert len({tuple(v) for v in reg.norms.values()}) > 1        # the padded shortcuts shift positions between stages


def test_ceil_rule():
    m = cifar_resnet(20)
    groups = channel_groups(m, torch.randn(1, 3, 32, 32))
    kept = {g.producers[0]: len(g) - len(d) for g, d in l1_drop(groups, 0.9).items()}
    assert kept['layer1.0.conv1'] == 1 and kept['layer2.0.conv1'] == 3 and kept['layer3.0.conv1'] == 6
    kept = {g.producers[0]: len(g) - len(d) for g, d in l1_drop(groups, {'layer1.0.conv1': 0.5}).items()}
    assert kept == {'layer1.0.conv1': 8}


def test_errors_name_the_culprit():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ConvTranspose2d(8, 4, 2))
    with pytest.raises(ValueError, match="no module named 'x'"): TPPRegularizer(net, {'x': [0]})
    with pytest.raises(ValueError, match="'1' is a BatchNorm2d"): TPPRegularizer(net, {'1': [0]})
    with pytest.raises(ValueError, match="'2' is a ConvTranspose2d"): TPPRegularizer(net, {'2': [0]})
    with pytest.raises(ValueError, match=r'must lie in \[0, 8\)'): TPPRegularizer(net, {'0': [8]})
    with pytest.raises(ValueError, match='all 8 filters'): TPPRegularizer(net, {'0': range(8)})
    with pytest.raises(ValueError, match='must name BatchNorm'): TPPRegularizer(net, {'0': [0]}, {'0': [0]})
    with pytest.raises(ValueError, match='delta > 0'): TPPRegularizer(net, {'0': [0]}, delta=0)
    with pytest.raises(TypeError, match='nn.Module'): TPPRegularizer('net', {'0': [0]})
    reg = TPPRegularizer(net, {'0': [0]})
    with pytest.raises(ValueError, match='not regularized'): reg.zero_out(['1'])
    with pytest.raises(ValueError, match='built on another model'): tpp_regularize(copy.deepcopy(net), [], reg)
    with pytest.raises(ValueError, match='`x` must be a batch'): jacobian_singular_values(net, torch.randn(3))


def small_cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


def test_tpp_prune_end_to_end():
    torch.manual_seed(0)
    data = [(torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))) for _ in range(4)]
    model = small_cnn()
    before = copy.deepcopy(model.state_dict())
    # the pieces: after the phase the pruned entries are exactly zero and removal changes nothing
    work = copy.deepcopy(model)
    groups = channel_groups(work, data[0][0][:1])
    drop = l1_drop(groups, 0.5)
    reg = TPPRegularizer.from_groups(work, groups, drop, delta=0.2, interval=1)
    tpp_regularize(work, data, reg, stabilize_iters=4, zero_out_every=1, lr=1e-2, device='cpu', progress=False, log_every=1)
    assert reg.t == reg.ramp_iters + 4 and len(work.tpp_log) == reg.t
    assert all(r.get('pruned_norm', 0) == 0 and r.get('max_gamma', 0) == 0 and r.get('max_beta', 0) == 0 for r in reg.report())
    small = remove_channels(work, groups, drop)
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad(): torch.testing.assert_close(small.eval()(x), work.eval()(x), rtol=1e-5, atol=1e-5)
    # the one call: same shapes, caller's model untouched, fine-tuning runs
    p = tpp_prune(model, data, 0.5, ramp_iters=5, interval=1, stabilize_iters=2, zero_out_every=1, reg_lr=1e-2,
                  ft_epochs=1, device='cpu', progress=False)
    assert (p[0].out_channels, p[3].in_channels, p[3].out_channels, p[4].num_features) == (4, 4, 4, 4)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert p.tpp['layers'] == {'0': (8, 4), '3': (8, 4)} and 'finetune_seconds' in p.tpp
    p2 = tpp_prune(model, data, 0.5, ramp_iters=2, interval=1, stabilize_iters=0, ft_epochs=0, device='cpu', progress=False, inplace=True)
    assert not torch.equal(model[0].weight, before['0.weight'])                  # inplace=True regularizes the model itself
    assert p2 is not model


def test_shared_allocation():
    "TPP's L1 scores allocated by a shared rule: the ratio is of all selected channels, every layer keeps its floor."
    torch.manual_seed(0)
    data = [(torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))) for _ in range(2)]
    model = small_cnn()
    p = tpp_prune(model, data, 0.5, ramp_iters=2, interval=1, stabilize_iters=1, ft_epochs=0, device='cpu', progress=False,
                  allocation='uniform')
    assert p.tpp['layers'] == {'0': (8, 4), '3': (8, 4)}
    with pytest.raises(ValueError, match="allocation='best'"): tpp_prune(model, data, 0.5, allocation='best', progress=False)
    with pytest.raises(ValueError, match='one float prune_ratio'): tpp_prune(model, data, {'0': 0.5}, allocation='uniform', progress=False)

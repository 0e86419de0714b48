"Property tests: on randomly generated residual / concatenation / split networks, removing channels equals masking them."
import torch, torch.nn as nn, torch.nn.functional as F
from hypothesis import given, settings, strategies as st, HealthCheck
from prunebook.graph import channel_groups
from prunebook.surgery import remove_channels, mask_channels, random_drop
from prunebook.core import count_params

OPS = ['conv', 'dwconv', 'gconv', 'res', 'cat', 'split', 'se', 'pool', 'prelu', 'padshortcut', 'convT']

class RandomNet(nn.Module):
    "A network built from a list of `ops` applied to a running feature map (static, so torch.fx traces it)."
    def __init__(self, ops: list[str], width: int = 8, head: str = 'pool'):
        super().__init__()
        self.ops, self.head = ops, head
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.layers, c = nn.ModuleList(), width
        for op in ops:
            if op == 'conv': m = nn.Sequential(nn.Conv2d(c, c + 4, 3, padding=1), nn.BatchNorm2d(c + 4), nn.ReLU()); c += 4
            elif op == 'dwconv': m = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c), nn.BatchNorm2d(c), nn.ReLU6())
            elif op == 'gconv':
                m = nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.BatchNorm2d(2 * c), nn.ReLU(),
                                  nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2), nn.BatchNorm2d(2 * c)); c *= 2
            elif op == 'res': m = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 1))
            elif op == 'cat': m = nn.Sequential(nn.Conv2d(c, 4, 1), nn.BatchNorm2d(4)); c += 4
            elif op == 'split': h = c // 2; m = nn.ModuleList([nn.Conv2d(h, h, 3, padding=1), nn.Conv2d(c - h, c - h, 1)])
            elif op == 'se': m = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, 4, 1), nn.ReLU(), nn.Conv2d(4, c, 1), nn.Sigmoid())
            elif op == 'pool': m = nn.MaxPool2d(2, ceil_mode=True)
            elif op == 'prelu': m = nn.PReLU(c)
            elif op == 'padshortcut':
                m = nn.Sequential(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.BatchNorm2d(2 * c)); c *= 2
            elif op == 'convT': m = nn.Sequential(nn.ConvTranspose2d(c, c + 2, 2, stride=2), nn.ReLU(), nn.MaxPool2d(2)); c += 2
            self.layers.append(m)
        self.fc = nn.Linear(c if head == 'pool' else c * 4, 5)

    def forward(self, x):
        x = self.stem(x)
        for op, m in zip(self.ops, self.layers):
            if op in ('res',): x = F.relu(x + m(x))
            elif op == 'cat': x = torch.cat([x, m(x)], 1)
            elif op == 'split':
                a, b = torch.split(x, [m[0].in_channels, m[1].in_channels], dim=1)
                x = torch.cat([m[1](b), m[0](a)], 1)
            elif op == 'se': x = x * m(x)
            elif op == 'padshortcut':
                c = x.shape[1]
                x = F.relu(m(x) + F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, c // 2, c - c // 2)))
            else: x = m(x)
        if self.head == 'pool': return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 2), 1))

def randomize(model: nn.Module, seed: int) -> nn.Module:
    "Give every BatchNorm non-trivial statistics, so that a wrongly kept or dropped channel shows."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.sampled_from(OPS), min_size=1, max_size=6), head=st.sampled_from(['pool', 'flatten']),
       frac=st.floats(0.1, 0.7), seed=st.integers(0, 10_000))
def test_remove_equals_mask(ops, head, frac, seed):
    torch.manual_seed(seed)
    model = randomize(RandomNet(ops, head=head), seed)
    x = torch.randn(2, 3, 16, 16)
    groups = channel_groups(model, x)
    drop = random_drop(groups, frac, seed=seed)
    pruned, masked = remove_channels(model, groups, drop), mask_channels(model, groups, drop)
    with torch.no_grad(): a, b, ref = pruned(x), masked(x), model(x)
    assert a.shape == ref.shape
    assert (a - b).abs().max() <= 1e-5 * max(1.0, b.abs().max().item())
    if drop: assert count_params(pruned) < count_params(model)
    for p, q in zip(model.parameters(), randomize(RandomNet(ops, head=head), seed).parameters()):
        assert p.shape == q.shape          # the caller's model was not modified

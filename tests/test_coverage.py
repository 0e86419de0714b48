"Coverage: every prunable group of each architecture can lose 30% of its channels, and removal equals masking."
import pytest, torch, torch.nn as nn, torch.nn.functional as F, torchvision
from prunebook.core import count_macs, count_params
from prunebook.graph import channel_groups
from prunebook.surgery import remove_channels, mask_channels, random_drop
from prunebook.models import cifar_resnet, vgg_cifar, lenet5, lenet300_100

def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    "Non-trivial BatchNorm statistics, so that a wrongly kept or dropped channel shows in the outputs."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.4 + 0.3)
                    m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()

TORCHVISION = ['resnet18', 'resnet50', 'wide_resnet50_2', 'resnext50_32x4d', 'mobilenet_v2', 'mobilenet_v3_small',
               'efficientnet_b0', 'densenet121', 'vgg11_bn', 'googlenet', 'regnet_x_400mf', 'shufflenet_v2_x0_5',
               'squeezenet1_1', 'convnext_tiny']
OURS = {'cifar_resnet20': (lambda: cifar_resnet(20), (3, 32, 32)), 'cifar_resnet56': (lambda: cifar_resnet(56), (3, 32, 32)),
        'vgg16_bn_cifar': (lambda: vgg_cifar(16), (3, 32, 32)), 'lenet5': (lenet5, (1, 28, 28)),
        'lenet300_100': (lenet300_100, (1, 28, 28))}

def build(name):
    if name in OURS: f, shape = OURS[name]; return f(), shape
    kw = dict(aux_logits=False, init_weights=True) if name == 'googlenet' else {}
    return torchvision.models.get_model(name, **kw), (3, 64, 64)

@pytest.mark.parametrize('name', list(OURS) + TORCHVISION)
def test_prune_30_percent(name):
    torch.manual_seed(0)
    model, shape = build(name)
    model = randomize_bn(model)
    x = torch.randn(2, *shape)
    groups = channel_groups(model, x)
    prunable = [g for g in groups if g.prunable]
    assert prunable, f'{name}: no prunable group'
    drop = random_drop(groups, 0.3, seed=1)
    assert all(len(drop.get(g, [])) >= int(0.3 * len(g)) * 0.5 for g in prunable if len(g) >= 8), 'a group lost too little'
    pruned, masked = remove_channels(model, groups, drop), mask_channels(model, groups, drop)
    with torch.no_grad(): a, b = pruned(x), masked(x)
    assert (a - b).abs().max() <= 1e-5 * max(1.0, b.abs().max().item())
    assert count_params(pruned) < count_params(model)
    assert count_macs(pruned, x[:1]) < count_macs(model, x[:1])


# timm's test models: tiny versions of its families (seconds), the fast part of tests/test_timm_coverage.py
TIMM_SMALL = ['test_efficientnet_gn', 'test_convnext', 'test_nfnet']

@pytest.mark.parametrize('name', TIMM_SMALL)
def test_timm_small(name):
    timm_cov = pytest.importorskip('test_timm_coverage', reason='tests/ is not on sys.path')
    pytest.importorskip('timm')
    model, x = timm_cov.timm_model(name)
    assert timm_cov.prunes_exactly_or_refuses(model, x, name), f'{name}: no prunable group'

class WSConv2d(nn.Conv2d):
    "A convolution standardizing its weight, with a learned gain per output channel (as NFNets do)."
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw); self.gain = nn.Parameter(torch.rand(self.out_channels, 1, 1, 1) + 0.5)
    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True, momentum=0.)
        return F.conv2d(x, w.reshape_as(self.weight) * self.gain, self.bias, self.stride, self.padding)

class GainAfterConv2d(nn.Conv2d):
    "A convolution followed by a learned gain per output channel, written inside its forward."
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw); self.gain = nn.Parameter(torch.rand(self.out_channels, 1, 1) + 0.5)
    def forward(self, x): return super().forward(x) * self.gain

def around(conv: nn.Module) -> tuple[nn.Module, torch.Tensor, list]:
    "A small network with `conv` (8 -> 6 channels) as its layer 3, an input, and its channel groups."
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), conv, nn.ReLU(),
                                       nn.Conv2d(6, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)))
    x = torch.randn(2, 3, 12, 12)
    return model, x, channel_groups(model, x)

def test_weight_standardization_folds():
    "A convolution computing its weight is folded into a plain one, and prunes exactly on both sides."
    model, x, groups = around(WSConv2d(8, 6, 3))
    assert [g.prunable for g in groups] == [True, True, True, False]
    drop = random_drop(groups, 0.5)
    pruned = remove_channels(model, groups, drop)
    assert type(pruned[3]) is nn.Conv2d and pruned[3].weight.shape[:2] == (3, 4)
    with torch.no_grad(): assert torch.allclose(pruned(x), mask_channels(model, groups, drop)(x), atol=1e-6)
    assert type(model[3]) is WSConv2d                                    # the caller's model is untouched

def test_never_a_broken_model():
    "A layer with a per-channel parameter the graph has no rule for: its channels are refused, the rest prunes exactly."
    model, x, groups = around(GainAfterConv2d(8, 6, 3))
    assert [g.prunable for g in groups] == [False, True, False]          # conv 0 feeds the traced-through conv: refused
    assert "in '3' (GainAfterConv2d)" in groups[0].reason, groups[0].reason
    drop = random_drop(groups, 0.5)
    with torch.no_grad(): assert torch.allclose(remove_channels(model, groups, drop)(x), mask_channels(model, groups, drop)(x), atol=1e-6)

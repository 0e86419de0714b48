"""Coverage beyond torchvision (issue 17): a fixed sample of timm's convolutional and hybrid families, random weights,
30% of every prunable group. Each model prunes exactly (removal equals masking) or is refused with a reason; none
crashes inside prunebook, and no pruned model fails at its first forward. Slow (about an hour on 2 cores):
`pytest --runslow tests/test_timm_coverage.py`. The committed table is bench/results/surgery.md (bench/surgery.py)."""
from collections import Counter
import pytest, torch, torch.nn as nn
from prunebook.graph import channel_groups
from prunebook.surgery import remove_channels, mask_channels, random_drop

timm = pytest.importorskip('timm')

MODELS = ['resnet50_gn', 'resnetv2_50x1_bit', 'nf_resnet26', 'convnext_atto', 'convnextv2_atto',
          'mobilevitv2_050', 'edgenext_xx_small', 'tinynet_e', 'mobilenetv3_small_050', 'regnety_002',
          'fastvit_t8', 'repvgg_a0', 'poolformerv2_s12', 'lcnet_050', 'efficientvit_m0', 'efficientvit_b0',
          'efficientnet_b0', 'levit_128s', 'efficientformerv2_s0', 'rexnet_100', 'skresnet18', 'resnest14d',
          'ese_vovnet19b_dw', 'mobileone_s0', 'repghostnet_050', 'starnet_s1', 'inception_next_tiny',
          'tiny_vit_5m_224', 'pvt_v2_b0', 'botnet26t_256', 'halonet26t', 'mobilenetv4_conv_small',
          'mobilenetv4_hybrid_medium', 'ghostnet_100', 'ghostnetv2_100', 'gernet_s', 'repvit_m0_9',
          'fbnetv3_b', 'hgnetv2_b0', 'dla34', 'cspresnet50', 'hrnet_w18_small', 'dpn68', 'coatnet_nano_rw_224',
          'maxvit_pico_rw_256']
GROUPNORM = {'resnet50_gn', 'resnetv2_50x1_bit'}

def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    "Non-trivial norm statistics and per-channel scales (layer scales start near 0), so a wrong channel shows."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, t in list(model.named_parameters()) + list(model.named_buffers()):
            last = n.rsplit('.', 1)[-1]
            if not t.is_floating_point() or t.dim() > 1 and last not in ('gamma', 'gain'): continue
            if last == 'running_var': t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif last in ('running_mean', 'bias', 'beta'): t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            else: t.copy_(torch.rand(t.shape, generator=g) * 0.4 + 0.3)
    return model.eval()

def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    "The model with random weights, at the smallest of 64, 96, 128 px that runs (else its default size)."
    torch.manual_seed(0)
    model = randomize(timm.create_model(name, pretrained=False))
    c, *size = model.pretrained_cfg.get('input_size', (3, 224, 224))
    for s in (64, 96, 128):
        try:
            with torch.no_grad(): model(torch.zeros(1, c, s, s))
            return model, torch.randn(2, c, s, s)
        except Exception: pass
    return model, torch.randn(2, c, *size)

def prunes_exactly_or_refuses(model: nn.Module, x: torch.Tensor, name: str) -> list:
    "The check of issue 17; returns the prunable groups (empty: refused, and every group says why)."
    groups = channel_groups(model, x)                      # must not raise
    ok = [g for g in groups if g.prunable]
    assert all(g.reason for g in groups if not g.prunable)
    if not ok: return ok
    drop = random_drop(groups, 0.3, seed=1)
    pruned = remove_channels(model, groups, drop)          # must not raise
    with torch.no_grad(): a, b = pruned(x), mask_channels(model, groups, drop)(x)
    assert (a - b).abs().max() <= 1e-4 * max(1.0, b.abs().max().item()), f'{name}: removal differs from masking'
    return ok

@pytest.mark.slow
@pytest.mark.parametrize('name', MODELS)
def test_timm(name):
    model, x = build(name)
    ok = prunes_exactly_or_refuses(model, x, name)
    if name in GROUPNORM: assert ok, f'{name}: a GroupNorm network must prune: {Counter(g.reason for g in channel_groups(model, x))}'

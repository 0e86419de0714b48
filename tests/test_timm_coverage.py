"""Coverage beyond torchvision (issue 17): a fixed sample of timm's convolutional and hybrid families, random weights,
30% of every prunable group. Each model prunes exactly (removal equals masking) or is refused with a reason; none
crashes inside prunebook, and no pruned model fails at its first forward. Slow (about an hour on 2 cores):
`pytest --runslow tests/test_timm_coverage.py`. The committed table is bench/results/surgery.md (bench/surgery.py)."""
import sys
from collections import Counter
from pathlib import Path
import pytest, torch, torch.nn as nn
from prunebook.graph import channel_groups
from prunebook.surgery import remove_channels, mask_channels, random_drop

timm = pytest.importorskip('timm')
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'bench'))
from surgery import TIMM, timm_model   # the sample and the model builder of the committed table: one definition

GROUPNORM = {'resnet50_gn', 'resnetv2_50x1_bit'}

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
@pytest.mark.parametrize('name', TIMM)
def test_timm(name):
    model, x = timm_model(name)
    ok = prunes_exactly_or_refuses(model, x, name)
    if name in GROUPNORM: assert ok, f'{name}: a GroupNorm network must prune: {Counter(g.reason for g in channel_groups(model, x))}'

"""Benchmark of prunebook.graph + prunebook.surgery against Torch-Pruning 1.6.1.

1. Speed: resnet50 and mobilenet_v2 (torchvision, random weights, 224 px) with 30% and 50% of the channels of every
   prunable group removed (L1), CPU latency ratio pruned/dense at batch 1 and 32 next to the MACs ratio; with kept
   counts rounded to multiples of 8 as an option; and Torch-Pruning with the same channels removed.
2. Time of channel_groups + remove_channels against Torch-Pruning's build_dependency + pruning the same channels.
3. Coverage: the 14 architectures of issue 3, 30% of every group, for both tools (does the pruned model run and
   shrink; for prunebook also: does removal equal masking).
Run: python bench/surgery.py  (about 15 minutes on 2 cores). Writes bench/results/surgery.{json,md}."""
import sys, copy, warnings
from pathlib import Path
import torch, torch.nn as nn, torchvision
import torch_pruning as tp
sys.path.insert(0, str(Path(__file__).parent))
from common import write_results, Timer, latency_pair
from prunebook.core import count_macs, count_params
from prunebook.graph import channel_groups
from prunebook.surgery import remove_channels, mask_channels, choose_channels, l1_scores, random_drop

warnings.filterwarnings('ignore')
torch.manual_seed(0)


def drop_for(groups, amount: float, round_to: int = 1) -> dict:
    return {g: d for g in groups if g.prunable and (d := choose_channels(g, l1_scores(g), amount, round_to))}

def tp_same(model: nn.Module, x: torch.Tensor, drop: dict) -> nn.Module:
    "Torch-Pruning removing exactly `drop`'s channels (each group pruned through its first producer)."
    m = copy.deepcopy(model)
    DG = tp.DependencyGraph().build_dependency(m, example_inputs=x)
    for g, idxs in drop.items():
        name = g.producers[0]
        pos = [g.positions(name)[i][0] for i in idxs]
        group = DG.get_pruning_group(m.get_submodule(name), tp.prune_conv_out_channels, idxs=pos)
        group.prune()
    return m

def speed(name: str, rows: list):
    model = torchvision.models.get_model(name).eval()
    x1, x32 = torch.randn(1, 3, 224, 224), torch.randn(32, 3, 224, 224)
    groups = channel_groups(model, x1)
    macs0 = count_macs(model, x1)
    for amount in (0.3, 0.5):
        for round_to in (1, 8):
            drop = drop_for(groups, amount, round_to)
            ours = remove_channels(model, groups, drop).eval()
            entries = [('prunebook', ours)]
            if round_to == 1: entries.append(('Torch-Pruning, same channels', tp_same(model, x1, drop).eval()))
            for tool, pruned in entries:
                r1 = latency_pair(model, pruned, x1, reps=15)
                r32 = latency_pair(model, pruned, x32, reps=5)
                row = dict(model=name, amount=amount, round_to=round_to, tool=tool,
                           macs_ratio=count_macs(pruned, x1) / macs0, params_ratio=count_params(pruned) / count_params(model),
                           latency_ratio_b1=r1[1] / r1[0], latency_ratio_b32=r32[1] / r32[0],
                           dense_ms_b1=1e3 * r1[0], dense_ms_b32=1e3 * r32[0])
                rows.append(row); print(row, flush=True)

def build_time(name: str, rows: list):
    model = torchvision.models.get_model(name).eval()
    x = torch.randn(1, 3, 224, 224)
    for _ in range(2):   # the second round is reported (the first pays for imports and caches)
        with Timer() as t_ours:
            groups = channel_groups(model, x)
            drop = drop_for(groups, 0.3)
            remove_channels(model, groups, drop)
        m = copy.deepcopy(model)
        with Timer() as t_tp:
            DG = tp.DependencyGraph().build_dependency(m, example_inputs=x)
            for g, idxs in drop.items():
                nm = g.producers[0]
                DG.get_pruning_group(m.get_submodule(nm), tp.prune_conv_out_channels,
                                     idxs=[g.positions(nm)[i][0] for i in idxs]).prune()
    row = dict(model=name, prunebook_s=t_ours.seconds, torch_pruning_s=t_tp.seconds)
    rows.append(row); print(row, flush=True)

ARCHS = ['resnet18', 'resnet50', 'wide_resnet50_2', 'resnext50_32x4d', 'mobilenet_v2', 'mobilenet_v3_small',
         'efficientnet_b0', 'densenet121', 'vgg11_bn', 'googlenet', 'regnet_x_400mf', 'shufflenet_v2_x0_5',
         'squeezenet1_1', 'convnext_tiny']

def coverage(name: str, rows: list):
    kw = dict(aux_logits=False, init_weights=True) if name == 'googlenet' else {}
    model = torchvision.models.get_model(name, **kw).eval()
    x = torch.randn(2, 3, 64, 64)
    row = dict(model=name)
    try:
        groups = channel_groups(model, x)
        drop = random_drop(groups, 0.3)
        p, q = remove_channels(model, groups, drop), mask_channels(model, groups, drop)
        with torch.no_grad(): a, b = p(x), q(x)
        exact = bool((a - b).abs().max() <= 1e-5 * max(1, b.abs().max().item()))
        row.update(prunebook='ok' if exact else 'differs from masking', prunebook_params=count_params(p) / count_params(model),
                   prunebook_groups=f'{sum(g.prunable for g in groups)}/{len(groups)}')
    except Exception as e: row.update(prunebook=f'{type(e).__name__}: {e}'[:120])
    try:
        m = copy.deepcopy(model)
        last = [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1:]
        pruner = tp.pruner.BasePruner(m, x, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=0.3,
                                      ignored_layers=last)
        pruner.step()
        with torch.no_grad(): m(x)
        row.update(torch_pruning='ok', torch_pruning_params=count_params(m) / count_params(model))
    except Exception as e: row.update(torch_pruning=f'{type(e).__name__}: {e}'[:120])
    rows.append(row); print(row, flush=True)

if __name__ == '__main__':
    speed_rows, time_rows, cov_rows = [], [], []
    for n in ARCHS: coverage(n, cov_rows)
    for n in ('resnet50', 'mobilenet_v2', 'densenet121'): build_time(n, time_rows)
    for n in ('resnet50', 'mobilenet_v2'): speed(n, speed_rows)
    md = ['# Channel surgery benchmark', '',
          '## Latency against MACs (torchvision, random weights, 224x224, CPU; ratios pruned/dense measured side by side)', '',
          '| model | channels removed | kept rounded to | tool | MACs ratio | params ratio | latency ratio b1 | latency ratio b32 | dense ms b1 | dense ms b32 |',
          '|---|---|---|---|---|---|---|---|---|---|']
    md += [f"| {r['model']} | {r['amount']:.0%} | {r['round_to']} | {r['tool']} | {r['macs_ratio']:.3f} | {r['params_ratio']:.3f} | "
           f"{r['latency_ratio_b1']:.3f} | {r['latency_ratio_b32']:.3f} | {r['dense_ms_b1']:.1f} | {r['dense_ms_b32']:.0f} |" for r in speed_rows]
    md += ['', '## Time to build the graph and remove 30% of the channels (224x224, seconds)', '',
           '| model | prunebook: channel_groups + remove_channels | Torch-Pruning: build_dependency + prune |', '|---|---|---|']
    md += [f"| {r['model']} | {r['prunebook_s']:.2f} | {r['torch_pruning_s']:.2f} |" for r in time_rows]
    md += ['', '## Coverage (random weights, 64x64, 30% of every prunable group)', '',
           '| model | prunebook | prunable groups | params ratio | Torch-Pruning 1.6.1 | params ratio |', '|---|---|---|---|---|---|']
    md += [f"| {r['model']} | {r['prunebook']} | {r.get('prunebook_groups', '')} | {r.get('prunebook_params', float('nan')):.3f} | "
           f"{r['torch_pruning']} | {r.get('torch_pruning_params', float('nan')):.3f} |" for r in cov_rows]
    write_results('surgery', dict(speed=speed_rows, build_time=time_rows, coverage=cov_rows), '\n'.join(md))

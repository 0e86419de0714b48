"""Benchmark of prunebook.graph + prunebook.surgery against Torch-Pruning 1.6.1.

Parts (`--part`, default all; the parts not run keep their previous results in surgery.json):
- speed: resnet50 and mobilenet_v2 (torchvision, random weights, 224 px) with 30% and 50% of the channels of every
  prunable group removed (L1): CPU latency ratio pruned/dense at batch 1 and 32 next to the MACs ratio, with kept
  counts rounded to multiples of 8 as an option, and Torch-Pruning with the same channels removed.
- time: channel_groups + remove_channels against Torch-Pruning's build_dependency + pruning the same channels.
- coverage: the 14 torchvision architectures of issue 3, 30% of every group, both tools.
- timm: a fixed sample of timm's convolutional and hybrid families (random weights, small inputs), both tools: for
  prunebook exact (removal equals masking) / refused (no prunable group, with the reason) / failed; for Torch-Pruning
  pruned (the pruned model runs and is smaller) / failed.
Run: python bench/surgery.py [--part timm] [--smoke] [--out DIR]  (all parts: about an hour on 2 cores; the coverage
parts resume from DIR/surgery-rows.jsonl if interrupted). Writes DIR/surgery.{json,md}."""
import sys, copy, json, signal, warnings
from collections import Counter
from pathlib import Path
import torch, torch.nn as nn, torchvision
import torch_pruning as tp
sys.path.insert(0, str(Path(__file__).parent))
from common import bench_args, results_dir, write_results, Timer, latency_pair
from prunebook.core import count_macs, count_params
from prunebook.graph import channel_groups
from prunebook.surgery import remove_channels, mask_channels, choose_channels, l1_scores, random_drop

warnings.filterwarnings('ignore')

def drop_for(groups, amount: float, round_to: int = 1) -> dict:
    return {g: d for g in groups if g.prunable and (d := choose_channels(g, l1_scores(g), amount, round_to))}

def tp_same(model: nn.Module, x: torch.Tensor, drop: dict) -> nn.Module:
    "Torch-Pruning removing exactly `drop`'s channels (each group pruned through its first producer)."
    m = copy.deepcopy(model)
    DG = tp.DependencyGraph().build_dependency(m, example_inputs=x)
    for g, idxs in drop.items():
        name = g.producers[0]
        pos = [g.positions(name)[i][0] for i in idxs]
        DG.get_pruning_group(m.get_submodule(name), tp.prune_conv_out_channels, idxs=pos).prune()
    return m

def speed(name: str, size: int, reps: tuple, amounts=(0.3, 0.5), batch: int = 32) -> list:
    model = torchvision.models.get_model(name).eval()
    x1, x32 = torch.randn(1, 3, size, size), torch.randn(batch, 3, size, size)
    groups, macs0, rows = channel_groups(model, x1), count_macs(model, x1), []
    for amount in amounts:
        for round_to in (1, 8):
            drop = drop_for(groups, amount, round_to)
            entries = [('prunebook', remove_channels(model, groups, drop).eval())]
            if round_to == 1: entries.append(('Torch-Pruning, same channels', tp_same(model, x1, drop).eval()))
            for tool, pruned in entries:
                r1, r32 = latency_pair(model, pruned, x1, reps=reps[0]), latency_pair(model, pruned, x32, reps=reps[1])
                rows.append(dict(model=name, amount=amount, round_to=round_to, tool=tool,
                                 macs_ratio=count_macs(pruned, x1) / macs0, params_ratio=count_params(pruned) / count_params(model),
                                 latency_ratio_b1=r1[1] / r1[0], latency_ratio_b32=r32[1] / r32[0],
                                 dense_ms_b1=1e3 * r1[0], dense_ms_b32=1e3 * r32[0]))
                print(rows[-1], flush=True)
    return rows

def build_time(name: str, size: int) -> list:
    model = torchvision.models.get_model(name).eval()
    x = torch.randn(1, 3, size, size)
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
    print(row, flush=True)
    return [row]

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

def check_prunebook(model: nn.Module, x: torch.Tensor) -> dict:
    "30% of every prunable group at random: exact (removal equals masking), refused (with the reason) or failed."
    try: groups = channel_groups(model, x)
    except Exception as e: return dict(prunebook=f'failed: channel_groups: {type(e).__name__}: {e}'[:160])
    ok = [g for g in groups if g.prunable]
    if not ok:
        why = Counter(w for _, w in groups[0].graph.blocked if w not in ('network input', 'network output')).most_common(1)
        return dict(prunebook=f'refused: {why[0][0] if why else groups[0].reason}'[:160], prunebook_groups=f'0/{len(groups)}')
    drop = random_drop(groups, 0.3, seed=1)
    try: pruned = remove_channels(model, groups, drop)
    except Exception as e: return dict(prunebook=f'failed: remove_channels: {type(e).__name__}: {e}'[:160])
    with torch.no_grad():
        try: a = pruned(x)
        except Exception as e: return dict(prunebook=f'failed: pruned model: {type(e).__name__}: {e}'[:160])
        b = mask_channels(model, groups, drop)(x)
    err = ((a - b).abs().max() / b.abs().max().clamp(min=1)).item()
    return dict(prunebook='exact' if err <= 1e-4 else f'failed: differs from masking ({err:.1e})', prunebook_err=err,
                prunebook_groups=f'{len(ok)}/{len(groups)}', prunebook_params=count_params(pruned) / count_params(model))

TP_LIMIT = 300   # seconds of wall time Torch-Pruning gets per model (it loops without end on some, e.g. efficientvit_m0)

def _time_out(signum, frame): raise TimeoutError(f'no result after {TP_LIMIT} s')

def check_tp(model: nn.Module, x: torch.Tensor) -> dict:
    "Torch-Pruning 1.6.1 removing 30% (L2 group magnitude, the last linear layer kept): pruned (runs, smaller) or failed."
    old = signal.signal(signal.SIGALRM, _time_out)
    signal.alarm(TP_LIMIT)
    try:
        m = copy.deepcopy(model)
        last = [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1:]
        tp.pruner.BasePruner(m, x, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=0.3,
                             ignored_layers=last).step()
    except Exception as e: return dict(torch_pruning=f'failed: {type(e).__name__}: {e}'[:160])
    finally: signal.alarm(0); signal.signal(signal.SIGALRM, old)
    try:
        with torch.no_grad(): m(x)
    except Exception as e: return dict(torch_pruning=f'failed: pruned model: {type(e).__name__}: {e}'[:160])
    ratio = count_params(m) / count_params(model)
    return dict(torch_pruning='pruned' if ratio < 1 else 'refused: nothing pruned', torch_pruning_params=ratio)

TORCHVISION = ['resnet18', 'resnet50', 'wide_resnet50_2', 'resnext50_32x4d', 'mobilenet_v2', 'mobilenet_v3_small',
               'efficientnet_b0', 'densenet121', 'vgg11_bn', 'googlenet', 'regnet_x_400mf', 'shufflenet_v2_x0_5',
               'squeezenet1_1', 'convnext_tiny']
TIMM = ['resnet50_gn', 'resnetv2_50x1_bit', 'nf_resnet26', 'convnext_atto', 'convnextv2_atto',
        'mobilevitv2_050', 'edgenext_xx_small', 'tinynet_e', 'mobilenetv3_small_050', 'regnety_002',
        'fastvit_t8', 'repvgg_a0', 'poolformerv2_s12', 'lcnet_050', 'efficientvit_m0', 'efficientvit_b0',
        'efficientnet_b0', 'levit_128s', 'efficientformerv2_s0', 'rexnet_100', 'skresnet18', 'resnest14d',
        'ese_vovnet19b_dw', 'mobileone_s0', 'repghostnet_050', 'starnet_s1', 'inception_next_tiny',
        'tiny_vit_5m_224', 'pvt_v2_b0', 'botnet26t_256', 'halonet26t', 'mobilenetv4_conv_small',
        'mobilenetv4_hybrid_medium', 'ghostnet_100', 'ghostnetv2_100', 'gernet_s', 'repvit_m0_9',
        'fbnetv3_b', 'hgnetv2_b0', 'dla34', 'cspresnet50', 'hrnet_w18_small', 'dpn68', 'coatnet_nano_rw_224',
        'maxvit_pico_rw_256']

def timm_model(name: str) -> tuple[nn.Module, torch.Tensor]:
    "A timm model with random weights and its smallest input among 64, 96, 128 px that runs (else its default size)."
    import timm
    torch.manual_seed(0)
    model = randomize(timm.create_model(name, pretrained=False))
    c, *size = model.pretrained_cfg.get('input_size', (3, 224, 224))
    for s in (64, 96, 128):
        try:
            with torch.no_grad(): model(torch.zeros(1, c, s, s))
            return model, torch.randn(2, c, s, s)
        except Exception: pass
    return model, torch.randn(2, c, *size)

def torchvision_model(name: str) -> tuple[nn.Module, torch.Tensor]:
    kw = dict(aux_logits=False, init_weights=True) if name == 'googlenet' else {}
    torch.manual_seed(0)
    return randomize(torchvision.models.get_model(name, **kw)), torch.randn(2, 3, 64, 64)

def coverage(part: str, names: list, build, rows_file: Path) -> list:
    "Both tools on each model; rows already in `rows_file` (an interrupted run) are kept, new ones appended."
    done = {(r['part'], r['model']): r for r in map(json.loads, rows_file.read_text().splitlines())} if rows_file.exists() else {}
    rows = []
    for name in names:
        if (part, name) not in done:
            try: model, x = build(name)
            except Exception as e: row = dict(prunebook=f'failed: build: {e}'[:160], torch_pruning='')
            else: row = dict(input=f'{x.shape[-1]}px', **check_prunebook(model, x), **check_tp(model, x))
            done[(part, name)] = row = dict(part=part, model=name, **row)
            with rows_file.open('a') as f: f.write(json.dumps(row) + '\n')
            print(row, flush=True)
        rows.append(done[(part, name)])
    return rows

def tally(rows: list, key: str) -> str:
    c = Counter(r.get(key, '').split(':')[0] for r in rows)
    return ', '.join(f'{k} {v}' for k, v in sorted(c.items()) if k)

def markdown(data: dict) -> str:
    md = ['# Channel surgery benchmark', '']
    if data.get('speed'):
        md += ['## Latency against MACs (torchvision, random weights, 224x224, CPU; ratios pruned/dense measured side by side)', '',
               '| model | channels removed | kept rounded to | tool | MACs ratio | params ratio | latency ratio b1 | latency ratio b32 | dense ms b1 | dense ms b32 |',
               '|---|---|---|---|---|---|---|---|---|---|']
        md += [f"| {r['model']} | {r['amount']:.0%} | {r['round_to']} | {r['tool']} | {r['macs_ratio']:.3f} | {r['params_ratio']:.3f} | "
               f"{r['latency_ratio_b1']:.3f} | {r['latency_ratio_b32']:.3f} | {r['dense_ms_b1']:.1f} | {r['dense_ms_b32']:.0f} |" for r in data['speed']]
    if data.get('build_time'):
        md += ['', '## Time to build the graph and remove 30% of the channels (224x224, seconds)', '',
               '| model | prunebook: channel_groups + remove_channels | Torch-Pruning: build_dependency + prune |', '|---|---|---|']
        md += [f"| {r['model']} | {r['prunebook_s']:.2f} | {r['torch_pruning_s']:.2f} |" for r in data['build_time']]
    for key, title in (('coverage', 'Coverage: torchvision (random weights, 64x64, 30% of every prunable group)'),
                       ('timm', 'Coverage beyond torchvision: timm 1.0.31 (random weights, smallest of 64/96/128 px that runs, '
                                '30% of every prunable group)')):
        rows = data.get(key) or []
        if not rows: continue
        md += ['', f'## {title}', '', f"prunebook: {tally(rows, 'prunebook')}. Torch-Pruning 1.6.1: {tally(rows, 'torch_pruning')}."
               + (f" {data[key + '_note']}" if data.get(key + '_note') else ''),
               '', '| model | input | prunebook | prunable groups | params ratio | Torch-Pruning 1.6.1 | params ratio |',
               '|---|---|---|---|---|---|---|']
        md += [f"| {r['model']} | {r.get('input', '')} | {r['prunebook']} | {r.get('prunebook_groups', '')} | "
               f"{r.get('prunebook_params', float('nan')):.3f} | {r.get('torch_pruning', '')} | "
               f"{r.get('torch_pruning_params', float('nan')):.3f} |" for r in rows]
    return '\n'.join(md)

if __name__ == '__main__':
    p = bench_args(__doc__)
    p.add_argument('--part', choices=['all', 'speed', 'time', 'coverage', 'timm'], default='all')
    args = p.parse_args()
    out = results_dir(args)
    old = out / 'surgery.json'
    data = {k: v for k, v in json.loads(old.read_text()).items() if k in ('speed', 'build_time', 'coverage', 'timm')} if old.exists() else {}
    run = lambda part: args.part in ('all', part)
    rows_file = out / 'surgery-rows.jsonl'
    if run('coverage'): data['coverage'] = coverage('torchvision', TORCHVISION[:1] if args.smoke else TORCHVISION, torchvision_model, rows_file)
    if run('timm'): data['timm'] = coverage('timm', ['test_resnet'] if args.smoke else TIMM, timm_model, rows_file)
    if run('time'): data['build_time'] = [r for n in (['resnet18'] if args.smoke else ['resnet50', 'mobilenet_v2', 'densenet121'])
                                          for r in build_time(n, 64 if args.smoke else 224)]
    if run('speed'): data['speed'] = [r for n in (['resnet18'] if args.smoke else ['resnet50', 'mobilenet_v2'])
                                      for r in (speed(n, 32, (2, 1), (0.3,), 4) if args.smoke else speed(n, 224, (15, 5)))]
    write_results('surgery', data, markdown(data), out=out)
    rows_file.unlink(missing_ok=True)
    print(f'wrote {out}/surgery.md')

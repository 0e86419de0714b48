"""Benchmark of DFPC (prunebook.dfpc): data-free pruning of coupled channels, no fine-tuning.

1. ResNet-56 (`load_cifar_resnet(56)`, the published checkpoint) on CIFAR-10: test accuracy, MACs and measured CPU speedup (batch 1
   and 64, pruned and unpruned timed alternately) at equal MACs for DFPC, DFPC without coupled channels, grouped L1,
   random, and Torch-Pruning 1.6.1's group-magnitude pruner (only the blocks' first convolutions: Torch-Pruning
   mis-prunes the option-A shortcuts, see bench/common.residual_safe_ignored).
2. The operating point at a 5-point accuracy drop for each method, chosen on the validation split (5,000 training
   images the checkpoint was trained on, CIFAR-10 having no other labelled images) by bisection over 1%-of-channels steps (Torch-Pruning: over its ratio), then
   reported on the test split.
3. Saliency time of torchvision ResNet-101 (CIFAR stem, random weights, 32x32) against the unrolled-matrix
   reference (sparse, timed on a sample of channels of one group per layer shape and extrapolated), and the
   pairs the official string rule gets wrong; ResNet-50 and MobileNet-V2 saliency times.
Run: flock /tmp/prunebook-cpu.lock python bench/dfpc.py   (about 30 minutes on 2 cores; resumable: partial results
are kept in $PRUNEBOOK_CACHE/bench/dfpc_partial.json, `--fresh` ignores them). Writes bench/results/dfpc.{json,md}."""
import sys, json, time, statistics, warnings
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).parent))
from common import bench_args, results_dir, write_results, Timer, tp_prune, residual_safe_ignored, latency_pair
from prunebook.core import bisect, count_macs, count_params, evaluate
from prunebook.data import cifar10, cache_dir, synthetic
from prunebook.models import load_cifar_resnet, cifar_resnet, cifar_stem_resnet, cifar_mobilenet_v2
from prunebook.graph import channel_groups
from prunebook.dfpc import dfpc_saliency, dfpc_prune, dfpc_scores, dataflow_pairs, lexicographic_pairs, is_coupled
from prunebook.dfpc_reference import unrolled_saliency

p = bench_args(__doc__)
p.add_argument('--fresh', action='store_true', help='ignore the partial results of an earlier run')
p.add_argument('--levels', nargs='+', type=float, default=[0.95, 0.9, 0.85, 0.8, 0.7, 0.6], help='fractions of the MACs kept in the sweep')
args = p.parse_args()
SMOKE = args.smoke          # ResNet-8 (random weights) on 40 synthetic images, small models timed: the same code path in seconds
OUT = results_dir(args)
warnings.filterwarnings('ignore')
torch.manual_seed(0)
LEVELS = [0.8] if SMOKE else args.levels                         # fraction of the MACs kept
REPS = (2, 1) if SMOKE else (40, 6)                               # latency runs at batch 1 and 64
BIG_BATCH = 4 if SMOKE else 64                                    # the 'b64' batch (smoke: 4, a check, not a result)
MATCH_TOL = 0.05 if SMOKE else 0.005                              # Torch-Pruning's MACs matched to this fraction
STEP = 33 if SMOKE else 1                                         # % of the channels per step of the operating-point search
METHODS = {'DFPC': ('dfpc', True, 'paper'), 'DFPC, no coupled channels': ('dfpc', False, 'paper'),
           'DFPC normalized': ('dfpc', True, 'normalized'), 'DFPC normalized, no coupled channels': ('dfpc', False, 'normalized'),
           'grouped L1': ('l1', True, 'paper'), 'random': ('random', True, 'paper')}   # name -> (score, prune_coupled, allocation)
TP = 'Torch-Pruning group magnitude (first convs only)'
# DFPC's data-free CIFAR-10 row, as CoBRA and ModHiFi report it (the authors' ResNet-50 checkpoint; not confirmed as a row of the DFPC paper)
PAPER = {'network': 'ResNet-50 (bottleneck, the authors\' checkpoint)', 'base': 94.99, 'pruned': 90.25, 'flops_reduction': 1.46,
         'params_reduction': 2.07}
# part 3: the models timed, the one the reference and the string rule are measured on, and the input size
TIMED = ({'ResNet-8': lambda: cifar_resnet(8), 'MobileNet-V2 (x0.25)': lambda: cifar_mobilenet_v2(width_mult=0.25)} if SMOKE else
         {'ResNet-50': lambda: cifar_stem_resnet(50), 'ResNet-101': lambda: cifar_stem_resnet(101), 'MobileNet-V2': cifar_mobilenet_v2})
BIG, SIZE = ('ResNet-8', 8) if SMOKE else ('ResNet-101', 32)
PARTIAL = OUT / 'dfpc_partial.json' if SMOKE else cache_dir() / 'bench' / 'dfpc_partial.json'
state = {} if args.fresh or not PARTIAL.exists() else json.loads(PARTIAL.read_text())

def remember(key: str, fn):
    "The value stored under `key`, computing (and saving) it if absent: the run can resume after an interruption."
    if key not in state:
        state[key] = fn()
        PARTIAL.parent.mkdir(parents=True, exist_ok=True)
        PARTIAL.write_text(json.dumps(state, indent=1))
        print(key, '->', state[key], flush=True)
    return state[key]

def batches(ds, bs=500):
    xs, ys = zip(*[ds[i] for i in range(len(ds))])
    x, y = torch.stack(xs), torch.tensor(ys)
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)]

def splits():
    "(test, held-out) batches: CIFAR-10 test and val, or 20 synthetic images each for the smoke run."
    if SMOKE: return batches(synthetic('test', 2)), batches(synthetic('train', 2))
    return batches(cifar10('test')), batches(cifar10('val'))

def speedups(base, pruned):
    a1, b1 = latency_pair(base, pruned, torch.randn(1, 3, 32, 32), REPS[0])
    a64, b64 = latency_pair(base, pruned, torch.randn(BIG_BATCH, 3, 32, 32), REPS[1])
    return {'speedup_b1': a1 / b1, 'speedup_b64': a64 / b64, 'base_ms_b1': 1e3 * a1, 'base_ms_b64': 1e3 * a64}

def resnet56_part():
    base = (cifar_resnet(8) if SMOKE else load_cifar_resnet(56)).eval()
    x = torch.randn(1, 3, 32, 32)
    test, held = splits()
    acc0 = remember('base/test', lambda: evaluate(base, test))
    held0 = remember('base/held', lambda: evaluate(base, held))
    macs0, params0 = count_macs(base, x), count_params(base)
    groups = channel_groups(base, x)
    with Timer() as t: scores = {'dfpc': dfpc_scores(base, x, groups, 'dfpc')}
    remember('resnet56/saliency_s', lambda: t.seconds)
    scores.update(l1=dfpc_scores(base, x, groups, 'l1'), random=dfpc_scores(base, x, groups, 'random', seed=0))
    rows = []
    def row(method, level, model, extra=None):
        key = f'sweep/{method}/{level}'
        r = remember(key, lambda: {'method': method, 'level': level, 'macs': count_macs(model, x) / macs0,
                                   'params': count_params(model) / params0, 'test_acc': evaluate(model, test),
                                   **speedups(base, model), **(extra or {})})
        rows.append(r)
    for level in LEVELS:
        for method, (score, coupled, alloc) in METHODS.items():
            if f'sweep/{method}/{level}' in state: rows.append(state[f'sweep/{method}/{level}']); continue
            p = dfpc_prune(base, x, level, 'macs', score=scores[score], prune_coupled=coupled, allocation=alloc)
            row(method, level, p, {k: p.dfpc_info[k] for k in ('removed', 'removed_coupled')})
        if f'sweep/{TP}/{level}' in state: rows.append(state[f'sweep/{TP}/{level}']); continue
        ignored = residual_safe_ignored(base)
        ratio, p = bisect(lambda r: tp_prune(base, x, r, ignored=ignored), level * macs0, hi=0.99, tol=MATCH_TOL, key=lambda m: count_macs(m, x))
        row(TP, level, p, {'tp_ratio': ratio})
    # operating point at a 5-point drop, chosen on the held-out split
    ops = []
    for method, (score, coupled, alloc) in list(METHODS.items()) + [(TP, (None, None, None))]:
        def held_acc(step):
            key = f'op/{method}/held/{step}'
            if key in state: return state[key]
            return remember(key, lambda: evaluate(build(step), held))
        def build(step):
            if method == TP: return tp_prune(base, x, step / 100, ignored=residual_safe_ignored(base))
            return dfpc_prune(base, x, 1 - step / 100, 'channels', score=scores[score], prune_coupled=coupled, allocation=alloc)
        lo, hi = 0, 99 // STEP * STEP               # largest step (STEP% of channels each) with held-out drop <= 5 points
        while lo < hi:
            mid = (lo + hi + STEP) // (2 * STEP) * STEP
            if held0 - held_acc(mid) <= 0.05: lo = mid
            else: hi = mid - STEP
        def point():
            p = build(lo)
            return {'method': method, 'step_percent': lo, 'held_acc': held_acc(lo) if lo else held0,
                    'held_acc_next_step': held_acc(min(lo + STEP, 99 // STEP * STEP)), 'test_acc': evaluate(p, test), 'macs': count_macs(p, x) / macs0,
                    'params': count_params(p) / params0, 'removed_coupled': getattr(p, 'dfpc_info', {}).get('removed_coupled'),
                    **speedups(base, p)}
        ops.append(remember(f'op/{method}/point', point))
    return {'base': {'test_acc': acc0, 'held_acc': held0, 'macs': macs0, 'params': params0,
                     'saliency_s': state['resnet56/saliency_s']}, 'sweep': rows, 'operating_points': ops}

def saliency_times(model, x, reps=1 if SMOKE else 3):
    t_groups, t_sal = [], []
    for _ in range(reps):
        with Timer() as a: gs = channel_groups(model, x)
        with Timer() as b: dfpc_saliency(model, x, gs)
        t_groups.append(a.seconds); t_sal.append(b.seconds)
    return {'first_groups_s': t_groups[0], 'first_saliency_s': t_sal[0], 'median_groups_s': statistics.median(t_groups),
            'median_saliency_s': statistics.median(t_sal), 'median_total_s': statistics.median(map(sum, zip(t_groups, t_sal)))}

def reference_estimate(model, x, gs):
    """Unrolled-matrix reference for all groups, estimated: for one group of each class of identical layer shapes, time
    building its matrices and the products for one channel; extrapolate to all its channels and to the similar groups."""
    graph = gs[0].graph
    nodes = {n.target: n for n in graph.gm.graph.nodes if n.op == 'call_module'}
    key = lambda name: (tuple(graph.modules[name].weight.shape), tuple(graph.ids[nodes[name].all_input_nodes[0]].shape))
    sig = lambda g: (len(g), tuple(sorted(key(a) for a in g.producers)), tuple(sorted(key(b) for b in g.consumers)),
                     len(dataflow_pairs(g)))
    classes = {}
    for g in gs:
        if g.prunable: classes.setdefault(sig(g), []).append(g)
    total, samples = 0.0, []
    for members in classes.values():
        g, t = members[0], {}
        unrolled_saliency(model, x, gs, channels={g: [0]}, timings=t)
        est = len(members) * (t['build_s'] + len(g) * t['products_s'])
        total += est
        samples.append({'group': g.idx, 'similar_groups': len(members), 'channels': len(g), 'pairs': len(dataflow_pairs(g)),
                        'build_s': t['build_s'], 'one_channel_products_s': t['products_s'], 'estimate_s': est})
        print(samples[-1], flush=True)
    return total, samples

def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    "Spearman's rank correlation of two score vectors (no ties among float saliencies)."
    ra, rb = (t.argsort().argsort().double() for t in (a, b))
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])

def timing_part():
    out = {}
    for name, build in TIMED.items():
        model, x = build().eval(), torch.randn(1, 3, SIZE, SIZE)
        out[name] = remember(f'time/{name}', lambda: {**saliency_times(model, x), 'macs': count_macs(model, x),
                                                      'params': count_params(model)})
    model, x = TIMED[BIG]().eval(), torch.randn(1, 3, SIZE, SIZE)
    gs = channel_groups(model, x)
    def ref():
        est, samples = reference_estimate(model, x, gs)
        return {'estimate_s': est, 'samples': samples}
    out['reference'] = remember(f'time/{BIG} reference', ref)
    def pairs():
        res = []
        for g in gs:
            if not (g.prunable and is_coupled(g)): continue
            true, lex = set(dataflow_pairs(g)), set(lexicographic_pairs(g))
            res.append({'group': g.idx, 'producers': len(g.producers), 'consumers': len(g.consumers), 'channels': len(g),
                        'all_pairs': len(g.producers) * len(g.consumers), 'dataflow_pairs': len(true),
                        'spurious': len(lex - true), 'missed': len(true - lex)})
        s_true = dfpc_saliency(model, x, gs)
        s_lex = dfpc_saliency(model, x, gs, pairs='lexicographic')
        g3 = max((g for g in gs if g.prunable), key=lambda g: len(g.producers))
        n = len(g3) // 10
        low_t, low_l = set(s_true[g3].argsort()[:n].tolist()), set(s_lex[g3].argsort()[:n].tolist())
        return {'groups': res, 'stage3_group': g3.idx, 'stage3_spearman': spearman(s_true[g3], s_lex[g3]),
                'stage3_lowest10pct_overlap': len(low_t & low_l) / n}
    out['pairs'] = remember(f'pairs/{BIG}', pairs)
    return out

def paper_beside(r56) -> list[str]:
    "The paper's data-free CIFAR-10 row beside our operating points on ResNet-56, as markdown lines."
    b, P = r56['base'], PAPER
    md = ['', '## The paper beside us', '',
          f"DFPC's data-free CIFAR-10 result, as later papers by its group (CoBRA, ModHiFi) report it: {P['network']}, "
          f"{P['base']:.2f}% -> {P['pruned']:.2f}% (drop {P['base'] - P['pruned']:.2f} points) at {P['flops_reduction']:.2f}x fewer "
          f"FLOPs and {P['params_reduction']:.2f}x fewer parameters, no fine-tuning. The authors' CIFAR ResNet-50/101 checkpoints "
          '(Google Drive) cannot be reached from here, and training one takes a GPU, which this project was not lent: the '
          "network differs. Ours: the published ResNet-56 (basic blocks, option-A shortcuts), the operating point at a "
          "5-point drop above (the official code keeps the last step within its threshold of the unpruned **test** accuracy; "
          "we choose on the validation split and report on the test split).", '',
          '| network | method | base acc | pruned acc | drop (points) | FLOPs (MACs) reduction | params reduction |',
          '|---|---|---|---|---|---|---|',
          f"| {P['network']} | DFPC (paper) | {P['base']:.2f}% | {P['pruned']:.2f}% | {P['base'] - P['pruned']:.2f} | "
          f"{P['flops_reduction']:.2f}x | {P['params_reduction']:.2f}x |"]
    for r in r56['operating_points']:
        md.append(f"| ResNet-56 (ours) | {r['method']} | {b['test_acc']:.2%} | {r['test_acc']:.2%} | "
                  f"{100 * (b['test_acc'] - r['test_acc']):.2f} | {1 / r['macs']:.2f}x | {1 / r['params']:.2f}x |")
    return md

def markdown(r56, r101):
    b = r56['base']
    md = ['# DFPC benchmark', '',
          'Data-free, **no fine-tuning**. Base model: `load_cifar_resnet(56)` (akamaster\'s published ResNet-56): '
          f"**{b['test_acc']:.2%}** on the CIFAR-10 test split (10,000 images), {b['held_acc']:.2%} on the "
          f"validation split (5,000 images), {b['macs'] / 1e6:.1f}M MACs, {b['params'] / 1e6:.3f}M parameters. "
          f"DFPC saliency of ResNet-56: {b['saliency_s']:.2f} s.", '',
          '## Accuracy and measured CPU speedup at equal MACs (CIFAR-10 test)', '',
          'Speedup = unpruned / pruned median latency, timed alternately in the same run (batch 1: 40 runs; batch 64: 6 runs). '
          'Torch-Pruning 1.6.1 mis-prunes the option-A shortcuts of these ResNets (its pruned model crashes), so it '
          'only prunes the blocks\' first convolutions (internal channels), at a uniform ratio matched to the MACs.', '',
          '| MACs kept (target) | method | MACs kept | params kept | test acc | drop (points) | speedup b1 | speedup b64 | channels removed (coupled) |',
          '|---|---|---|---|---|---|---|---|---|']
    for r in r56['sweep']:
        rem = f"{r['removed']} ({r['removed_coupled']})" if 'removed' in r else f"ratio {r['tp_ratio']:.3f}"
        md.append(f"| {r['level']:.2f} | {r['method']} | {r['macs']:.3f} | {r['params']:.3f} | {r['test_acc']:.2%} | "
                  f"{100 * (b['test_acc'] - r['test_acc']):.2f} | {r['speedup_b1']:.2f}x | {r['speedup_b64']:.2f}x | {rem} |")
    md += ['', '## Operating point at a 5-point drop (chosen on the held-out split, reported on the test split)', '',
           f'Bisection over steps of {STEP}% of the prunable channels (Torch-Pruning: {STEP}% of its ratio) for the largest step whose '
           'held-out accuracy is within 5 points of the unpruned model\'s (assumes accuracy falls with the step).', '',
           '| method | step (% channels) | held-out acc | held-out acc, next step | test acc | test drop (points) | MACs kept | MACs reduction | speedup b1 | speedup b64 | coupled channels removed |',
           '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in r56['operating_points']:
        md.append(f"| {r['method']} | {r['step_percent']} | {r['held_acc']:.2%} | {r['held_acc_next_step']:.2%} | {r['test_acc']:.2%} | "
                  f"{100 * (b['test_acc'] - r['test_acc']):.2f} | {r['macs']:.3f} | {1 / r['macs']:.2f}x | {r['speedup_b1']:.2f}x | {r['speedup_b64']:.2f}x | "
                  f"{r.get('removed_coupled') if r.get('removed_coupled') is not None else '-'} |")
    md += paper_beside(r56)
    md += ['', f'## Saliency time (random weights, {SIZE}x{SIZE} input, CPU)', '',
           '| model | MACs | channel_groups (s, median of 3) | dfpc_saliency (s, median) | total (s, median) | total, first call (s) |',
           '|---|---|---|---|---|---|']
    for name in TIMED:
        t = r101[name]
        md.append(f"| {name} | {t['macs'] / 1e9:.2f}G | {t['median_groups_s']:.2f} | {t['median_saliency_s']:.2f} | "
                  f"{t['median_total_s']:.2f} | {t['first_groups_s'] + t['first_saliency_s']:.2f} |")
    ref = r101['reference']
    md += ['', f"Unrolled-matrix reference (scipy.sparse, the official code's computation) for {BIG}: estimated "
           f"**{ref['estimate_s'] / 3600:.1f} hours** ({ref['estimate_s']:.0f} s), extrapolated from one channel of one "
           f"group of each of {len(ref['samples'])} classes of identically shaped groups (matrix building and the products for one channel timed separately), "
           f"against {r101[BIG]['median_total_s']:.1f} s for dfpc_saliency with tracing. Both agree to float precision "
           'wherever the reference was run (tests/test_dfpc.py).', '',
           f'## Official string rule for "downstream" on {BIG}', '',
           '| group | producers | consumers | channels | all pairs | data-flow pairs | spurious (string rule) | missed (string rule) |',
           '|---|---|---|---|---|---|---|---|']
    for g in r101['pairs']['groups']:
        md.append(f"| {g['group']} | {g['producers']} | {g['consumers']} | {g['channels']} | {g['all_pairs']} | {g['dataflow_pairs']} | "
                  f"{g['spurious']} | {g['missed']} |")
    p = r101['pairs']
    md += ['', f"Stage-3 stream group: Spearman correlation of the saliencies with the string rule vs the data flow "
           f"{p['stage3_spearman']:.3f}; overlap of their lowest 10% channels {p['stage3_lowest10pct_overlap']:.0%}."]
    return '\n'.join(md)

if __name__ == '__main__':
    t0 = time.time()
    r56 = resnet56_part()
    r101 = timing_part()
    write_results('dfpc', {'resnet56': r56, 'timing': r101, 'levels': LEVELS, 'smoke': SMOKE,
                           'note': 'CIFAR-10; data-free, no fine-tuning; accuracy reported for ResNet-56 only '
                                   '(no GPU: ResNet-50/101 and MobileNet-V2 are untrained, used for timing and exactness; '
                                   "the authors' checkpoints cannot be reached)", 'paper': PAPER},
                  markdown(r56, r101), out=OUT)
    print(f'done in {time.time() - t0:.0f} s; results in {OUT}')

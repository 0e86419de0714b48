"""Reproduction benchmark of TVSPrune / IterTVSPrune (prunebook.tvs), no fine-tuning anywhere.

Models: ResNet-20 and ResNet-56 adapted to CIFAR-10 (JPEG-75) (`adapted_cifar_resnet`), and VGG-16-BN trained here on
CPU (bench/tvs_vgg16.py). Statistics: 100 images per class from the training part (8,000 images) of
`holdout_split(cifar10('train', variant='jpeg75'))`; IterTVSPrune's held-out accuracy: its 2,000-image held-out part;
all reported accuracies: the 10,000-image test split of CIFAR-10 (JPEG-75).
At every parameter sparsity (ResNet-56: 3.5/7.6/12.3%, ResNet-20: 2.4/4.8/7.1%, both + 20/40/60%; VGG-16: 20/40/60%):
TVSPrune one-shot with each score, IterTVSPrune (hellinger_diag, statistics re-collected at every step, one run through
all sparsities), L1-norm filter pruning and random pruning (uniform fraction per group, matched by bisection to the same
parameter count), and Torch-Pruning 1.6.1's magnitude pruner (ratio matched by bisection to the same parameter count).
ResNets: every method prunes only the blocks' inner channels (the groups with one producer, i.e. the blocks' first
convolutions): Torch-Pruning cannot prune more on these option-A ResNets (`residual_safe_ignored`), and the residual
streams are kept whole by TVSPrune too (`groups='single'`). VGG: all convolutions; the classifier is left alone by all.
Also: statistics time of one streaming pass vs the official per-sample, per-layer loop on 256 images.
Run: flock /tmp/prunebook-cpu.lock python bench/tvs.py   (resumable: partial results in bench/results/tvs.partial.json)."""
import sys, json, time, copy, warnings
from pathlib import Path
import torch, torch.nn as nn
sys.path.insert(0, str(Path(__file__).parent))
from common import write_results, Timer, tp_prune, residual_safe_ignored, RESULTS
from tvs_vgg16 import load_vgg16
from prunebook.core import count_params, count_macs, evaluate
from prunebook.data import cifar10, holdout_split, per_class_subset, dataloader
from prunebook.models import adapted_cifar_resnet
from prunebook.graph import channel_groups
from prunebook.surgery import remove_channels, choose_channels, l1_scores
from prunebook.tvs import (collect_stats, group_scores, plan_sparsity, select_groups, feature_module, params_after,
                           itertvsprune, per_sample_stats, SCORES, _n_classes)

warnings.filterwarnings('ignore')
N_PER_CLASS = 100
PAPER = {'resnet56': {0.035: -1.47, 0.076: -4.82, 0.123: -9.86}, 'resnet20': {0.024: -1.40, 0.048: -4.70, 0.071: -9.41}}
SPARSITIES = {'resnet20': [0.024, 0.048, 0.071, 0.2, 0.4, 0.6], 'resnet56': [0.035, 0.076, 0.123, 0.2, 0.4, 0.6],
              'vgg16': [0.2, 0.4, 0.6]}
PARTIAL = RESULTS / 'tvs.partial.json'

def tensors(ds):
    xs, ys = zip(*[(x, y) for x, y in dataloader(ds, 1000)])
    return torch.cat(xs), torch.cat(ys)

def acc(model, X, Y): return evaluate(model, list(zip(X.split(500), Y.split(500))), 'cpu')

def uniform_matched(model, groups, chosen, target_params, score):
    "Uniform fraction of every chosen group by `score` ('l1' or 'random'), fraction bisected to `target_params`."
    gen_scores = {g: (l1_scores(g) if score == 'l1' else torch.rand(len(g), generator=torch.Generator().manual_seed(g.idx)))
                  for g in chosen}
    drop_for = lambda a: {g: d for g in chosen if (d := choose_channels(g, gen_scores[g], a))}
    lo, hi, best = 0.0, 0.95, None
    for _ in range(30):
        mid = (lo + hi) / 2
        p = params_after(groups, drop_for(mid))
        if best is None or abs(p - target_params) < abs(best[1] - target_params): best = (mid, p)
        lo, hi = (mid, hi) if p > target_params else (lo, mid)
    return remove_channels(model, groups, drop_for(best[0])), best[0]

def tp_matched(model, x, target_params, ignored):
    lo, hi, best = 0.0, 0.95, None
    for _ in range(14):
        mid = (lo + hi) / 2
        m = tp_prune(model, x, mid, ignored=ignored)
        p = count_params(m)
        if best is None or abs(p - target_params) < abs(best[1] - target_params): best = (mid, p, m)
        if abs(p - target_params) < 0.002 * target_params: break
        lo, hi = (mid, hi) if p > target_params else (lo, mid)
    return best[2], best[0]

def speed(model, fit, names, n=256, n_slow=8):
    "Seconds for the statistics of `n` images: one streaming pass, and the official loop (timed on `n_slow`, extrapolated)."
    X, Y = tensors(per_class_subset(fit, n // 10 + 1))
    X, Y = X[:n], Y[:n]
    collect_stats(model, (X[:32], Y[:32]), names, 10, device='cpu')            # warm-up
    with Timer() as t_fast: collect_stats(model, (X, Y), names, 10, device='cpu')
    per_sample_stats(model, X[:2], Y[:2], names[:2], 10, 'cpu')               # warm-up
    with Timer() as t_slow: per_sample_stats(model, X[:n_slow], Y[:n_slow], names, 10, 'cpu')
    return dict(images=n, layers=len(names), one_pass_s=t_fast.seconds, official_loop_s_measured=t_slow.seconds,
                official_loop_samples_timed=n_slow, official_loop_s_extrapolated=t_slow.seconds * n / n_slow,
                speedup=t_slow.seconds * n / n_slow / t_fast.seconds)

def run_model(name, model, fit, held, Xt, Yt, res, save):
    r = res.setdefault(name, {})
    x = Xt[:1]
    groups = channel_groups(model, x)
    which = 'single' if name.startswith('resnet') else 'all'
    chosen = select_groups(groups, which)
    base_params = count_params(model)
    if 'base' not in r:
        r['base'] = dict(test_acc=acc(model, Xt, Yt), params=base_params, macs=count_macs(model, x, 'cpu'),
                         groups_pruned=which, n_groups=len(chosen), heldout_acc=evaluate(model, dataloader(held, 500), 'cpu'))
        save()
    base = r['base']['test_acc']
    print(name, r['base'], flush=True)
    names = list(dict.fromkeys(feature_module(g, p) for g in chosen for p in g.producers))
    if 'speed' not in r: r['speed'] = speed(model, fit, names); save(); print(r['speed'], flush=True)
    with Timer() as t: stats = collect_stats(model, fit, names, 10, N_PER_CLASS, device='cpu')
    scores = {s: group_scores(chosen, stats, s) for s in SCORES}
    rows = r.setdefault('rows', {})
    ignored = residual_safe_ignored(model) if name.startswith('resnet') else \
              [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    for sp in SPARSITIES[name]:
        key = f'{sp:.3f}'
        row = rows.setdefault(key, {})
        target = round(base_params * (1 - sp))
        for s in SCORES:
            if f'tvs_{s}' in row: continue
            drop, alpha, got = plan_sparsity(scores[s], groups, sp, base_params)
            m = remove_channels(model, groups, drop)
            row[f'tvs_{s}'] = dict(acc=acc(m, Xt, Yt), sparsity=got, alpha=alpha, macs=count_macs(m, x, 'cpu'),
                                   removed={g.idx: len(d) for g, d in drop.items()})
            save(); print(name, key, s, row[f'tvs_{s}']['acc'], round(got, 4), flush=True)
        for s in ('l1', 'random'):
            if s in row: continue
            m, frac = uniform_matched(model, groups, chosen, target, s)
            row[s] = dict(acc=acc(m, Xt, Yt), sparsity=1 - count_params(m) / base_params, fraction=frac,
                          macs=count_macs(m, x, 'cpu'))
            save(); print(name, key, s, row[s]['acc'], flush=True)
        if 'torch_pruning' not in row:
            try:
                m, ratio = tp_matched(model, x, target, ignored)
                row['torch_pruning'] = dict(acc=acc(m, Xt, Yt), sparsity=1 - count_params(m) / base_params, ratio=ratio,
                                            macs=count_macs(m, x, 'cpu'))
            except Exception as e: row['torch_pruning'] = dict(error=f'{type(e).__name__}: {e}'[:200])
            save(); print(name, key, 'tp', row['torch_pruning'].get('acc'), flush=True)
    if not all('iter' in rows[f'{sp:.3f}'] for sp in SPARSITIES[name]):
        with Timer() as t_it:
            _, rep = itertvsprune(model, fit, heldout=dataloader(held, 500), sparsity=SPARSITIES[name], step=0.05,
                                  n_per_class=N_PER_CLASS, groups=which, device='cpu', progress=True)
        for sp, snap in rep['snapshots'].items():
            m = snap['model']
            rows[f'{sp:.3f}']['iter'] = dict(acc=acc(m, Xt, Yt), sparsity=snap['sparsity'], heldout_acc=snap['heldout_acc'],
                                             iteration=snap['iteration'], macs=count_macs(m, x, 'cpu'))
        r['iter_log'] = [{k: v for k, v in i.items() if k != 'layers'} for i in rep['iterations']]
        r['iter_seconds'] = t_it.seconds
        save()

def markdown(res):
    md = ['# TVSPrune / IterTVSPrune benchmark (no fine-tuning)', '',
          'CIFAR-10 (JPEG-75). Statistics: 100 images per class from the 8,000-image training part of '
          "`holdout_split(cifar10('train', variant='jpeg75'))`; IterTVSPrune's held-out accuracy: its 2,000-image held-out part; "
          'accuracies: the 10,000-image test split. Δ = change of test accuracy in points vs the unpruned model; '
          'sparsity = fraction of all parameters removed. ResNets: all methods prune only the blocks\' inner channels '
          '(residual streams kept whole; Torch-Pruning 1.6.1 mis-prunes the option-A shortcuts, so it may only prune the '
          "blocks' first convolutions). VGG-16: all convolutions. L1 and random: the same fraction of every group, matched to "
          "TVSPrune's parameter count by bisection; Torch-Pruning: magnitude pruner (group L2), ratio matched likewise. "
          'Random: one draw (seeded). TVSPrune: `tvsprune` with a parameter-sparsity target (the α of the layer-relative '
          'threshold found by bisection). IterTVSPrune: `itertvsprune` (hellinger_diag) in sparsity mode, one run through all '
          'sparsities, at most 5% of the parameters per step, statistics re-collected at every step, no accuracy target '
          '(the held-out accuracy is recorded in the JSON).', '']
    for name, r in res.items():
        if 'base' not in r: continue
        b = r['base']
        extra = f" ({r['base'].get('note')})" if r['base'].get('note') else ''
        md += [f"## {name}: base test accuracy {b['test_acc']:.2%}, {b['params']:,} parameters{extra}", '',
               '| sparsity (target) | IterTVSPrune Δ | paper IterTVSPrune Δ | TVS hellinger_diag Δ | TVS hellinger_iso Δ | TVS mean_diff Δ | L1 Δ | random Δ | Torch-Pruning Δ | iter beats L1 & random |',
               '|---|---|---|---|---|---|---|---|---|---|']
        for key, row in r.get('rows', {}).items():
            d = lambda k: f"{100 * (row[k]['acc'] - b['test_acc']):+.2f} ({row[k]['sparsity']:.1%})" if k in row and 'acc' in row[k] else 'n/a'
            paper = PAPER.get(name, {}).get(float(key))
            beats = ('yes' if row['iter']['acc'] > max(row['l1']['acc'], row['random']['acc']) else 'no') if 'iter' in row else 'n/a'
            md.append(f"| {float(key):.1%} | {d('iter')} | {'' if paper is None else f'{paper:+.2f}'} | {d('tvs_hellinger_diag')} | "
                      f"{d('tvs_hellinger_iso')} | {d('tvs_mean_diff')} | {d('l1')} | {d('random')} | {d('torch_pruning')} | {beats} |")
        if 'speed' in r:
            s = r['speed']
            md += ['', f"Statistics of {s['images']} images over {s['layers']} layers: one streaming pass {s['one_pass_s']:.2f} s; "
                   f"official per-sample, per-layer loop {s['official_loop_s_extrapolated']:.1f} s (timed on "
                   f"{s['official_loop_samples_timed']} samples: {s['official_loop_s_measured']:.2f} s, extrapolated); "
                   f"speed-up {s['speedup']:.0f}x."]
        if 'iter_seconds' in r: md += ['', f"IterTVSPrune: {len(r['iter_log'])} iterations, {r['iter_seconds']:.0f} s in all."]
        md.append('')
    return '\n'.join(md)

if __name__ == '__main__':
    torch.manual_seed(0)
    res = json.loads(PARTIAL.read_text()) if PARTIAL.exists() else {}
    RESULTS.mkdir(exist_ok=True)
    save = lambda: PARTIAL.write_text(json.dumps(res, indent=1, default=str))
    fit, held = holdout_split(cifar10('train', 'jpeg75'))
    Xt, Yt = tensors(cifar10('test', 'jpeg75'))
    only = sys.argv[1:] or ['resnet20', 'resnet56', 'vgg16']
    t0 = time.perf_counter()
    for name in only:
        if name == 'vgg16':
            model, rec = load_vgg16()
            log = rec.get('log', [{}])
            wall = sum(l['seconds'] for i, l in enumerate(log) if i + 1 == len(log) or log[i + 1]['seconds'] < l['seconds'])
            res.setdefault('vgg16', {})['training'] = {k: v for k, v in rec.items() if k != 'log'} | {'log_last': log[-1], 'wall_seconds_all_runs': wall}
        else: model = adapted_cifar_resnet(int(name[6:]), progress=False)
        run_model(name, model, fit, held, Xt, Yt, res, save)
        if name == 'vgg16' and 'base' in res['vgg16']:
            t = res['vgg16']['training']
            res['vgg16']['base']['note'] = (f"trained here from scratch on CPU: {t.get('epochs_trained', t.get('epochs'))} epochs on the 8,000-image "
                                            f"training part, about {t.get('wall_seconds_all_runs', 0) / 60:.0f} min of wall-clock on the shared 2-core machine; "
                                            f"held-out accuracy {t['log_last'].get('heldout_acc', float('nan')):.2%}")
        save()
    res['total_seconds_last_run'] = time.perf_counter() - t0
    write_results('tvs', {k: v for k, v in res.items()}, markdown({k: v for k, v in res.items() if isinstance(v, dict)}))
    print(markdown({k: v for k, v in res.items() if isinstance(v, dict)}))

"""Reproduction benchmark of TVSPrune / IterTVSPrune (prunebook.tvs) on exact CIFAR-10, no fine-tuning anywhere.

Models: akamaster's ResNet-20 and ResNet-56 as published (`load_cifar_resnet`, 91.73% and 93.39% on the test set).
Statistics: 100 images per class of the validation split `cifar10('val')`; IterTVSPrune's held-out accuracy: 200 per
class of the same split (2,000 images); every reported accuracy: the 10,000 images of `cifar10('test')`.
At every parameter sparsity (ResNet-56: 3.5/7.6/12.3%, ResNet-20: 2.4/4.8/7.1%, the paper's rows, then 20/40%):
TVSPrune one-shot (`allocation='paper'`, the layer-relative threshold, α bisected to the sparsity) with each score,
IterTVSPrune (hellinger_diag, statistics re-collected at every step, one run through the paper's sparsities), L1-norm filter
pruning and random pruning (uniform fraction per group, matched by bisection to the same parameter count), and
Torch-Pruning's magnitude pruner (ratio matched by bisection to the same parameter count).
Every method prunes only the blocks' inner channels (the groups with one producer): Torch-Pruning cannot prune more on
these option-A ResNets (`residual_safe_ignored`), and TVSPrune keeps the residual streams whole too (`groups='single'`).
Also: statistics time of one streaming pass vs the official per-sample, per-layer loop on 256 images.
The rows run in order of importance (IterTVSPrune, L1 and TVSPrune at the paper's sparsities, ResNet-20 then ResNet-56;
then random and Torch-Pruning; then 20/40%; then the other scores; the timing last); the run is resumable:
finished rows are cached in `<out>/tvs.partial.json`, and tvs.json/tvs.md are rewritten after each step.
Run: nice -n 5 python bench/tvs.py [--models resnet20 resnet56] [--out DIR] [--smoke]"""
import sys, json, time, warnings
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).parent))
from common import bench_args, results_dir, write_results, Timer, tp_prune, residual_safe_ignored
from prunebook.core import bisect, count_params, count_macs, evaluate
from prunebook.data import cifar10, per_class_subset, preload, synthetic
from prunebook.models import load_cifar_resnet, cifar_resnet
from prunebook.graph import channel_groups
from prunebook.surgery import remove_channels, choose_channels, l1_scores
from prunebook.allocation import SizeModel
from prunebook.tvs import (collect_stats, group_scores, plan_sparsity, select_groups, feature_module, itertvsprune,
                           per_sample_stats, SCORES)

warnings.filterwarnings('ignore')
PAPER = {'resnet56': {0.035: -1.47, 0.076: -4.82, 0.123: -9.86}, 'resnet20': {0.024: -1.40, 0.048: -4.70, 0.071: -9.41}}
EXTRA = [0.2, 0.4]
BASELINES = ['l1', 'random', 'torch_pruning']

def acc(model, X, Y): return evaluate(model, list(zip(X.split(500), Y.split(500))), 'cpu')

def uniform_matched(model, groups, chosen, target_params, score):
    "Uniform fraction of every chosen group by `score` ('l1' or 'random'), fraction bisected to `target_params`."
    gen_scores = {g: (l1_scores(g) if score == 'l1' else torch.rand(len(g), generator=torch.Generator().manual_seed(g.idx)))
                  for g in chosen}
    drop_for = lambda a: {g: d for g in chosen if (d := choose_channels(g, gen_scores[g], a))}
    size = SizeModel(groups)
    frac = bisect(lambda a: size.after(drop_for(a))['params'], target_params, 0.0, 0.95, tol=0, iters=30)[0]
    return remove_channels(model, groups, drop_for(frac)), frac

def tp_matched(model, x, target_params, ignored):
    "Torch-Pruning's magnitude pruner with its ratio bisected to `target_params`."
    ratio, m = bisect(lambda r: tp_prune(model, x, r, ignored=ignored), target_params, 0.0, 0.95, tol=0.002, iters=14, key=count_params)
    return m, ratio

def speed(model, X, Y, names, n=256, n_slow=8):
    "Seconds for the statistics of `n` images: one streaming pass, and the official loop (timed on `n_slow`, extrapolated)."
    X, Y = X[:n], Y[:n]
    collect_stats(model, (X[:32], Y[:32]), names, 10, device='cpu')            # warm-up
    with Timer() as t_fast: collect_stats(model, (X, Y), names, 10, device='cpu')
    per_sample_stats(model, X[:2], Y[:2], names[:2], 10, 'cpu')               # warm-up
    with Timer() as t_slow: per_sample_stats(model, X[:n_slow], Y[:n_slow], names, 10, 'cpu')
    return dict(images=len(X), layers=len(names), one_pass_s=t_fast.seconds, official_loop_s_measured=t_slow.seconds,
                official_loop_samples_timed=n_slow, official_loop_s_extrapolated=t_slow.seconds * len(X) / n_slow,
                speedup=t_slow.seconds * len(X) / n_slow / t_fast.seconds)

class Run:
    "One model's benchmark state: model, groups, statistics (computed on first need), its part of the results."
    def __init__(self, name, model, data, r, smoke):
        self.name, self.model, self.r, self.smoke = name, model, r, smoke
        self.Xs, self.Ys, self.Xh, self.Yh, self.Xt, self.Yt = data
        self.x = self.Xt[:1]
        self.groups = channel_groups(model, self.x)
        self.chosen = select_groups(self.groups, 'single')
        self.names = list(dict.fromkeys(feature_module(g, p) for g in self.chosen for p in g.producers))
        self.base_params, self._scores = count_params(model), {}
        self.ignored = residual_safe_ignored(model)

    def base(self):
        if 'base' in self.r: return False
        self.r['base'] = dict(test_acc=acc(self.model, self.Xt, self.Yt), params=self.base_params,
                              macs=count_macs(self.model, self.x, 'cpu'), groups_pruned='single', n_groups=len(self.chosen),
                              heldout_acc=acc(self.model, self.Xh, self.Yh))
        print(self.name, self.r['base'], flush=True)
        return True

    def speed(self):
        if 'speed' in self.r: return False
        self.r['speed'] = speed(self.model, self.Xs, self.Ys, self.names, *((32, 2) if self.smoke else ()))
        return True

    def scores(self, s):
        if not self._scores:
            stats = collect_stats(self.model, (self.Xs, self.Ys), self.names, 10, device='cpu')
            self._scores = {k: group_scores(self.chosen, stats, k) for k in SCORES}
        return self._scores[s]

    def row(self, sp, method):
        "Measure `method` at sparsity `sp` (cached)."
        row = self.r.setdefault('rows', {}).setdefault(f'{sp:.3f}', {})
        if method in row: return False
        m, target, extra = self.model, round(self.base_params * (1 - sp)), {}
        if method.startswith('tvs_'):
            drop, alpha, _ = plan_sparsity(self.scores(method[4:]), self.groups, sp, self.base_params)
            m = remove_channels(m, self.groups, drop)
            extra = dict(alpha=alpha, removed={g.idx: len(d) for g, d in drop.items()})
        elif method in ('l1', 'random'):
            m, frac = uniform_matched(m, self.groups, self.chosen, target, method)
            extra = dict(fraction=frac)
        else:
            try: m, ratio = tp_matched(m, self.x, target, self.ignored); extra = dict(ratio=ratio)
            except Exception as e: row[method] = dict(error=f'{type(e).__name__}: {e}'[:200]); return True
        row[method] = dict(acc=acc(m, self.Xt, self.Yt), sparsity=1 - count_params(m) / self.base_params,
                           macs=count_macs(m, self.x, 'cpu'), **extra)
        print(self.name, f'{sp:.3f}', method, f"{row[method]['acc']:.4f}", f"{row[method]['sparsity']:.4f}", flush=True)
        return True

    def iterative(self, sparsities):
        "IterTVSPrune in sparsity mode, one run through all `sparsities` (cached)."
        if 'iter_log' in self.r: return False
        with Timer() as t:
            _, rep = itertvsprune(self.model, (self.Xs, self.Ys), heldout=list(zip(self.Xh.split(500), self.Yh.split(500))),
                                  sparsity=sparsities, step=0.05, n_per_class=None, groups='single', device='cpu', progress=True)
        rows = self.r.setdefault('rows', {})
        for sp, snap in rep['snapshots'].items():
            rows.setdefault(f'{sp:.3f}', {})['iter'] = dict(acc=acc(snap['model'], self.Xt, self.Yt), sparsity=snap['sparsity'],
                                                            heldout_acc=snap['heldout_acc'], iteration=snap['iteration'],
                                                            macs=count_macs(snap['model'], self.x, 'cpu'))
        self.r['iter_log'] = [{k: v for k, v in i.items() if k != 'layers'} for i in rep['iterations']]
        self.r['iter_seconds'] = t.seconds
        return True

def fmt(row, k, b):
    if k not in row or 'acc' not in row[k]: return 'n/a'
    return f"{100 * (row[k]['acc'] - b):+.2f} ({row[k]['sparsity']:.1%})"

def markdown(res, smoke):
    md = ['# TVSPrune / IterTVSPrune on exact CIFAR-10 (no fine-tuning)', '',
          ('SMOKE RUN: random ResNet-8, synthetic images; the numbers mean nothing.' if smoke else
           "Exact CIFAR-10 and akamaster's published checkpoints (`load_cifar_resnet`), as in the paper: no fine-tuning, "
           "statistics from training-distribution images. Statistics: 100 images per class of `cifar10('val')` (the paper's "
           'code takes half the test set); IterTVSPrune\'s held-out accuracy (recorded, not used to stop): 2,000 images of '
           "`cifar10('val')`; accuracies: the 10,000 images of `cifar10('test')`."),
          '', 'Δ = change of test accuracy in points against the unpruned model; in brackets, the fraction of all parameters '
          "removed. Every method prunes only the blocks' inner channels (residual streams kept whole: `groups='single'`; "
          "Torch-Pruning cannot prune these option-A shortcuts). IterTVSPrune: `itertvsprune` (hellinger_diag) in sparsity "
          'mode, one run through the paper\'s sparsities, at most 5% of the parameters per step, statistics re-collected at every step. '
          "TVSPrune: one-shot `tvsprune(allocation='paper')`, the α of the paper's layer-relative threshold bisected to the "
          'sparsity. L1 and random: the same fraction of every group, matched to the parameter count by bisection (random: '
          "one seeded draw); Torch-Pruning: its magnitude pruner (group L2), ratio matched likewise. The paper's base "
          "accuracies are not given; its rows are IterTVSPrune's (copied by the BALF authors, see the TVSPrune notes).", '']
    for name, r in res.items():
        if not isinstance(r, dict) or 'base' not in r: continue
        b = r['base']['test_acc']
        md += [f"## {name}: base test accuracy {b:.2%}, {r['base']['params']:,} parameters", '',
               '| params removed (target) | paper IterTVSPrune Δ | IterTVSPrune Δ | TVSPrune Δ (hellinger_diag) | L1 Δ | random Δ | '
               'Torch-Pruning Δ | TVSPrune hellinger_iso Δ | TVSPrune mean_diff Δ |', '|---|---|---|---|---|---|---|---|---|']
        for key in sorted(r.get('rows', {}), key=float):
            row, paper = r['rows'][key], PAPER.get(name, {}).get(float(key))
            cells = [fmt(row, k, b) for k in ('iter', 'tvs_hellinger_diag', 'l1', 'random', 'torch_pruning',
                                              'tvs_hellinger_iso', 'tvs_mean_diff')]
            md.append(f"| {float(key):.1%} | {'' if paper is None else f'{paper:+.2f}'} | " + ' | '.join(cells) + ' |')
        if 'speed' in r:
            s = r['speed']
            md += ['', f"Statistics of {s['images']} images over {s['layers']} layers: one streaming pass {s['one_pass_s']:.2f} s; "
                   f"official per-sample, per-layer loop {s['official_loop_s_extrapolated']:.1f} s (timed on "
                   f"{s['official_loop_samples_timed']} samples: {s['official_loop_s_measured']:.2f} s, extrapolated); "
                   f"speed-up {s['speedup']:.0f}x."]
        if 'iter_seconds' in r: md += ['', f"IterTVSPrune: {len(r['iter_log'])} iterations, {r['iter_seconds']:.0f} s in all."]
        md.append('')
    if res.get('run_note'): md += [f"Note: {res['run_note']}", '']
    md += ['VGG-16: the paper\'s VGG rows need a VGG-16 trained on exact CIFAR-10, which takes a GPU (bench/tvs_vgg16.py '
           'trains one); none was trained for this table.', '']
    return '\n'.join(md)

def load(smoke):
    "Statistics, held-out and test tensors: exact CIFAR-10, or synthetic images for `--smoke`."
    if smoke:
        s, t = synthetic('train', 10), synthetic('test', 5)
        return (*preload(s), *preload(s), *preload(t))
    val = cifar10('val')
    return (*preload(per_class_subset(val, 100)), *preload(per_class_subset(val, 200, seed=1)), *preload(cifar10('test')))

def main():
    args = bench_args(__doc__)
    args.add_argument('--models', nargs='+', default=['resnet20', 'resnet56'], choices=['resnet20', 'resnet56'])
    args = args.parse_args()
    out = results_dir(args)
    partial = out / 'tvs.partial.json'
    res = json.loads(partial.read_text()) if partial.exists() else {}
    torch.manual_seed(0)
    data, t0 = load(args.smoke), time.perf_counter()
    runs = {}
    for name in args.models[:1] if args.smoke else args.models:
        model = cifar_resnet(8).eval() if args.smoke else load_cifar_resnet(int(name[6:]))
        runs[name] = Run(name, model, data, res.setdefault(name, {}), args.smoke)
    paper = lambda name: [0.1] if args.smoke else list(PAPER[name])
    extra = lambda name: [] if args.smoke else EXTRA
    first, then = ['tvs_hellinger_diag', 'l1'], ['random', 'torch_pruning']
    steps = ([(n, m, None) for n in runs for m in ['base', 'iter'] + [(m2, sp) for m2 in first[::-1] for sp in paper(n)]] +
             [(n, (m, sp), None) for n in runs for sp in paper(n) for m in then] +
             [(n, (m, sp), None) for n in runs for sp in extra(n) for m in first + then] +
             [(n, (m, sp), None) for n in runs for sp in paper(n) + extra(n) for m in ('tvs_hellinger_iso', 'tvs_mean_diff')] +
             [(n, 'speed', None) for n in runs])
    save = lambda: (partial.write_text(json.dumps(res, indent=1, default=str)),
                    write_results('tvs', res, markdown(res, args.smoke), out=out))
    for name, what, _ in steps:
        run = runs[name]
        if what == 'base': done = run.base()
        elif what == 'speed': done = run.speed()
        elif what == 'iter': done = run.iterative(paper(name))
        else: done = run.row(what[1], what[0])
        if done: res['seconds_last_run'] = time.perf_counter() - t0; save()
    save()
    print(markdown(res, args.smoke))

if __name__ == '__main__': main()

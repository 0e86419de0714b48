"""Reproduction of SAP (Diao et al., ICLR 2023) against the lottery-ticket 20%-per-round schedule and one-shot pruning.

Part `mnist`: LeNet-300-100 on exact MNIST, trained from a random initialisation and rewound to it every round (the
paper's protocol, with far fewer epochs per round than its 200). Training on 58,000 images, checkpoint selection and
operating points on the 2,000 held out by `holdout_split`, accuracy reported on the 10,000 test images.

Part `cifar`: ResNet-20 on CIFAR-10. Training from scratch every round is out of reach on 2 CPU cores, so
the rewinding point is the published ResNet-20 (`load_cifar_resnet(20)`): each round rewinds the survivors to
those weights and fine-tunes them on the 45,000-image training split, or a class-balanced part of it (`--cifar-train`;
selection on the 5,000 validation images),
reporting on the 10,000 test images. Also the structured variant (whole channels removed through
prunebook.surgery), with its parameter, MAC and CPU-latency ratios measured side by side.

All methods of a part run in one invocation, from the same initialisation, with the same data and budget. Runs are
checkpointed under $PRUNEBOOK_CACHE/bench-pqi/<tag>/ and resume; results are rewritten after every run.
Run:  flock /tmp/prunebook-cpu.lock python bench/pqi.py --part mnist     (about 20 minutes on 2 cores; --no-scopes: 8)
      flock /tmp/prunebook-cpu.lock python bench/pqi.py --part cifar     (about 25 minutes)
      python bench/pqi.py --smoke     (random 28x28 images and 20 synthetic ones, a random ResNet-8, one round each: seconds)
Writes bench/results/pqi.json and pqi.md (parts already in pqi.json are kept)."""
from __future__ import annotations
import json, sys
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).parent))
from common import bench_args, results_dir, write_results, RESULTS, latency_pair
from prunebook.core import count_params, count_macs, evaluate
from prunebook.data import mnist, cifar10, holdout_split, cache_dir, synthetic, per_class_subset, preload, TensorLoader
from prunebook.models import lenet300_100, load_cifar_resnet, cifar_resnet
from prunebook.pqi import three_phases
from prunebook.sap import sap_prune, one_shot_prune, SAPResult

TOL = 0.005   # accuracy tolerance of the comparison: 0.5 point
PHASE_TOL = 0.1   # a phase of the fall-rise-fall must change PQI by 10% of its total fall to count

def summary(r: SAPResult) -> dict:
    "Final point, and the operating point chosen on validation: the sparsest round within TOL of round 0's val accuracy."
    h0, last = r.history[0], r.history[-1]
    out = {'rounds': len(r.history) - 1 if len(r.history) > 1 else 1, 'final_density': last['density'], 'final_val': last['val_acc'], 'final_test': last['test_acc'],
           'dense_val': h0['val_acc'], 'dense_test': h0['test_acc'], 'seconds': sum(h['seconds'] for h in r.history)}
    if len(r.history) > 1:
        b = r.best(TOL)
        out.update(best_round=b['round'], best_density=b['density'], best_val=b['val_acc'], best_test=b['test_acc'])
        for pair in r.history[0]['pqi']:
            for scope in ('global', 'layer_mean', 'neuron_mean'):
                col = r.column(None, pair, scope)
                ph = three_phases(col, tol=PHASE_TOL * (col[0] - min(col)))   # each change above 10% of the total fall: not noise
                out.setdefault('phases', {})[f'{pair} {scope}'] = {k: ph[k] for k in ('found', 'i', 'j', 'k', 'fall', 'rise', 'fall2')}
    return out

def record(r: SAPResult) -> dict:
    return {'config': r.config, 'history': r.history, 'summary': summary(r)}

def goal(runs: dict, sap: str, lt: str = 'LT 20%') -> dict:
    "SAP reaches a lower density than LT within the tolerance, in no more rounds (both chosen on validation)."
    s, l = runs[sap]['summary'], runs[lt]['summary']
    return {'sap': sap, 'sap_density': s['best_density'], 'sap_round': s['best_round'], 'lt_density': l['best_density'],
            'lt_round': l['best_round'], 'met': s['best_density'] < l['best_density'] and s['best_round'] <= l['best_round']}

def run_part(name: str, init, loaders, methods: dict, common: dict, ck: Path, data: dict, extra=None):
    "Run each method from `init` with fresh loaders (`loaders()`: the same data order for every method)."
    runs = data.setdefault(name, {}).setdefault('runs', {})
    results = {}
    for label, kw in methods.items():
        print(f'== {name}: {label}', flush=True)
        r = sap_prune(init, **loaders(), **{**common, **kw}, checkpoint=ck / f"{label.replace(' ', '_').replace('%', 'pc').replace(',', '')}.pt")
        results[label] = r
        runs[label] = record(r)
        if extra: runs[label].update(extra(label, r))
        save(data)
    return results

def one_shots(name: str, init, loaders: dict, results: dict, common: dict, data: dict):
    "One-shot magnitude pruning of the dense trained network (round 0 of the first SAP run) to each SAP run's final density."
    runs = data[name]['runs']
    dense = next(r for k, r in results.items() if k.startswith('SAP') and not results[k].config['structured']).dense_state
    for label, r in list(results.items()):
        if not label.startswith('SAP') or r.config['structured']: continue
        key = f'one-shot at {label} final density'
        if key in runs: continue
        print(f'== {name}: {key}', flush=True)
        os_ = one_shot_prune(init, dense, r.history[-1]['density'], **loaders(), epochs=common['epochs_per_round'],
                             scope=common.get('scope', 'global'), lr=common['lr'], seed=common['seed'], device=common.get('device'))
        runs[key] = record(os_)
        save(data)

NAME = 'pqi'

def save(data: dict):
    write_results(NAME, data, markdown(data), out=OUT)

def pct(v): return '' if v is None else f'{100 * v:.2f}'

# The paper's CIFAR-10 ResNet18 curves (global scope, T = 15; README figure, read off by eye: notes/pqi-sap.md, section 6):
# remaining weights (%) after rounds 1, 2, ...; test accuracy about 94.5-95% for SAP (0.5, 1) and LT throughout
PAPER_CIFAR = {'SAP (0.5, 1)': [70, 50, 37, 28, 22], 'SAP (1, 2)': [30, 12, 5], 'LT 20%': [100 * 0.8 ** t for t in range(1, 7)]}

def paper_beside(runs: dict) -> list[str]:
    "Markdown: the paper's remaining weights per round beside ours (ResNet-20 here), for the runs both have."
    labels = [k for k in PAPER_CIFAR if k in runs]
    if not labels: return []
    n = max(len(runs[k]['history']) for k in labels)
    md = ['', "### The paper beside us (remaining weights %, paper / ours; ours' test accuracy in brackets)", '',
          "Paper: ResNet18 (11.2M weights, dense about 95%), 200 epochs per round from the initialization, figure readings; "
          "ours: ResNet-20 (0.27M weights), the budget above. The paper keeps about 94.5-95% for SAP (0.5, 1) and LT through "
          "round 15 and about 90% for SAP (1, 2) at round 6.", '',
          '| round | ' + ' | '.join(labels) + ' |', '|---' * (1 + len(labels)) + '|']
    for t in range(1, n):
        cell = lambda k: (f"{PAPER_CIFAR[k][t - 1]:.0f}" if t <= len(PAPER_CIFAR[k]) else '-') + ' / ' + (
            f"{pct(runs[k]['history'][t]['density'])} ({pct(runs[k]['history'][t]['test_acc'])})" if t < len(runs[k]['history']) else '-')
        md.append(f'| {t} | ' + ' | '.join(cell(k) for k in labels) + ' |')
    return md

def markdown(data: dict) -> str:
    md = ['# SAP (PQ Index) reproduction', '',
          'Sparsity-informed Adaptive Pruning against the lottery-ticket schedule (20% of the survivors per round) and one-shot '
          'magnitude pruning at the same final density; unstructured masks, global scope, rewinding every round. '
          f'Operating point ("best"): the sparsest round whose **validation** accuracy is within {100 * TOL:.1f} point of round 0 '
          '(the dense network); test accuracy is reported, never used to choose.', '']
    for part in ('mnist', 'cifar'):
        if part not in data: continue
        d = data[part]
        md += ['', f"## {d['title']}", '', d['budget'], '']
        md += ['| method | rounds | final remaining % | final test % | best round | best remaining % | best val % | best test % | dense val % | dense test % | CPU time (s) |',
               '|---|---|---|---|---|---|---|---|---|---|---|']
        for label, run in d['runs'].items():
            s = run['summary']
            md.append(f"| {label} | {s['rounds']} | {pct(s['final_density'])} | {pct(s['final_test'])} | {s.get('best_round', '')} | "
                      f"{pct(s.get('best_density'))} | {pct(s.get('best_val'))} | {pct(s.get('best_test'))} | {pct(s['dense_val'])} | "
                      f"{pct(s['dense_test'])} | {s['seconds']:.0f} |")
        for g in d.get('goals', []):
            md += ['', f"Goal (SAP below LT's density within {100 * TOL:.1f} point, in no more rounds): **{'met' if g['met'] else 'not met'}** for "
                   f"{g['sap']}: {pct(g['sap_density'])}% at round {g['sap_round']} vs LT {pct(g['lt_density'])}% at round {g['lt_round']}."]
        if part == 'cifar': md += paper_beside(d['runs'])
        for label, run in d['runs'].items():
            h = run['history']
            if len(h) < 2: continue
            pairs = list(h[0]['pqi'])
            md += ['', f'### {label}: per round', '',
                   '| round | remaining % | val % | test % | ' + ' | '.join(f'PQI {p} global | {p} layer mean | {p} neuron mean' for p in pairs)
                   + ' | pruned |' + (' params % | MACs % | channels % |' if 'macs_ratio' in h[0] else ''),
                   '|---' * (5 + 3 * len(pairs)) + '|' + ('---|---|---|' if 'macs_ratio' in h[0] else '')]
            for r in h:
                md.append(f"| {r['round']} | {pct(r['density'])} | {pct(r['val_acc'])} | {pct(r['test_acc'])} | "
                          + ' | '.join(f"{r['pqi'][p]['global']:.4f} | {r['pqi'][p]['layer_mean']:.4f} | {r['pqi'][p]['neuron_mean']:.4f}" for p in pairs)
                          + f" | {r.get('pruned', '')} |" + (f" {pct(r['density'])} | {pct(r['macs_ratio'])} | {pct(r['channels'])} |" if 'macs_ratio' in r else ''))
            md.append('')
            for key, v in run['summary'].get('phases', {}).items():
                if key.endswith('global') and v['i'] is not None:
                    md.append(f"- PQI {key}: fall-rise-fall {'**found**' if v['found'] else 'not found'} (fall {v['fall']:.4f} to round {v['i']}, "
                              f"rise {v['rise']:.4f} to round {v['j']}, fall {v['fall2']:.4f} to round {v['k']}; each must exceed "
                              f"{PHASE_TOL:.0%} of the total fall to count)")
        if 'latency' in d:
            md += ['', '### Structured variant: CPU latency (ratios pruned/base measured side by side)', '',
                   '| batch | base ms | pruned ms | latency ratio | MACs ratio | params ratio |', '|---|---|---|---|---|---|']
            for row in d['latency']:
                md.append(f"| {row['batch']} | {row['base_ms']:.2f} | {row['pruned_ms']:.2f} | {row['ratio']:.3f} | {row['macs_ratio']:.3f} | {row['params_ratio']:.3f} |")
    return '\n'.join(md)


def mnist_tensors(smoke: bool) -> tuple:
    "MNIST's training and test images as tensors, and the indices of the training and held-out parts (smoke: random images)."
    if smoke:
        g = torch.Generator().manual_seed(0)
        X, y, Xt, yt = torch.randn(40, 1, 28, 28, generator=g), torch.randint(10, (40,), generator=g), torch.randn(20, 1, 28, 28, generator=g), torch.randint(10, (20,), generator=g)
        return X, y, Xt, yt, torch.arange(20), torch.arange(20, 40)
    ds = mnist('train')
    rest, held = holdout_split(ds, 2000)
    return *preload(ds), *preload(mnist('test')), torch.tensor(rest.indices), torch.tensor(held.indices)

def part_mnist(args, data: dict):
    X, y, Xt, yt, ri, hi = mnist_tensors(args.smoke)
    loaders = lambda: dict(train_loader=TensorLoader(X[ri], y[ri], 250, shuffle=True, seed=0), val_loader=TensorLoader(X[hi], y[hi], 1000),
                           test_loader=TensorLoader(Xt, yt, 1000))
    torch.manual_seed(0)
    init = lenet300_100()
    common = dict(rounds=args.rounds, epochs_per_round=args.epochs, lr=0.1, scope='global', seed=0, device=args.device)
    data['mnist'] = {'title': 'MNIST, LeNet-300-100 (266,200 prunable weights), trained from a random initialisation',
                     'budget': (f"Budget: {args.rounds} pruning rounds ({args.rounds + 1} trainings) of {args.epochs} epochs each on 58,000 "
                                "training images (batch 250, SGD lr 0.1 cosine, Nesterov momentum 0.9, weight decay 5e-4, gradient clip 1), "
                                "rewinding to the initialisation every round (the paper: 200 epochs per round, 30 rounds); checkpoint of each "
                                "round chosen on 2,000 held-out training images; test on the 10,000 MNIST test images."),
                     'runs': data.get('mnist', {}).get('runs', {})}
    methods = {'SAP (0.5, 1)': dict(p=0.5, q=1.0), 'SAP (1, 2)': dict(p=1.0, q=2.0), 'LT 20%': dict(fraction=0.2)}
    results = run_part('mnist', init, loaders, methods, common, args.ck / 'mnist', data)
    one_shots('mnist', init, loaders, results, common, data)
    data['mnist']['goals'] = [goal(data['mnist']['runs'], k) for k in methods if k.startswith('SAP')]
    save(data)
    if args.scopes:     # the paper's scope comparison (its slides' Fig. 3), SAP (0.5, 1) against LT in the other two scopes
        scoped = {f'{m} {sc} scope': dict(kw, scope=sc) for sc in ('layer', 'neuron')
                  for m, kw in (('SAP (0.5, 1)', dict(p=0.5, q=1.0)), ('LT 20%', dict(fraction=0.2)))}
        run_part('mnist', init, loaders, scoped, common, args.ck / 'mnist', data)
        data['mnist']['goals'] += [goal(data['mnist']['runs'], f'SAP (0.5, 1) {sc} scope', f'LT 20% {sc} scope') for sc in ('layer', 'neuron')]
        save(data)

def part_cifar(args, data: dict):
    smoke_split = lambda s: synthetic('test' if s == 'test' else 'train', 2, seed=int(s == 'val'))    # 20 images each
    split = smoke_split if args.smoke else cifar10
    train_set = split('train') if args.smoke or args.cifar_train is None else per_class_subset(split('train'), args.cifar_train)
    (X, y), (Xv, yv), (Xt, yt) = preload(train_set), preload(split('val')), preload(split('test'))
    loaders = lambda: dict(train_loader=TensorLoader(X, y, 128, shuffle=True, seed=0, augment=True),
                           val_loader=TensorLoader(Xv, yv, 500), test_loader=TensorLoader(Xt, yt, 500))
    base = cifar_resnet(8) if args.smoke else load_cifar_resnet(20)
    base_test = evaluate(base, loaders()['test_loader'])
    base_val = evaluate(base, loaders()['val_loader'])
    common = dict(rounds=args.cifar_rounds, epochs_per_round=args.cifar_epochs, lr=0.01, scope='global', seed=0, device=args.device)
    old = data.get('cifar', {})
    data['cifar'] = {'title': 'CIFAR-10, ResNet-20, rewinding to the published pretrained weights',
                     'budget': (f"Base: load_cifar_resnet(20), {100 * base_test:.2f}% test, {100 * base_val:.2f}% validation. Budget: "
                                f"{args.cifar_rounds} pruning rounds of {args.cifar_epochs} epoch(s) each on {len(y):,} images of the 45,000-image training split{'' if args.cifar_train is None else ' (class-balanced)'} (batch 128, "
                                "random crops and flips, SGD lr 0.01 cosine, Nesterov momentum 0.9, weight decay 5e-4, gradient clip 1), "
                                "rewinding the survivors to the published pretrained weights every round (not to a random initialisation: "
                                "training from scratch each round does not fit 2 CPU cores); checkpoint chosen on the 5,000 validation images, "
                                "test on the 10,000 test images. Round 0 is the base network fine-tuned for one round like the others."),
                     'base_test': base_test, 'base_val': base_val}
    data['cifar']['runs'] = old.get('runs', {}) if old.get('budget') == data['cifar']['budget'] else {}   # runs of another budget are not kept
    methods = {'SAP (0.5, 1)': dict(p=0.5, q=1.0), 'SAP (1, 2)': dict(p=1.0, q=2.0), 'LT 20%': dict(fraction=0.2)}
    if args.structured_rounds:
        methods['SAP structured (1, 2)'] = dict(p=1.0, q=2.0, structured=True, rounds=args.structured_rounds)
    results = run_part('cifar', base, loaders, methods, common, args.ck / 'cifar', data)
    one_shots('cifar', base, loaders, results, common, data)
    data['cifar']['goals'] = [goal(data['cifar']['runs'], k) for k in ('SAP (0.5, 1)', 'SAP (1, 2)')]
    if 'SAP structured (1, 2)' in results:
        small = results['SAP structured (1, 2)'].model
        rows = []
        for batch, reps in ((1, 50), (64, 10)):
            xb = torch.randn(batch, 3, 32, 32)
            tb, tp = latency_pair(base, small, xb, reps)
            rows.append({'batch': batch, 'base_ms': 1e3 * tb, 'pruned_ms': 1e3 * tp, 'ratio': tp / tb,
                         'macs_ratio': count_macs(small, xb[:1], 'cpu') / count_macs(base, xb[:1], 'cpu'),
                         'params_ratio': count_params(small) / count_params(base)})
        data['cifar']['latency'] = rows
    save(data)

if __name__ == '__main__':
    ap = bench_args(__doc__)
    ap.add_argument('--part', choices=['mnist', 'cifar', 'all'], default='all')
    ap.add_argument('--rounds', type=int, default=30, help='MNIST pruning rounds')
    ap.add_argument('--epochs', type=int, default=10, help='MNIST epochs per round')
    ap.add_argument('--no-scopes', dest='scopes', action='store_false', help='skip the layer and neuron scope runs on MNIST')
    ap.add_argument('--cifar-rounds', type=int, default=15)
    ap.add_argument('--cifar-epochs', type=int, default=2)
    ap.add_argument('--cifar-train', type=int, default=None, help='CIFAR training images per class (default: all 4,500)')
    ap.add_argument('--structured-rounds', type=int, default=6, help='rounds of the structured variant on CIFAR (0: skip)')
    ap.add_argument('--device', default=None)
    ap.add_argument('--tag', default='main', help='checkpoint folder name (runs with other settings need another tag)')
    ap.add_argument('--resummarize', action='store_true', help='recompute summaries and goals of the stored results, then stop')
    ap.add_argument('--trial', action='store_true', help='write bench/results/pqi-<tag>.* instead of the results (pqi.*)')
    args = ap.parse_args()
    if args.smoke: args.__dict__.update(rounds=1, epochs=1, scopes=False, cifar_rounds=1, cifar_epochs=1, structured_rounds=1)
    OUT = results_dir(args)
    args.ck = (OUT / 'checkpoints') if args.smoke else cache_dir() / 'bench-pqi' / args.tag
    if args.trial: NAME = f'pqi-{args.tag}'          # trial runs do not overwrite the results
    for sub in ('mnist', 'cifar'): (args.ck / sub).mkdir(parents=True, exist_ok=True)
    old = RESULTS / 'pqi.json'
    data = {k: v for k, v in json.loads(old.read_text()).items() if k in ('mnist', 'cifar')} if old.exists() and not (args.trial or args.smoke) else {}
    if args.resummarize:     # recompute summaries, phases and goals of the stored runs (no training)
        for part in data.values():
            for run in part['runs'].values(): run['summary'] = summary(SAPResult(None, run['history'], config=run['config']))
            lt_of = lambda sap: 'LT 20% ' + sap.split(') ', 1)[1] if sap.endswith(' scope') else 'LT 20%'
            part['goals'] = [goal(part['runs'], g['sap'], lt_of(g['sap'])) for g in part.get('goals', [])]
        save(data); sys.exit(0)
    if args.part in ('mnist', 'all'): part_mnist(args, data)
    if args.part in ('cifar', 'all'): part_cifar(args, data)

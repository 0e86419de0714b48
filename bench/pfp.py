"""Reproduction of PFP (Liebenwein et al., ICLR 2020) at the scale of two CPU cores.

1. MNIST (exact), LeNet-300-100 and LeNet-5, the paper's protocol at a smaller retraining budget: base networks
   trained from scratch on 54,000 training images (SGD, lr 0.01, momentum 0.9, weight decay 1e-4, batch 64, the
   paper's epochs and step decay), 6,000 held out (600 per class). Iterative prune -> retrain ("cascade"): target
   prune ratios PR_i = 1 - 1/(i+1)^alpha of the *original* parameter count (alpha: 1.18 for LeNet-5 as in the paper,
   1.0 for LeNet-300-100, which the paper prunes one-shot), each step followed by a short retraining (cosine from
   lr 0.01, same optimizer) instead of the paper's 30-40 epochs. PFP: deterministic, delta = 1e-12, S = the first
   |S| held-out images. Baseline: uniform L1 filter pruning ("FT", Li et al. 2017) on the same targets with the same
   retraining. Reported: the sparsest network whose held-out error is within 0.5 points of the original's
   (selected on the held-out images), with its test error; and, as the paper selects, on the test error.
2. CIFAR-10, ResNet-20 and ResNet-56 (`load_cifar_resnet`, the published checkpoints), no retraining: PFP (deterministic
   and randomized, delta = 1e-16, S from the 5,000 validation images) at parameter prune ratios 0.1/0.2/0.3, against
   uniform L1 (`prune_uniform` + `bisect` to PFP's parameter count) and Torch-Pruning 1.6.1's magnitude pruner
   (`tp_prune`, ratio matched by bisection; on these option-A ResNets it may only prune the blocks' first
   convolutions, see bench/common.py, so high ratios are out of its reach). Test accuracy on 10,000 images, and the
   time PFP takes to prune (sensitivities + allocation + surgery).
3. The same at prune ratio 0.5 with a short fine-tune of every pruned network on the 45,000-image training split (augmented,
   SGD lr 0.01 cosine, batch 128, weight decay 5e-4); the validation images are evaluated after each epoch (nothing is
   selected on them), the test images only at the end.

Run: python bench/pfp.py [--parts mnist cifar ft] [--fresh]   (--smoke: random 28x28 images for the LeNets, 40 synthetic
images and a random-weight ResNet-8 for the CIFAR parts, one step of everything; seconds, nothing kept)   (under the CPU lock; ~45 minutes on 2 shared cores)
Resumable: finished pieces are kept in PRUNEBOOK_CACHE/pfp-bench/<budget>/ and skipped when run again with the same
budget. bench/results/pfp.{json,md} are rewritten after every piece."""
import json, sys, time
from pathlib import Path
import torch
from torch.utils.data import TensorDataset
sys.path.insert(0, str(Path(__file__).parent))
from common import bench_args, results_dir, write_results, tp_prune, residual_safe_ignored
from prunebook.core import bisect, count_params, count_macs, evaluate
from prunebook.data import (cifar10, cifar_transform, holdout_split, dataloader, cache_dir, mnist, synthetic, MNIST_MEAN, MNIST_STD)
from prunebook.models import load_cifar_resnet, cifar_resnet, train, lenet5, lenet300_100, FINETUNE
from prunebook.surgery import prune_uniform
from prunebook.pfp import pfp_prune, default_points

PAPER_MNIST = {'lenet300_100': dict(err=1.59, pfp=(0.41, 84.32), ft=(0.35, 81.68)),
               'lenet5': dict(err=0.72, pfp=(0.35, 92.37), ft=(0.47, 85.04))}
PAPER_CIFAR = {20: dict(err=8.60, pfp=(0.49, 62.67), ft=(0.43, 42.65)), 56: dict(err=7.05, pfp=(0.28, 88.98), ft=(0.48, 81.46))}

p = bench_args(__doc__)
p.add_argument('--parts', nargs='+', default=['mnist', 'cifar', 'ft'], choices=['mnist', 'cifar', 'ft'])
p.add_argument('--base-epochs', type=int, default=40, help='MNIST base training epochs (paper: 40)')
p.add_argument('--retrain-epochs', type=int, nargs=2, default=[4, 3], help='retraining epochs per step, LeNet-300-100 and LeNet-5 (paper: 30, 40)')
p.add_argument('--steps', type=int, default=14, help='cascade steps on MNIST')
p.add_argument('--ratios', type=float, nargs='+', default=[0.1, 0.2, 0.3], help='CIFAR prune ratios without retraining')
p.add_argument('--ft-ratio', type=float, default=0.5)
p.add_argument('--ft-epochs', type=int, nargs=2, default=[2, 1], help='fine-tuning epochs, ResNet-20 and ResNet-56')
p.add_argument('--threads', type=int, default=0, help='torch threads (0: leave the default)')
p.add_argument('--depths', type=int, nargs='+', default=[20, 56])
p.add_argument('--limit', type=int, default=None, help='smoke test: only the first N test / held-out images and N fine-tuning images (not a result)')
p.add_argument('--fresh', action='store_true')
args = p.parse_args()
if args.smoke: args.__dict__.update(base_epochs=1, retrain_epochs=[1, 1], steps=1, ratios=[0.3], ft_epochs=[1, 1], depths=[8], limit=40)
OUT = results_dir(args)
if args.threads: torch.set_num_threads(args.threads)

budget = dict(limit=args.limit or 0, base=args.base_epochs, rt=args.retrain_epochs, steps=args.steps, ratios=args.ratios, ft=args.ft_ratio, fte=args.ft_epochs)
key = '-'.join(f'{k}{v}' for k, v in budget.items()).replace(' ', '').replace('[', '').replace(']', '').replace(',', '_')
work = (OUT / 'state') if args.smoke else cache_dir() / 'pfp-bench' / key
work.mkdir(parents=True, exist_ok=True)
state_file = work / 'state.json'
state = {} if args.fresh or not state_file.exists() else json.loads(state_file.read_text())
def save(): state_file.write_text(json.dumps(state, indent=1)); report()
def log(*a): print(time.strftime('%H:%M:%S'), *a, flush=True)

# ---------------------------------------------------------------- MNIST
def mnist_tensors():
    "MNIST as normalized tensors: (train 54k, held-out 6k, test 10k), each (x, y); the split by `holdout_split`."
    if args.smoke:          # random images: no data needed
        g = torch.Generator().manual_seed(0)
        return tuple((torch.randn(args.limit, 1, 28, 28, generator=g), torch.randint(10, (args.limit,), generator=g)) for _ in range(3))
    tr, te = mnist('train'), mnist('test')
    norm = lambda d: ((d.data.float() / 255 - MNIST_MEAN[0]) / MNIST_STD[0]).unsqueeze(1)
    x, y = norm(tr), tr.targets
    rest, held = holdout_split(tr, 6000)
    r, h = torch.tensor(rest.indices), torch.tensor(held.indices)
    n = args.limit or None
    return (x[r][:n], y[r][:n]), (x[h][:n], y[h][:n]), (norm(te)[:n], te.targets[:n])

def batches(xy, bs=1000): return [(xy[0][i:i + bs], xy[1][i:i + bs]) for i in range(0, len(xy[0]), bs)]
def err(model, xy): return 100 * (1 - evaluate(model, batches(xy), 'cpu'))

def mnist_base(name, tr, seed=0):
    "The base network trained with the paper's recipe (cached)."
    file = (work if args.smoke else cache_dir() / 'trained') / f'{name}-mnist54k-e{args.base_epochs}-paper-s{seed}.pt'
    model = {'lenet5': lenet5, 'lenet300_100': lenet300_100}[name]()
    if file.exists():
        model.load_state_dict(torch.load(file, map_location='cpu', weights_only=True)); return model.eval()
    milestones = (30 / 40,) if name == 'lenet300_100' else (25 / 40, 35 / 40)
    torch.manual_seed(seed)
    train(model, dataloader(TensorDataset(*tr), 64, shuffle=True, seed=seed), args.base_epochs, lr=0.01, weight_decay=1e-4,
          schedule='step', milestones=milestones, device='cpu', progress=False)
    file.parent.mkdir(parents=True, exist_ok=True); torch.save(model.state_dict(), file)
    return model.eval()

def run_mnist():
    tr, held, test = mnist_tensors()
    for name, alpha, ft_epochs in (('lenet300_100', 1.0, args.retrain_epochs[0]), ('lenet5', 1.18, args.retrain_epochs[1])):
        st = state.setdefault('mnist', {}).setdefault(name, {})
        t0 = time.perf_counter()
        base = mnist_base(name, tr)
        if 'base' not in st:
            st['base'] = dict(params=count_params(base), val_err=err(base, held), test_err=err(base, test), seconds=time.perf_counter() - t0)
            save()
        log(name, st['base'])
        n0 = count_params(base)
        S_loader = batches(held, 250)
        x1 = held[0][:1]
        targets = [1 - 1 / (i + 1) ** alpha for i in range(1, args.steps + 1)]
        for method in ('pfp', 'l1'):
            rows = st.setdefault(method, [])
            ckpt = work / f'{name}-{method}.pt'
            current = base
            if rows and ckpt.exists(): current = torch.load(ckpt, weights_only=False)
            for i, pr in enumerate(targets):
                if i < len(rows): continue
                t0 = time.perf_counter()
                if method == 'pfp': pruned = pfp_prune(current, S_loader, prune_ratio=max(0.0, 1 - (1 - pr) * n0 / count_params(current)), delta=1e-12, variant='deterministic')
                else: pruned = bisect(lambda a: prune_uniform(current, x1, a), (1 - pr) * n0, hi=0.99, key=count_params)[1]
                t_prune = time.perf_counter() - t0
                before = err(pruned, held)
                torch.manual_seed(1000 + i)
                train(pruned, dataloader(TensorDataset(*tr), 64, shuffle=True, seed=1000 + i), ft_epochs, lr=0.01, weight_decay=1e-4, device='cpu', progress=False)
                pruned.eval()
                row = dict(target=pr, pr=100 * (1 - count_params(pruned) / n0), params=count_params(pruned), val_err_pruned=before,
                           val_err=err(pruned, held), test_err=err(pruned, test), prune_seconds=t_prune, retrain_seconds=pruned.history.seconds,
                           eps=pruned.pfp_history[-1]['eps'] if method == 'pfp' else None)
                rows.append(row); torch.save(pruned, ckpt); save()
                log(name, method, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()})
                current = pruned

# ---------------------------------------------------------------- CIFAR
def cifar_data():
    from torch.utils.data import Subset
    if args.smoke:          # synthetic images (no data needed): 20 test, 10 held-out, 20 fine-tuning
        test, held = synthetic('test', 2), synthetic('train', 1, seed=1)
        return dataloader(test, 500), dataloader(held, 200), synthetic('train', 2, transform=cifar_transform(train=True))
    cut = (lambda d: Subset(d, range(min(args.limit, len(d))))) if args.limit else (lambda d: d)
    test = dataloader(cut(cifar10('test')), 500)
    return test, dataloader(cut(cifar10('val')), 200), cut(cifar10('train', transform=cifar_transform(train=True)))

def matched(prune, target):
    "`bisect` on a pruning function's amount; None when the nearest model is more than 1% off the target."
    try: a, m = bisect(prune, target, hi=0.99, iters=6 if args.smoke else 18, key=count_params)
    except Exception as e: return None, f'{type(e).__name__}: {e}'[:80]
    return (m, None) if abs(count_params(m) - target) <= 0.01 * target else (None, f'nearest {count_params(m):,} parameters')

def run_cifar(ratios, ft: bool):
    test, held, rest_aug = cifar_data()
    for depth in args.depths:
        part = 'ft' if ft else 'cifar'
        st = state.setdefault(part, {}).setdefault(str(depth), {})
        base = (cifar_resnet(depth) if args.smoke else load_cifar_resnet(depth)).eval()
        x1 = torch.zeros(1, 3, 32, 32)
        if 'base' not in st and not ft:
            st['base'] = dict(params=count_params(base), macs=count_macs(base, x1, 'cpu'), test_acc=100 * evaluate(base, test), n_points=default_points(base, 1e-16))
            save()
        for pr in ratios:
            key = f'{pr:g}'
            if key in st: continue
            row, models = {}, {}
            for variant in (('deterministic', 'randomized') if not ft else ('deterministic',)):
                t0 = time.perf_counter()
                m = pfp_prune(base, held, prune_ratio=pr, delta=1e-16, variant=variant)
                models[f'PFP ({variant})'] = m
                row[f'PFP ({variant})'] = dict(seconds=time.perf_counter() - t0, sens_seconds=m.pfp_history[-1]['sensitivity_seconds'], eps=m.pfp_history[-1]['eps'])
            target = count_params(models['PFP (deterministic)'])
            models['L1 (uniform)'], why = matched(lambda a: prune_uniform(base, x1, a), target)
            if why: row['L1 (uniform)'] = dict(note=why)
            ign = residual_safe_ignored(base)
            models['Torch-Pruning magnitude (block conv1 only)'], why = matched(lambda a: tp_prune(base, x1, a, ignored=ign), target)
            if why: row['Torch-Pruning magnitude (block conv1 only)'] = dict(note=why)
            for name, m in models.items():
                r = row.setdefault(name, {})
                if m is None: continue
                r.update(params=count_params(m), macs=count_macs(m, x1, 'cpu'))
                if ft:
                    torch.manual_seed(0)
                    epochs = args.ft_epochs[0] if depth == 20 else args.ft_epochs[1]
                    m.train()
                    P = FINETUNE   # the library's fine-tuning protocol, run for whole epochs
                    train(m, dataloader(rest_aug, P.batch_size, shuffle=True, seed=P.seed), epochs, lr=P.lr, momentum=P.momentum,
                          weight_decay=P.weight_decay, schedule=P.schedule, progress=False, val_loader=held)
                    r.update(held_acc_per_epoch=[100 * a for a in m.history.val_acc], ft_seconds=m.history.seconds, ft_epochs=epochs)
                r['test_acc'] = 100 * evaluate(m.eval(), test)
                log(depth, pr, name, r)
            st[key] = row; save()

# ---------------------------------------------------------------- report
def fmt_eps(e): return '' if e is None else f'{e:.3g}'

def report():
    md = ['# PFP (Provable Filter Pruning) reproduction', '', __doc__.split('\n\n')[0], '']
    m = state.get('mnist', {})
    if m:
        md += ['## MNIST: sparsest network within 0.5 points of the original error', '',
               f'Budget: base {args.base_epochs} epochs; retraining {args.retrain_epochs[0]} (LeNet-300-100) / {args.retrain_epochs[1]} (LeNet-5) '
               f'epochs per step (paper: 30 / 40), {args.steps} cascade steps; delta = 1e-12; deterministic PFP.', '',
               '| model | method | orig. err (test) | selected on held-out: PR | test err (Δ) | selected on test (paper): PR | test err (Δ) | paper PR (Δ) |',
               '|---|---|---|---|---|---|---|---|']
        for name, st in m.items():
            if 'base' not in st: continue
            b = st['base']
            for method in ('pfp', 'l1'):
                rows = st.get(method, [])
                ok_v = [r for r in rows if r['val_err'] <= b['val_err'] + 0.5]
                ok_t = [r for r in rows if r['test_err'] <= b['test_err'] + 0.5]
                sv = max(ok_v, key=lambda r: r['pr']) if ok_v else None
                stt = max(ok_t, key=lambda r: r['pr']) if ok_t else None
                paper = PAPER_MNIST[name]['pfp' if method == 'pfp' else 'ft']
                fmt = lambda r: (f"{r['pr']:.2f}%", f"{r['test_err']:.2f} ({r['test_err'] - b['test_err']:+.2f})") if r else ('none', '')
                md.append(f"| {name} | {'PFP' if method == 'pfp' else 'L1 uniform (FT)'} | {b['test_err']:.2f} | {' | '.join(fmt(sv))} | "
                          f"{' | '.join(fmt(stt))} | {paper[1]:.2f}% (+{paper[0]:.2f}) |")
        md += ['', 'Every cascade step (error in %, after retraining; "before" = held-out error right after pruning):', '',
               '| model | method | target PR | PR | params | held-out err before | held-out err | test err | ε | prune s | retrain s |',
               '|---|---|---|---|---|---|---|---|---|---|---|']
        for name, st in m.items():
            for method in ('pfp', 'l1'):
                for r in st.get(method, []):
                    md.append(f"| {name} | {method} | {100 * r['target']:.1f} | {r['pr']:.2f} | {r['params']:,} | {r['val_err_pruned']:.2f} | {r['val_err']:.2f} | "
                              f"{r['test_err']:.2f} | {fmt_eps(r['eps'])} | {r['prune_seconds']:.1f} | {r['retrain_seconds']:.0f} |")
    for part, title in (('cifar', 'CIFAR-10, no retraining'), ('ft', f'CIFAR-10, prune ratio {args.ft_ratio} + short fine-tune')):
        c = state.get(part, {})
        if not c: continue
        md += ['', f'## {title}', '']
        if part == 'ft': md += [f'Fine-tuning: {args.ft_epochs[0]} epoch(s) for ResNet-20, {args.ft_epochs[1]} for ResNet-56, on the 45,000-image training split (augmented), '
                                f'`models.FINETUNE` (SGD lr {FINETUNE.lr:g} {FINETUNE.schedule}, momentum {FINETUNE.momentum:g}, batch {FINETUNE.batch_size}, '
                                f'weight decay {FINETUNE.weight_decay:g}). Validation accuracy after each epoch is listed, nothing selected on it.', '']
        md += ['| model | target PR | method | params | PR | MACs ratio | test acc | held-out acc per epoch | PFP seconds (sensitivities) |', '|---|---|---|---|---|---|---|---|---|']
        base_c = state.get('cifar', {})
        for depth, st in c.items():
            b = base_c.get(depth, {}).get('base')
            if b: md.append(f"| ResNet-{depth} | 0 | base | {b['params']:,} | 0 | 1.000 | {b['test_acc']:.2f} | | |S| = {b['n_points']} |")
            for pr, row in st.items():
                if pr == 'base': continue
                for name, r in row.items():
                    if 'params' not in r:
                        md.append(f"| ResNet-{depth} | {pr} | {name} | not reached ({r.get('note', '')}) | | | | | |"); continue
                    bp = b['params'] if b else r['params']; bm = b['macs'] if b else r['macs']
                    secs = f"{r['seconds']:.1f} ({r['sens_seconds']:.1f})" if 'seconds' in r else ''
                    md.append(f"| ResNet-{depth} | {pr} | {name} | {r['params']:,} | {100 * (1 - r['params'] / bp):.1f} | {r['macs'] / bm:.3f} | {r['test_acc']:.2f} | "
                              f"{', '.join(f'{a:.1f}' for a in r.get('held_acc_per_epoch', []))} | {secs} |")
    md += ['', 'Paper (true CIFAR-10, 182 retraining epochs per step, within 0.5% of the original): ResNet-20 PFP 62.67% PR, FT 42.65%; '
           'ResNet-56 PFP 88.98%, FT 81.46%. MNIST: LeNet-300-100 PFP 84.32% (+0.41), FT 81.68% (+0.35); LeNet-5 PFP 92.37% (+0.35), FT 85.04% (+0.47).']
    write_results('pfp', dict(budget=budget, results=state, paper=dict(mnist=PAPER_MNIST, cifar=PAPER_CIFAR)), '\n'.join(md), out=OUT)

if __name__ == '__main__':
    if 'mnist' in args.parts:
        prev = torch.get_num_threads(); torch.set_num_threads(1)     # tiny networks: one thread is faster
        run_mnist(); torch.set_num_threads(prev)
    if 'cifar' in args.parts: run_cifar(args.ratios, ft=False)
    if 'ft' in args.parts: run_cifar([args.ft_ratio], ft=True)
    report()
    print(f'results in {OUT}')

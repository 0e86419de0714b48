"""Reproduction of TPP's Table 1 (Wang and Fu, ICLR 2023) at the scale of two CPU cores.

ResNet-56 (`load_cifar_resnet(56)`, the published checkpoint) on CIFAR-10. For each layer-wise prune ratio, applied to the first
convolution of each of the 27 blocks (as the paper does, so the residual streams keep their width), the same filters
(smallest L1 norm, chosen once from the base model) are removed by
  - L1: removal, no fine-tuning;
  - L1 + fine-tune: removal, then the fine-tuning below;
  - TPP: `tpp_prune` (Gram + BatchNorm + weight penalties with a growing lambda, stabilisation with layer-by-layer
    zero-out, removal), then the same fine-tuning;
fine-tuned at initial learning rates 1e-2 and 1e-3 (step schedule, /10 at 50% and 75% of the epochs, as the paper's
60/90 of 120). Training uses the 45,000-image training split `cifar10('train')` with augmentation;
the 5,000 validation images are watched after every fine-tuning epoch (nothing is selected on them: the last epoch
is reported); the 10,000 test images are only used for the reported accuracies.

Run: python bench/tpp.py [--ratios 0.9 0.7 0.5] [--ramp 240] [--stabilize 60] [--ft-epochs 4]
     python bench/tpp.py --smoke   (a random ResNet-8 on 20 synthetic images per split, a few steps of everything)
Resumable: every finished piece is kept in PRUNEBOOK_CACHE/tpp-bench/<budget>/ and skipped when the script is run
again with the same budget (--fresh starts over). bench/results/tpp.{json,md} are rewritten after every piece.
Ratios can run at once in separate processes (each with its own --ratios; the state file merges their pieces); a last
run with every ratio, all of it cached, writes the complete results."""
import copy, json, math, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).parent))
from common import bench_args, results_dir, write_results
from prunebook.core import count_params, count_macs, evaluate
from prunebook.data import cifar10, cifar_transform, dataloader, cache_dir, synthetic
from prunebook.models import load_cifar_resnet, cifar_resnet, train
from prunebook.graph import channel_groups
from prunebook.surgery import remove_channels, save_pruned, load_pruned
from prunebook.tpp import jacobian_singular_values, l1_drop, tpp_prune

PAPER = {  # Table 1 of the paper, ResNet-56 on true CIFAR-10, 120 fine-tuning epochs, mean of runs
    0.5: {'L1': {0.01: 93.51, 0.001: 93.12}, 'TPP': {0.01: 93.46, 0.001: 93.32}},
    0.7: {'L1': {0.01: 92.26, 0.001: 91.77}, 'TPP': {0.01: 92.35, 0.001: 92.00}},
    0.9: {'L1': {0.01: 86.75, 0.001: 87.57}, 'TPP': {0.01: 89.63, 0.001: 89.09}}}

p = bench_args(__doc__)
p.add_argument('--ratios', type=float, nargs='+', default=[0.9, 0.7, 0.5], help='layer-wise prune ratios, run in this order')
p.add_argument('--lrs', type=float, nargs='+', default=[1e-2, 1e-3], help='initial fine-tuning learning rates')
p.add_argument('--ramp', type=int, default=240, help='TPP: iterations for lambda to reach its ceiling (paper: 100,000)')
p.add_argument('--interval', type=int, default=10, help='TPP: lambda grows every this many iterations (paper: 10)')
p.add_argument('--stabilize', type=int, default=60, help='TPP: iterations at the ceiling (paper: 10,000)')
p.add_argument('--zero-out-every', type=int, default=1, help='TPP: zero one more layer every this many stabilisation iterations (paper: 100)')
p.add_argument('--reg-lr', type=float, default=1e-2, help='TPP: learning rate of the regularization phase (paper: 1e-3)')
p.add_argument('--ft-epochs', type=int, default=4, help='fine-tuning epochs on the 45,000 training images (paper: 120 on 50,000)')
p.add_argument('--batch-size', type=int, default=128)
p.add_argument('--seed', type=int, default=0)
p.add_argument('--jsv-samples', type=int, default=32, help='test images for the mean Jacobian singular value')
p.add_argument('--depth', type=int, default=56, help='CIFAR ResNet depth (56 for the reproduction; 20 for smoke tests)')
p.add_argument('--limit', type=int, default=None, help='smoke test: use only the first N images of each split (not a result)')
p.add_argument('--fresh', action='store_true', help='ignore finished pieces from an earlier run with the same budget')
args = p.parse_args()
if args.smoke: args.__dict__.update(ratios=[0.5], lrs=[1e-2, 1e-3], ramp=4, interval=2, stabilize=2, ft_epochs=1, depth=8, jsv_samples=4,
                                    batch_size=10)
OUT = results_dir(args)

budget = dict(depth=args.depth, limit=args.limit or 0, ramp=args.ramp, interval=args.interval, stabilize=args.stabilize, zero_out_every=args.zero_out_every,
              reg_lr=args.reg_lr, ft_epochs=args.ft_epochs, batch_size=args.batch_size, seed=args.seed,
              alpha=1000.0, ceiling=1.0, momentum=0.9, weight_decay=5e-4)
key = '-'.join(f'{k}{v:g}' if isinstance(v, float) else f'{k}{v}' for k, v in budget.items())
work = (OUT / 'state') if args.smoke else cache_dir() / 'tpp-bench' / key
work.mkdir(parents=True, exist_ok=True)
state_file = work / 'state.json'
if args.fresh: state_file.unlink(missing_ok=True)
state = json.loads(state_file.read_text()) if state_file.exists() else {}
def save_state():
    "Write the state file, keeping the pieces another process (running other ratios on the same budget) wrote since."
    if state_file.exists(): state.update({k: v for k, v in json.loads(state_file.read_text()).items() if k not in state})
    state_file.write_text(json.dumps(state, indent=1))

torch.manual_seed(args.seed)
cut = lambda ds: torch.utils.data.Subset(ds, range(min(args.limit, len(ds)))) if args.limit else ds
split = (lambda s, **kw: synthetic('test' if s == 'test' else 'train', 2, seed=int(s == 'val'), **kw)) if args.smoke else cifar10
train_set = cut(split('train', transform=cifar_transform(train=True)))
held_loader = dataloader(cut(split('val')), 500)
test_loader = dataloader(cut(split('test')), 500)
jsv_x = torch.stack([test_loader.dataset[i][0] for i in range(args.jsv_samples)])
train_loader = lambda: dataloader(train_set, args.batch_size, shuffle=True, seed=args.seed)
base = (cifar_resnet(args.depth) if args.smoke else load_cifar_resnet(args.depth)).eval()
x1 = jsv_x[:1]
groups = channel_groups(base, x1)
LAYERS = [f'layer{s}.{b}.conv1' for s in (1, 2, 3) for b in range((args.depth - 2) // 6)]

def measure(model, extra: dict) -> dict:
    "Test and held-out accuracy, mean Jacobian singular value, sizes relative to the base model."
    t0 = time.perf_counter()
    out = dict(extra, test_acc=evaluate(model, test_loader), held_acc=evaluate(model, held_loader),
               jsv=jacobian_singular_values(model, jsv_x).mean().item(),
               params_pruned=1 - count_params(model) / count_params(base), macs_pruned=1 - count_macs(model, x1) / count_macs(base, x1))
    out['eval_seconds'] = time.perf_counter() - t0
    return out

def run_finetune(model, lr: float, epochs: int | None = None) -> tuple:
    "The shared fine-tuning (`epochs`, default --ft-epochs): same data order and augmentation for every model (seeded)."
    model = copy.deepcopy(model)
    with torch.random.fork_rng():
        torch.manual_seed(args.seed)
        train(model, train_loader(), epochs or args.ft_epochs, lr=lr, schedule='step', milestones=(0.5, 0.75), momentum=0.9,
                 weight_decay=5e-4, val_loader=held_loader, progress=False)
    return model, model.history.val_acc, model.history.seconds

def piece(name: str, fn):
    "Run `fn` once per budget: its result is kept in the state file."
    if name not in state:
        t0 = time.perf_counter()
        state[name] = fn()
        state[name]['piece_seconds'] = time.perf_counter() - t0
        save_state()
        print(f'{name}: ' + ', '.join(f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}' for k, v in state[name].items()
                                      if k != 'val_curve'), flush=True)
        report()
    return state[name]

LONG = 'L1 + longer fine-tune (TPP\'s total iterations)'
LONG_EPOCHS = args.ft_epochs + math.ceil((args.ramp + args.stabilize) * args.batch_size / len(train_set))

def rows() -> list:
    out = []
    for r in args.ratios:
        for name, method, lr in ([(f'l1-{r}', 'L1 (no fine-tune)', None), (f'tpp-{r}', 'TPP (before fine-tune)', None)] +
                                 [(f'{m}-{r}-{lr:g}', meth, lr) for lr in args.lrs for m, meth in (('l1ft', 'L1 + fine-tune'), ('tppft', 'TPP'),
                                                                                    ('l1ftlong', LONG))]):
            if name in state: out.append(dict(state[name], ratio=r, method=method, lr=lr))
    return out

def report():
    rs, base_r = rows(), state.get('base')
    if base_r is None: return
    get = lambda r, m, lr=None: next((x for x in rs if x['ratio'] == r and x['method'] == m and x['lr'] == lr), None)
    cell = lambda x: f"{100 * x['test_acc']:.2f}" if x else '–'
    done = [r for r in args.ratios if all(get(r, m, lr) for m in ('L1 + fine-tune', 'TPP') for lr in args.lrs)]
    complete = len(done) == len(args.ratios)
    b = budget
    reg_epochs = (b['ramp'] + b['stabilize']) * b['batch_size'] / len(train_set)
    budget_text = (f"Budget (CPU): TPP regularization {b['ramp']} iterations of lambda ramp (+1/{b['ramp'] // b['interval']} every "
                   f"{b['interval']}) + {b['stabilize']} of stabilisation (one layer zeroed per {b['zero_out_every']} iteration(s)), "
                   f"SGD lr {b['reg_lr']:g}, batch {b['batch_size']} ({reg_epochs:.1f} epochs of the 45,000 images; paper: ~110,000 "
                   f"iterations at lr 1e-3); fine-tuning {b['ft_epochs']} epoch{'s' if b['ft_epochs'] > 1 else ''} (step schedule, /10 at 50% and 75%), batch "
                   f"{b['batch_size']}, the same for L1 and TPP (paper: 120 epochs of 50,000 images). alpha 1000, weight decay 5e-4, "
                   f"momentum 0.9, seed {b['seed']}, one run per cell.")
    md = [f'# TPP reproduction: ResNet-{args.depth} on CIFAR-10', '']
    if args.limit or args.smoke: md += ['**Smoke test on a few images per split: not a result.**', '']
    md += [f"Base: `load_cifar_resnet({args.depth})`, {100 * base_r['test_acc']:.2f}% test accuracy (paper's base: 93.78% on true CIFAR-10), "
          f"mean Jacobian singular value {base_r['jsv']:.3f}. Pruned: the first convolution of each of the {len(LAYERS)} blocks, "
          "the same L1-chosen filters for every method. Test accuracy (%) on the 10,000 CIFAR-10 test images; "
          "one run each (binomial standard error about 0.3 points).", '', budget_text, '',
          '| Layer-wise PR | ' + ' | '.join(str(r) for r in args.ratios) + ' |', '|---' * (len(args.ratios) + 1) + '|']
    line = lambda label, f: md.append(f'| {label} | ' + ' | '.join(f(r) for r in args.ratios) + ' |')
    line('Params / MACs pruned', lambda r: (lambda x: f"{100 * x['params_pruned']:.1f}% / {100 * x['macs_pruned']:.1f}%" if x else '–')(get(r, 'L1 (no fine-tune)')))
    line('L1, no fine-tune', lambda r: cell(get(r, 'L1 (no fine-tune)')))
    line('TPP after regularization, before fine-tune', lambda r: cell(get(r, 'TPP (before fine-tune)')))
    for lr in args.lrs:
        md.append(f'| *initial fine-tuning LR {lr:g}:* |' + ' |' * len(args.ratios))
        line('L1 + fine-tune', lambda r: cell(get(r, 'L1 + fine-tune', lr)))
        line('**TPP**', lambda r: cell(get(r, 'TPP', lr)))
        line('TPP − L1', lambda r: f"{100 * (get(r, 'TPP', lr)['test_acc'] - get(r, 'L1 + fine-tune', lr)['test_acc']):+.2f}"
             if get(r, 'TPP', lr) and get(r, 'L1 + fine-tune', lr) else '–')
        line(f'L1 + {LONG_EPOCHS}-epoch fine-tune (as many iterations as TPP\'s two phases)', lambda r: cell(get(r, LONG, lr)))
        line('TPP − that', lambda r: f"{100 * (get(r, 'TPP', lr)['test_acc'] - get(r, LONG, lr)['test_acc']):+.2f}"
             if get(r, 'TPP', lr) and get(r, LONG, lr) else '–')
        line('paper: L1 / TPP / TPP − L1', lambda r: f"{PAPER[r]['L1'][lr]:.2f} / {PAPER[r]['TPP'][lr]:.2f} / {PAPER[r]['TPP'][lr] - PAPER[r]['L1'][lr]:+.2f}"
             if r in PAPER and lr in PAPER[r]['L1'] else '–')
    verdict = {}
    if len(args.lrs) == 2:
        lo, hi = min(args.lrs), max(args.lrs)
        diff = lambda r, m: 100 * (get(r, m, lo)['test_acc'] - get(r, m, hi)['test_acc'])
        md.append(f'| *Acc. diff ({lo:g} minus {hi:g}):* |' + ' |' * len(args.ratios))
        for m in ('L1 + fine-tune', 'TPP'):
            line(m, lambda r: f'{diff(r, m):+.2f}' if r in done else '–')
        line('paper: L1 / TPP', lambda r: f"{PAPER[r]['L1'][lo] - PAPER[r]['L1'][hi]:+.2f} / {PAPER[r]['TPP'][lo] - PAPER[r]['TPP'][hi]:+.2f}" if r in PAPER else '–')
        for r in done:
            gaps = {lr: 100 * (get(r, 'TPP', lr)['test_acc'] - get(r, 'L1 + fine-tune', lr)['test_acc']) for lr in args.lrs}
            verdict[str(r)] = {'tpp_minus_l1': {f'{lr:g}': g for lr, g in gaps.items()},
                               'tpp_beats_l1_by_1.5_at_both_lrs': all(g >= 1.5 for g in gaps.values()),
                               'lr_gap_l1': abs(diff(r, 'L1 + fine-tune')), 'lr_gap_tpp': abs(diff(r, 'TPP')),
                               'tpp_gap_smaller': abs(diff(r, 'TPP')) < abs(diff(r, 'L1 + fine-tune'))}
    md += ['', '| Mean Jacobian singular value (32 test images) | ' + ' | '.join(str(r) for r in args.ratios) + ' |', '|---' * (len(args.ratios) + 1) + '|']
    md.append('| base | ' + ' | '.join(f"{base_r['jsv']:.3f}" for _ in args.ratios) + ' |')
    for m, lr in [('L1 (no fine-tune)', None), ('TPP (before fine-tune)', None)] + [(m, lr) for lr in args.lrs for m in ('L1 + fine-tune', 'TPP')]:
        line(m + (f', lr {lr:g}' if lr else ''), lambda r: f"{get(r, m, lr)['jsv']:.3f}" if get(r, m, lr) else '–')
    md += ['', '## Goals (issue 8)', '']
    for r in done:
        if all(get(r, LONG, lr) for lr in args.lrs):
            gl = {lr: 100 * (get(r, 'TPP', lr)['test_acc'] - get(r, LONG, lr)['test_acc']) for lr in args.lrs}
            verdict.setdefault(str(r), {})['tpp_minus_l1_equal_iterations'] = {f'{lr:g}': g for lr, g in gl.items()}
            md.append(f'- ratio {r}, against L1 fine-tuned for as many iterations as TPP\'s regularization plus fine-tuning '
                      f'({LONG_EPOCHS} epochs): TPP − L1 = ' + ', '.join(f'{g:+.2f} at lr {lr:g}' for lr, g in gl.items()) +
                      f" → at least +1.5 at {'both' if len(gl) > 1 else 'this learning rate'}: **{'met' if all(g >= 1.5 for g in gl.values()) else 'not met'}**.")
    for r, v in verdict.items():
        if 'tpp_minus_l1' not in v: continue     # one learning rate: no comparison across learning rates
        g = v['tpp_minus_l1']
        md.append(f"- ratio {r}: TPP − (L1 + fine-tune) = " + ', '.join(f'{d:+.2f} at lr {lr}' for lr, d in g.items()) +
                  f" → at least +1.5 at both learning rates: **{'met' if v['tpp_beats_l1_by_1.5_at_both_lrs'] else 'not met'}**; "
                  f"gap between the learning rates: TPP {v['lr_gap_tpp']:.2f}, L1 {v['lr_gap_l1']:.2f} → TPP's smaller: "
                  f"**{'yes' if v['tpp_gap_smaller'] else 'no'}**.")
    if not complete: md.append(f'- Incomplete run: finished ratios {done} of {args.ratios}.')
    secs = sum(v.get('piece_seconds', 0) for v in state.values())
    md.append(f'- Compute: {secs / 60:.0f} minutes for the pieces above (regularization, fine-tuning, evaluation).')
    write_results('tpp', dict(complete=complete, budget=budget, budget_text=budget_text, base=base_r, rows=rs, verdict=verdict,
                              paper={str(k): v for k, v in PAPER.items()}, compute_minutes=secs / 60), '\n'.join(md), out=OUT)

piece('base', lambda: measure(base, {}))
for r in args.ratios:
    drop = l1_drop(groups, r, LAYERS)
    l1 = remove_channels(base, groups, drop)
    piece(f'l1-{r}', lambda: measure(l1, {'kept': {g.producers[0]: len(g) - len(d) for g, d in drop.items()}}))
    for lr in args.lrs:
        def l1ft(lr=lr):
            m, curve, secs = run_finetune(l1, lr)
            return measure(m, {'val_curve': curve, 'train_seconds': secs})
        piece(f'l1ft-{r}-{lr:g}', l1ft)
        def l1ftlong(lr=lr):
            m, curve, secs = run_finetune(l1, lr, LONG_EPOCHS)
            return measure(m, {'val_curve': curve, 'train_seconds': secs, 'epochs': LONG_EPOCHS})
        piece(f'l1ftlong-{r}-{lr:g}', l1ftlong)
    tpp_file = work / f'tpp-{r}.pt'
    def tpp_reg():
        t0 = time.perf_counter()
        torch.manual_seed(args.seed)
        m = tpp_prune(base, train_loader(), r, layers=LAYERS, example_inputs=x1, ramp_iters=args.ramp, interval=args.interval,
                      stabilize_iters=args.stabilize, zero_out_every=args.zero_out_every, reg_lr=args.reg_lr, ft_epochs=0,
                      log_every=20)
        save_pruned(m, tpp_file)
        return measure(m, {'train_seconds': time.perf_counter() - t0, 'log': m.tpp['log']})
    piece(f'tpp-{r}', tpp_reg)
    tpp_model = None
    for lr in args.lrs:
        def tppft(lr=lr):
            global tpp_model
            if tpp_model is None: tpp_model = load_pruned(tpp_file)
            m, curve, secs = run_finetune(tpp_model, lr)
            return measure(m, {'val_curve': curve, 'train_seconds': secs})
        piece(f'tppft-{r}-{lr:g}', tppft)
report()
print((OUT / 'tpp.md').read_text())

"""Every method side by side (prunebook.compare): the published ResNet-20 (and ResNet-56) on exact CIFAR-10 and LeNet-5 on
MNIST, at matched MACs, before and after the common fine-tune (`models.FINETUNE`, with `--ft-iters` iterations in all:
TPP's regularization iterations count), each seed method as published and under its best allocation rule on 'val'.

Run:  nice -n 5 python bench/comparison.py [--tasks resnet20 lenet5] [--targets 0.5 0.7 0.3] [--ft-iters 300] ...
Resumable: every finished row is cached in OUT/comparison.partial.json (gitignored); run again to continue.
Writes OUT/comparison.{json,md,png} (OUT: --out, default bench/results; --smoke: a temporary folder)."""
from __future__ import annotations
import json, time, traceback
import matplotlib; matplotlib.use('Agg')
import matplotlib.pyplot as plt
from common import bench_args, results_dir, write_results
import torch
from prunebook.graph import channel_groups
from prunebook.models import load_cifar_resnet, trained_lenet
from prunebook.compare import METHODS, RULES, SEED_METHODS, cifar_task, compare, coupled_removed, layer_widths, mnist_task, synthetic_task
from prunebook.report import below_random, comparison_table, plot_comparison

TASKS = {'resnet20': lambda a: cifar_task(20, n_val=a.n_val, n_train=a.n_train, n_test=a.n_test),
         'resnet56': lambda a: cifar_task(56, n_val=a.n_val, n_train=a.n_train, n_test=a.n_test),
         'lenet5': lambda a: mnist_task(n_val=a.n_val, n_test=a.n_test),
         'synthetic': lambda a: synthetic_task(n_per_class=20, epochs=1)}
DENSE = {'ResNet-20 / CIFAR-10': (lambda: load_cifar_resnet(20), (1, 3, 32, 32)),      # rows' tasks, to re-read their widths
         'ResNet-56 / CIFAR-10': (lambda: load_cifar_resnet(56), (1, 3, 32, 32)),
         'LeNet-5 / MNIST': (lambda: trained_lenet('lenet5', progress=False), (1, 1, 28, 28))}
SMOKE = dict(tasks=['synthetic'], targets=[0.5], methods=['l1', 'random', 'dfpc'], rules=['uniform', 'internal', 'normalized'],
             ft_iters=4, tpp_iters=2, latency_reps=2, choose_iters=2)

def parse():
    p = bench_args(__doc__)
    p.add_argument('--tasks', nargs='+', default=['resnet20', 'lenet5'], choices=list(TASKS))
    p.add_argument('--targets', nargs='+', type=float, default=[0.5, 0.7, 0.3], help='fractions of the MACs kept, in this order')
    p.add_argument('--methods', nargs='+', default=list(METHODS), help='keys of compare.METHODS, or name:rule')
    p.add_argument('--rules', nargs='+', default=list(RULES),
                   help=f'allocation rules tried for {", ".join(SEED_METHODS)} (chosen on val)')
    p.add_argument('--ft-iters', type=int, default=300, help='the common training budget per row, in iterations')
    p.add_argument('--choose-iters', type=int, default=30, help="training iterations per candidate rule before it is judged on 'val'")
    p.add_argument('--tpp-iters', type=int, default=60, help="TPP's regularization iterations (part of its budget)")
    p.add_argument('--latency-reps', type=int, default=5, help='interleaved passes of the CPU speedup measurement')
    p.add_argument('--n-val', type=int, default=200, help="'val' images per class on which the rule is chosen")
    p.add_argument('--n-train', type=int, default=None, help='CIFAR training images per class loaded (default: all)')
    p.add_argument('--n-test', type=int, default=None, help='test images reported (default: all 10,000)')
    p.add_argument('--report', action='store_true', help='measure nothing: write the results of the rows cached so far')
    args = p.parse_args()
    if args.smoke: vars(args).update(SMOKE)
    return args

def recount(rows: list[dict]):
    "Recompute every row's `coupled_removed` from its layer widths (rows cached by an earlier version of the count)."
    for task, (build, shape) in DENSE.items():
        rs = [r for r in rows if r['task'] == task]
        if not rs: continue
        model = build().eval()
        groups, before = channel_groups(model, torch.zeros(shape)), layer_widths(model)
        for r in rs: r['coupled_removed'] = coupled_removed(groups, before, r['widths'])

def main():
    args = parse()
    out = results_dir(args)
    config = {k: getattr(args, k) for k in ('ft_iters', 'tpp_iters', 'choose_iters', 'n_val', 'n_train', 'n_test', 'rules', 'latency_reps')}
    partial = out / 'comparison.partial.json'
    cached = json.loads(partial.read_text()) if partial.exists() else {}
    same = {k: cached.get('config', {}).get(k) for k in ('ft_iters', 'tpp_iters', 'choose_iters', 'n_val', 'n_train', 'n_test')}
    done = cached.get('rows', []) if same == {k: config[k] for k in same} else []
    if cached and not done: print(f'{partial}: another configuration, starting afresh')
    rows, t0 = list(done), time.perf_counter()
    def save(row):                         # a new row, or an updated one (its choice extended) replacing its cached self
        rows[:] = [r for r in rows if (r['task'], r['method'], r['target']) != (row['task'], row['method'], row['target'])] + [row]
        partial.write_text(json.dumps(dict(config=config, rows=rows), indent=1, default=str))
    for name in ([] if args.report else args.tasks):
        task = TASKS[name](args)
        for target in args.targets:        # the targets in the order given, every method at one before the next
            for method in args.methods:    # one failing method is reported and does not stop the others
                try: compare(task, [method], [target], args.rules, done=rows, save=save, ft_iters=args.ft_iters,
                             tpp_iters=args.tpp_iters, latency_reps=args.latency_reps, choose_iters=args.choose_iters)
                except Exception: print(f'{name} {method} at {target} failed:\n{traceback.format_exc()}', flush=True)
    recount(rows)
    config['minutes_this_run'] = (time.perf_counter() - t0) / 60
    failing = below_random(rows)
    md = (f"# Every method at matched MACs\n\n{comparison_table(rows)}\n"
          f"Budget: {args.ft_iters} training iterations per row (`models.FINETUNE`, batch 128; TPP's {args.tpp_iters} "
          f"regularization iterations come out of its fine-tune). Test images: {args.n_test or 'all 10,000'}; allocation "
          f"rules chosen on {args.n_val} 'val' images per class after {args.choose_iters} training iterations each (the published CIFAR checkpoints were trained on all 50,000 training images, 'val' included, so val accuracy measures the damage of pruning, not generalization). Best variant more than one point below random after the "
          f"fine-tune: {'; '.join(failing) if failing else 'none'}.\n")
    write_results('comparison', dict(config=config, rows=rows, below_random=failing), md, out=out)
    tasks = list(dict.fromkeys(r['task'] for r in rows))
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 4 * len(tasks)), squeeze=False)
    for ax, task in zip(axes, tasks): plot_comparison(rows, task, ax)
    fig.tight_layout(); fig.savefig(out / 'comparison.png', dpi=110); plt.close(fig)
    print(f'wrote {out}/comparison.json, .md, .png')

if __name__ == '__main__':
    main()

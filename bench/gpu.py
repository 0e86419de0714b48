"""All the GPU work of the GPU issue in one run, in order of importance, resumable (finished parts are cached).

1. `tests`: the CUDA tests (`tests/test_cuda.py`): every method gives the same kept channels on CUDA as on the CPU,
   surgery and `measure_latency` on CUDA, a model pruned and saved on the GPU loads on the CPU.
2. `latency`: GPU latency ratio (pruned/dense, timed alternately) against the MACs ratio for resnet50 and
   mobilenet_v2 (torchvision, random weights, 224 px) at 30% and 50% of the channels, batch 1 and 64, fp32 and
   channels-last bf16, for prunebook's pruned model and Torch-Pruning's with the same channels removed.
3. `notebooks`: the time of each notebook's default run (`nbdev_test`, slow cells skipped) on this device: the
   Colab budget is estimated from it (stated as an estimate).
The long training runs of the issue (TPP on ResNet-56 with a long fine-tune, VGG-16 and ResNet-50 on CIFAR-10) are
run by their own benchmarks with `--device cuda` (bench/tpp.py, bench/tvs_vgg16.py) once these parts are done.

Writes `gpu.json` and `gpu.md` naming the device. `--smoke`: on the CPU when there is no GPU, a tiny network,
seconds, the same code path (the CUDA tests then skip, and say so).
Run: python bench/gpu.py [--parts tests latency notebooks] [--smoke]"""
import copy, json, subprocess, sys, tempfile, time
import xml.etree.ElementTree as ET
from pathlib import Path
import torch, torchvision
sys.path.insert(0, str(Path(__file__).parent))
from common import bench_args, results_dir, write_results
from surgery import drop_for, tp_same
from prunebook.core import count_macs, latency_pair, machine_info
from prunebook.graph import channel_groups
from prunebook.surgery import remove_channels

ROOT = Path(__file__).resolve().parent.parent
PARTS = ('tests', 'latency', 'notebooks')

def run_tests(smoke: bool) -> dict:
    "Run the CUDA tests with pytest; their outcome per test (skipped ones with the reason)."
    report = Path(tempfile.mkdtemp()) / 'cuda.xml'
    cmd = [sys.executable, '-m', 'pytest', str(ROOT / 'tests' / 'test_cuda.py'), '-q', '-rs', f'--junitxml={report}']
    if smoke: cmd += ['-k', 'surgery']
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    cases = {}
    for c in ET.parse(report).getroot().iter('testcase'):
        skip, fail = c.find('skipped'), c.find('failure') if c.find('failure') is not None else c.find('error')
        cases[c.get('name')] = ('skipped: ' + skip.get('message', '')) if skip is not None else ('failed' if fail is not None else 'passed')
    return dict(returncode=r.returncode, summary=r.stdout.strip().splitlines()[-1] if r.stdout.strip() else '', cases=cases)

def latency_rows(name: str, size: int, batches: tuple, reps: int, device: str) -> list[dict]:
    "Latency ratio against MACs ratio for `name` at 30% and 50% of the channels, fp32 and channels-last bf16."
    model = torchvision.models.get_model(name).eval()
    x1 = torch.randn(1, 3, size, size)
    groups, macs0, rows = channel_groups(model, x1), count_macs(model, x1), []
    for amount in (0.3, 0.5):
        drop = drop_for(groups, amount)
        pruned = {'prunebook': remove_channels(model, groups, drop).eval(), 'Torch-Pruning, same channels': tp_same(model, x1, drop).eval()}
        for tool, p in pruned.items():
            for precision in ('fp32', 'bf16 channels-last'):
                a, b = copy.deepcopy(model), copy.deepcopy(p)
                if precision != 'fp32': a, b = (m.to(dtype=torch.bfloat16, memory_format=torch.channels_last) for m in (a, b))
                row = dict(model=name, amount=amount, tool=tool, precision=precision, macs_ratio=count_macs(p, x1) / macs0)
                for n in batches:
                    x = torch.randn(n, 3, size, size)
                    if precision != 'fp32': x = x.to(dtype=torch.bfloat16, memory_format=torch.channels_last)
                    ta, tb = latency_pair(a, b, x, reps=reps, device=device)
                    row.update({f'latency_ratio_b{n}': tb / ta, f'dense_ms_b{n}': 1e3 * ta})
                rows.append(row); print(row, flush=True)
    return rows

def notebook_times(smoke: bool) -> list[dict]:
    "Seconds of each notebook's default run (`nbdev_test --path`, slow cells skipped)."
    rows = []
    for nb in [ROOT / 'nbs' / 'index.ipynb'] if smoke else sorted((ROOT / 'nbs').glob('*.ipynb')):
        t0 = time.perf_counter()
        r = subprocess.run(['nbdev_test', '--path', str(nb)], cwd=ROOT, capture_output=True, text=True)
        rows.append(dict(notebook=nb.name, seconds=time.perf_counter() - t0, ok=r.returncode == 0,
                         error=(r.stderr or r.stdout)[-300:] if r.returncode else ''))
        print(rows[-1], flush=True)
    return rows

def markdown(res: dict) -> str:
    "The report: the device, the CUDA tests, latency against MACs, notebook times."
    dev = res['device']
    md = [f'# GPU benchmark ({dev})', '']
    if 'tests' in res:
        t = res['tests']
        md += ['## CUDA tests', '', f"`pytest tests/test_cuda.py`: {t['summary']}", '', '| test | outcome |', '|---|---|']
        md += [f'| {k} | {v} |' for k, v in t['cases'].items()]
    if 'latency' in res:
        keys = sorted({k for r in res['latency'] for k in r if k.startswith('latency_ratio_b')}, key=lambda k: int(k[15:]))
        md += ['', f'## Latency ratio against MACs ratio ({dev}; pruned/dense timed alternately)', '',
               '| model | channels removed | tool | precision | MACs ratio | ' + ' | '.join(keys) + ' |', '|---' * (5 + len(keys)) + '|']
        md += [f"| {r['model']} | {r['amount']:.0%} | {r['tool']} | {r['precision']} | {r['macs_ratio']:.3f} | "
               + ' | '.join(f'{r[k]:.3f}' for k in keys) + ' |' for r in res['latency']]
    if 'notebooks' in res:
        md += ['', f'## Notebook default runs on {dev} (slow cells skipped)', '', '| notebook | seconds | ok |', '|---|---|---|']
        md += [f"| {r['notebook']} | {r['seconds']:.0f} | {r['ok']} |" for r in res['notebooks']]
    return '\n'.join(md)

if __name__ == '__main__':
    p = bench_args(__doc__)
    p.add_argument('--parts', nargs='+', default=list(PARTS), choices=PARTS)
    args = p.parse_args()
    out = results_dir(args)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cpu' and not args.smoke: sys.exit('bench/gpu.py: no CUDA device here; use --smoke to check the script on the CPU')
    cache = out / 'gpu.partial.json'
    res = json.loads(cache.read_text()) if cache.exists() else {}
    res['device'] = machine_info()['gpu'] or 'CPU (smoke run, no GPU)'
    for part in args.parts:
        if part in res: continue
        if part == 'tests': res[part] = run_tests(args.smoke)
        elif part == 'latency':
            res[part] = (latency_rows('resnet18', 32, (1, 2), 2, device) if args.smoke else
                         [r for n in ('resnet50', 'mobilenet_v2') for r in latency_rows(n, 224, (1, 64), 50, device)])
        else: res[part] = notebook_times(args.smoke)
        cache.write_text(json.dumps(res, indent=1))
    write_results('gpu', res, markdown(res), out)
    print(f'wrote {out}/gpu.json and gpu.md')

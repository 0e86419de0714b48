"Shared helpers for the benchmark scripts: arguments, results files, timing, Torch-Pruning baselines."
from __future__ import annotations
import argparse, json, tempfile, time, datetime
from pathlib import Path
from prunebook.core import machine_info, latency_pair, latency_ratio  # noqa: F401  (the one interleaved measurement, re-exported)

RESULTS = Path(__file__).parent / 'results'

def bench_args(description: str # the script's docstring
              ) -> argparse.ArgumentParser:
    "An argument parser with the options every benchmark has: `--smoke` (seconds, same code path) and `--out`."
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--smoke', action='store_true',
                   help='tiny model and a few images, seconds, through the same code path; writes to a temporary folder')
    p.add_argument('--out', type=Path, default=None,
                   help='results folder (default bench/results; with --smoke a fresh temporary folder)')
    return p

def results_dir(args: argparse.Namespace # parsed by a `bench_args` parser
               ) -> Path:
    "Where this run writes: `--out`, else a temporary folder for `--smoke` (never the committed results), else bench/results."
    out = args.out or (Path(tempfile.mkdtemp(prefix='prunebook-smoke-')) if args.smoke else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    return out

def write_results(method: str, # the benchmark's name: writes `<method>.json` and `<method>.md`
                  data: dict, # the results (the machine and date are added)
                  markdown: str, # the human-readable report
                  out: Path = RESULTS, # the results folder
                 ):
    "Write `out/<method>.json` (with the machine described) and `out/<method>.md`."
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    data = {'method': method, 'date': datetime.date.today().isoformat(), 'machine': machine_info(), **data}
    (out / f'{method}.json').write_text(json.dumps(data, indent=1, default=str))
    m = data['machine']
    header = (f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads)"
              + (f", GPU {m['gpu']}" if m['gpu'] else ', no GPU') + f"; {data['date']}.\n\n")
    (out / f'{method}.md').write_text(markdown.rstrip() + '\n\n' + header)

class Timer:
    "`with Timer() as t: ...; t.seconds`"
    def __enter__(self): self.t0 = time.perf_counter(); return self
    def __exit__(self, *exc): self.seconds = time.perf_counter() - self.t0

# Torch-Pruning baselines live in the library (prunebook.compare), so the CLI and the benchmarks share them.
from prunebook.compare import tp_prune, residual_safe_ignored  # noqa: E402,F401

"Shared helpers for the benchmark scripts: Torch-Pruning baselines, results files, timing."
from __future__ import annotations
import copy, json, time, datetime
from pathlib import Path
import torch
from prunebook.core import machine_info

RESULTS = Path(__file__).parent / 'results'

def write_results(method: str, data: dict, markdown: str):
    "Write `bench/results/<method>.json` (with the machine described) and `<method>.md`."
    RESULTS.mkdir(exist_ok=True)
    data = {'method': method, 'date': datetime.date.today().isoformat(), 'machine': machine_info(), **data}
    (RESULTS / f'{method}.json').write_text(json.dumps(data, indent=1, default=str))
    m = data['machine']
    header = (f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads)"
              + (f", GPU {m['gpu']}" if m['gpu'] else ', no GPU') + f"; {data['date']}.\n\n")
    (RESULTS / f'{method}.md').write_text(markdown.rstrip() + '\n\n' + header)

def latency_pair(a, b, x, reps: int) -> tuple[float, float]:
    "Median seconds of `a` and `b` (set to eval mode) on `x`, timed alternately so that machine noise hits both alike."
    ta, tb = [], []
    with torch.inference_mode():
        for m in (a, b): m.eval(); m(x); m(x)
        for _ in range(reps):
            for m, t in ((a, ta), (b, tb)):
                t0 = time.perf_counter(); m(x); t.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)

class Timer:
    "`with Timer() as t: ...; t.seconds`"
    def __enter__(self): self.t0 = time.perf_counter(); return self
    def __exit__(self, *exc): self.seconds = time.perf_counter() - self.t0

# Torch-Pruning baselines live in the library (prunebook.compare), so the CLI and the benchmarks share them.
from prunebook.compare import tp_prune, residual_safe_ignored

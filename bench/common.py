"Shared helpers for the benchmark scripts: Torch-Pruning baselines, results files, timing."
from __future__ import annotations
import copy, json, time, datetime
from pathlib import Path
import torch, torch.nn as nn, torch.nn.functional as F
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

class Timer:
    "`with Timer() as t: ...; t.seconds`"
    def __enter__(self): self.t0 = time.perf_counter(); return self
    def __exit__(self, *exc): self.seconds = time.perf_counter() - self.t0

def tp_prune(model: nn.Module, example_inputs: torch.Tensor, ratio: float, importance: str = 'magnitude',
             data: tuple | None = None, round_to: int | None = None, ignored: list[nn.Module] | None = None) -> nn.Module:
    """A copy of `model` pruned by Torch-Pruning 1.6.1 (`BasePruner`, uniform channel `ratio` per group).
    `importance`: 'magnitude' (group L2 magnitude) or 'taylor' (needs `data` = (inputs, labels) for one gradient)."""
    import torch_pruning as tp
    m = copy.deepcopy(model).eval()
    imp = {'magnitude': tp.importance.GroupMagnitudeImportance(p=2),
           'taylor': tp.importance.GroupTaylorImportance()}[importance]
    last = [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1:]
    ignored = [m.get_submodule(n) for n in ignored] if ignored and isinstance(ignored[0], str) else (ignored or last)
    pruner = tp.pruner.BasePruner(m, example_inputs, importance=imp, pruning_ratio=ratio, ignored_layers=ignored,
                                  round_to=round_to)
    if importance == 'taylor':
        x, y = data
        m.zero_grad(); F.cross_entropy(m(x), y).backward()
    pruner.step()
    m.zero_grad(set_to_none=True)
    return m

def residual_safe_ignored(model: nn.Module) -> list[str]:
    """Layers Torch-Pruning 1.6.1 must leave alone on prunebook's option-A CIFAR ResNets: it mis-prunes the zero-padded
    shortcuts (`F.pad` on channels) and returns a model that crashes, so only the blocks' first convolutions are pruned."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and not n.endswith('.conv1')]

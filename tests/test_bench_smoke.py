"Every benchmark script runs: `bench/<x>.py --smoke` goes through the real code path on a tiny model in seconds."
import os, subprocess, sys
from pathlib import Path
import pytest

BENCH = Path(__file__).resolve().parent.parent / 'bench'
SCRIPTS = sorted(p for p in BENCH.glob('*.py') if p.name != 'common.py')

@pytest.mark.parametrize('script', SCRIPTS, ids=lambda p: p.name)
def test_bench_smoke(script, tmp_path):
    env = {**os.environ, 'PRUNEBOOK_CACHE': str(tmp_path / 'cache')}
    r = subprocess.run([sys.executable, str(script), '--smoke', '--out', str(tmp_path)], cwd=BENCH.parent, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f'{script.name} --smoke failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}'
    assert any(tmp_path.glob('*.json')), f'{script.name} --smoke wrote no results into --out'

def test_smoke_never_writes_committed_results(tmp_path):
    "`--smoke` without `--out` writes into a temporary folder, not bench/results."
    sys.path.insert(0, str(BENCH))
    try: from common import bench_args, results_dir, RESULTS
    finally: sys.path.remove(str(BENCH))
    out = results_dir(bench_args('x').parse_args(['--smoke']))
    assert out.resolve() != RESULTS.resolve() and out.is_dir()
    assert results_dir(bench_args('x').parse_args([])).resolve() == RESULTS.resolve()

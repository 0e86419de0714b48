"The codebase stays readable: no module imports another's private names, modules and exported cells stay teaching-sized."
import ast, json, re
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(p for p in (ROOT / 'prunebook').glob('*.py') if not p.name.startswith('_'))
SCRIPTS = sorted((ROOT / 'bench').glob('*.py'))
MAX_MODULE_LINES, MAX_CELL_LINES = 450, 60

def private_imports(path: Path) -> list[str]:
    "`from x import _name` statements in `path` that reach into another module (prunebook's or bench's)."
    return [f'{path.name}:{n.lineno}: from {"." * n.level}{n.module or ""} import {a.name}'
            for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)
            for a in n.names if a.name.startswith('_') and not a.name.startswith('__')]

@pytest.mark.parametrize('path', MODULES + SCRIPTS, ids=lambda p: f'{p.parent.name}/{p.name}')
def test_no_private_imports(path):
    bad = private_imports(path)
    assert not bad, 'imports of private names (make them public where another module needs them):\n' + '\n'.join(bad)

def test_private_import_check_can_fail(tmp_path):
    (tmp_path / 'm.py').write_text('from .graph import _first_input, node_arg\n')
    assert private_imports(tmp_path / 'm.py') == ['m.py:1: from .graph import _first_input']

@pytest.mark.parametrize('path', MODULES, ids=lambda p: p.name)
def test_module_size(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_MODULE_LINES, f'prunebook/{path.name} has {n} lines (at most {MAX_MODULE_LINES}): split it by concern'

def exported_cells(nb: Path):
    "(first line, number of lines) of each `#| export` cell of the notebook `nb`."
    for c in json.loads(nb.read_text())['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'code' and re.match(r'#\|\s*export', src): yield src.splitlines()[1:2], len(src.splitlines())

@pytest.mark.parametrize('nb', sorted((ROOT / 'nbs').glob('*.ipynb')), ids=lambda p: p.name)
def test_exported_cell_size(nb):
    long = [(first, n) for first, n in exported_cells(nb) if n > MAX_CELL_LINES]
    assert not long, f'{nb.name}: exported cells over {MAX_CELL_LINES} lines (one idea per cell): {long}'

def test_sidebar_lists_every_notebook():
    "A new notebook is reachable from the docs site's sidebar."
    listed = set(re.findall(r'([\w]+\.ipynb)', (ROOT / 'nbs' / 'sidebar.yml').read_text()))
    missing = sorted(p.name for p in (ROOT / 'nbs').glob('*.ipynb') if p.name not in listed)
    assert not missing, f'nbs/sidebar.yml does not list {missing}'

"Every third-party module that prunebook imports is declared in settings.ini, so a fresh install can run it."
import ast, configparser, functools, re, sys
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def declared(key: str) -> set[str]:
    "Distribution names in settings.ini's `key` (requirements or dev_requirements), normalized."
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini')
    return {norm(re.split(r'[<>=!~\[; ]', r)[0]) for r in cfg['DEFAULT'].get(key, '').split()}

def norm(name: str) -> str: return name.lower().replace('_', '-')

def imports(path: Path) -> list[tuple[str, bool]]:
    """Top-level names of the absolute imports in `path`, each with whether it runs at import time (module level) or
    lazily (inside a function). Imports inside `try` are optional, with a fallback, and are left out."""
    tree = ast.parse(path.read_text())
    inside = lambda kinds: {id(n) for t in ast.walk(tree) if isinstance(t, kinds) for n in ast.walk(t) if n is not t}
    optional, lazy = inside(ast.Try), inside((ast.FunctionDef, ast.AsyncFunctionDef))
    out = []
    for node in ast.walk(tree):
        if id(node) in optional: continue
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
        out += [(n.split('.')[0], id(node) not in lazy) for n in names]
    return out

@functools.cache
def import_names() -> dict:
    "Import name -> installed distributions providing it (read once: scanning them is slow)."
    return packages_distributions()

def distributions(module: str) -> set[str]:
    "The installed distributions that provide the import name `module` (e.g. PIL -> pillow)."
    return {norm(d) for d in import_names().get(module, [module])}

def undeclared() -> list[str]:
    runtime, dev = declared('requirements'), declared('dev_requirements')
    bad = []
    for f in sorted((ROOT / 'prunebook').glob('*.py')):
        for mod, eager in imports(f):
            if mod in sys.stdlib_module_names or mod in ('prunebook', '__future__'): continue
            ok = runtime if eager else runtime | dev
            if not distributions(mod) & ok:
                bad.append(f"prunebook/{f.name} imports {mod} ({'at import time' if eager else 'lazily'}): declare it in "
                           f"settings.ini {'requirements' if eager else 'requirements or dev_requirements'}")
    return bad

def test_every_import_is_declared():
    bad = undeclared()
    assert not bad, '\n'.join(bad)

def test_the_check_can_fail(tmp_path, monkeypatch):
    "An undeclared import is caught (the check is not vacuous)."
    assert ('scipy', True) in imports(Path(tmp_path / 'm.py').write_text('import scipy.sparse as sp') and tmp_path / 'm.py')
    assert ('scipy', False) in imports(Path(tmp_path / 'n.py').write_text('def f():\n    import scipy') and tmp_path / 'n.py')
    assert not imports(Path(tmp_path / 'o.py').write_text('try: import scipy\nexcept ImportError: scipy = None') and tmp_path / 'o.py')
    assert 'scipy' not in declared('requirements')

"The book's conventions, checked: Colab badge and guarded install cell in every notebook, documented public API."
import dataclasses, importlib, inspect, json, pkgutil, re
from pathlib import Path
import pytest
import prunebook

NBS = sorted((Path(__file__).parent.parent / 'nbs').glob('*.ipynb'))

def cells(path): return json.loads(path.read_text())['cells']

@pytest.mark.parametrize('path', NBS, ids=lambda p: p.name)
def test_colab_badge_and_install_cell(path):
    cs = cells(path)
    badge = f'https://colab.research.google.com/github/prunebook/prunebook/blob/main/nbs/{path.name}'
    assert any(badge in ''.join(c['source']) for c in cs[:3] if c['cell_type'] == 'markdown'), f'{path.name}: no Colab badge to itself'
    code = [''.join(c['source']) for c in cs if c['cell_type'] == 'code']
    assert any('from fastcore.imports import IN_COLAB' in s for s in code), f'{path.name}: no IN_COLAB import'
    assert any(re.search(r'if IN_COLAB:\s*\n\s*%pip install', s) for s in code), f'{path.name}: no install cell guarded by IN_COLAB'

def public_api():
    for mod in pkgutil.iter_modules(prunebook.__path__):
        if mod.name.startswith('_'): continue
        m = importlib.import_module(f'prunebook.{mod.name}')
        for name in getattr(m, '__all__', []):
            obj = getattr(m, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == m.__name__: yield f'{mod.name}.{name}', obj

def undocumented(obj) -> list[str]:
    "Parameters of `obj` mentioned neither in its docstring nor in a docments comment."
    from fastcore.docments import docments
    f = obj.__init__ if inspect.isclass(obj) else obj
    try: params = [p for p in inspect.signature(f).parameters if p not in ('self', 'cls', 'args', 'kwargs')]
    except (TypeError, ValueError): return []
    doc = (obj.__doc__ or '') + (f.__doc__ or '' if f is not obj else '')
    try: comments = docments(obj if dataclasses.is_dataclass(obj) else f, full=False)   # a dataclass: its fields' comments
    except Exception: comments = {}
    return [p for p in params if p not in doc and not comments.get(p)]

@pytest.mark.parametrize('name,obj', list(public_api()), ids=lambda x: x if isinstance(x, str) else '')
def test_public_api_is_documented(name, obj):
    assert (obj.__doc__ or '').strip(), f'{name} has no docstring'
    missing = undocumented(obj)
    assert not missing, f'{name}: parameters {missing} are not documented (mention them in the docstring or add docments comments)'

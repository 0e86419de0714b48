"""Render README.md from nbs/index.ipynb without Quarto (nbdev_readme needs it): markdown cells as they are, code cells as
fenced Python with their text output, directives and hidden cells removed."""
import json, re
from pathlib import Path
root = Path(__file__).resolve().parent.parent
nb = json.loads((root / 'nbs' / 'index.ipynb').read_text())
out = []
for cell in nb['cells']:
    src = ''.join(cell['source'])
    if cell['cell_type'] == 'markdown':
        src = re.sub(r'\]\((\d\d_\w+|index)\.ipynb\)', r'](https://prunebook.github.io/prunebook/\1.html)', src)
        out.append(src); continue
    lines = src.splitlines()
    if any(l.strip() in ('#| hide', '#|hide') for l in lines): continue
    code = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
    if code: out.append(f'```python\n{code}\n```')
    text = ''.join(''.join(o.get('text', '')) for o in cell.get('outputs', []) if o.get('output_type') == 'stream')
    if text.strip(): out.append('```\n' + text.rstrip() + '\n```')
(root / 'README.md').write_text('\n\n'.join(out).strip() + '\n')
print('README.md written')

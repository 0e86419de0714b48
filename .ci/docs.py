"""Offline check of the docs site (Quarto cannot be installed here; the GitHub workflow builds the real site).

1. `nbdev_proc_nbs`: nbdev's own processing of every notebook (show_doc tables, directives), into `_proc/`.
   It only checks that a `quarto` executable exists before starting; a stub on PATH satisfies that check.
2. An HTML render of every processed notebook with nbconvert (MathJax for the math), into `_html/`,
   failing on any notebook that does not render or has a show_doc error.
3. With `--shots`, screenshots of every page with headless Chromium (`_html/*.png`), to look at.
Run: python .ci/docs.py [--shots]"""
import os, re, subprocess, sys, tempfile, shutil
from pathlib import Path

root = Path(__file__).resolve().parent.parent
os.chdir(root)

def proc_nbs():
    with tempfile.TemporaryDirectory() as stub:
        q = Path(stub) / 'quarto'
        q.write_text('#!/bin/sh\necho "quarto is not available offline" >&2\nexit 1\n'); q.chmod(0o755)
        env = {**os.environ, 'PATH': f'{stub}:{os.environ["PATH"]}'}
        subprocess.run(['nbdev_proc_nbs'], check=True, env=env)

def quarto_like(nb):
    "Approximate what Quarto shows: no frontmatter cell, no directive lines, no input where `echo: false`."
    nb.cells = [c for c in nb.cells if c.cell_type != 'raw']
    for c in nb.cells:
        if c.cell_type != 'code': continue
        if re.search(r'^#\|\s*echo:\s*false', c.source, re.M): c.metadata.setdefault('tags', []).append('remove_input')
        c.source = '\n'.join(l for l in c.source.splitlines() if not l.startswith('#|'))
        for o in c.get('outputs', []):
            md = o.get('data', {}).get('text/markdown')
            if md: o['data']['text/markdown'] = re.sub(r'\{(target|\.)[^}]*\}', '', md if isinstance(md, str) else ''.join(md))
    return nb

def render(shots: bool) -> list[str]:
    from nbconvert import HTMLExporter
    from traitlets.config import Config
    import nbformat
    out, failures = root / '_html', []
    out.mkdir(exist_ok=True)
    cfg = Config()
    cfg.TagRemovePreprocessor.remove_input_tags = {'remove_input'}
    cfg.TagRemovePreprocessor.enabled = True
    exporter = HTMLExporter(template_name='lab', config=cfg)
    try:                                            # MathJax from disk: there is no network here
        import jupyter_server_mathjax
        exporter.mathjax_url = (Path(jupyter_server_mathjax.__file__).parent / 'static' / 'MathJax.js').as_uri() + '?config=TeX-AMS-MML_HTMLorMML-full'
    except ImportError: print('jupyter_server_mathjax not installed: math will not render offline')
    for nb_path in sorted((root / '_proc').glob('*.ipynb')):
        try:
            nb = nbformat.read(nb_path, as_version=4)
            bad = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []) if o.get('output_type') == 'error']
            if bad: raise RuntimeError(f'{len(bad)} error output(s), first: {bad[0].get("ename")}: {bad[0].get("evalue")}')
            html, _ = exporter.from_notebook_node(quarto_like(nb))
            (out / f'{nb_path.stem}.html').write_text(html)
            print(f'rendered {nb_path.name}')
        except Exception as e:
            failures.append(f'{nb_path.name}: {type(e).__name__}: {e}'); print('FAILED', failures[-1])
    if shots: screenshots(out)
    return failures

def screenshots(out: Path):
    chrome = shutil.which('chromium') or shutil.which('chromium-browser')
    if not chrome: print('no chromium: skipping screenshots'); return
    for page in sorted(out.glob('*.html')):
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([chrome, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                            '--disable-background-networking', '--disable-component-update', '--disable-sync',
                            f'--user-data-dir={profile}', '--hide-scrollbars', '--virtual-time-budget=8000',
                            '--window-size=1280,4000', f'--screenshot={page.with_suffix(".png")}', page.as_uri()],
                           check=False, capture_output=True, timeout=120)
        print('screenshot', page.with_suffix('.png').name)

if __name__ == '__main__':
    proc_nbs()
    failures = render('--shots' in sys.argv)
    if failures: sys.exit('docs check failed:\n' + '\n'.join(failures))
    print('docs check passed')

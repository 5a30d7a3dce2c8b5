"""Every notebook that plots renders its plots in JupyterLab with nothing from the internet: a headless JupyterLab
(Debian's chromium) with every request that leaves the local server blocked and counted (zero allowed) opens each
plotting notebook as the notebook test run executed it (the executed copy in .velox/nbcache, issue 18; run here only
if the cache lacks it), trusted like a notebook the user ran, and each cell whose output is a Bokeh plot draws it:
BokehJS comes from the notebook's own `output_notebook(INLINE)` output, and the plot's canvas holds pixels.
Plots inside ipywidgets (jupyter_bokeh's BokehModel) need a live kernel: the dashboard's are run in JupyterLab by
tests/test_dash_jupyterlab.py."""
import json, os, shutil, time
from pathlib import Path
import pytest

from browser_util import ARGS, ARTIFACTS, CHROMIUM, ROOT, jupyter_lab
from test_offline_bokeh import SOURCES, code

pytestmark = pytest.mark.slow
BOKEH_EXEC = 'application/vnd.bokehjs_exec.v0+json'
FLAGS = 'slow kafka redis'  # as tests/run.sh runs the notebooks: the cache holds exactly these runs

# per code cell of the open notebook: does JupyterLab's model hold a Bokeh plot output, and the ink on its canvases
CELLS_JS = """() => {
  const app = window.jupyterapp, w = app && app.shell && app.shell.currentWidget, nb = w && w.content;
  if (!nb || !nb.widgets) return null;
  const ink = node => { const found = []; const walk = r => { for (const e of r.querySelectorAll('*')) {
      if (e.tagName === 'CANVAS' && e.width && e.height) found.push(e); if (e.shadowRoot) walk(e.shadowRoot); } };
    walk(node);
    return found.map(c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && (d[i] < 235 || d[i + 1] < 235 || d[i + 2] < 235)) n++; return n; }); };
  return {path: w.context.path, trusted: nb.widgets.every(c => c.model.type !== 'code' || c.model.trusted),
          cells: nb.widgets.filter(c => c.model.type === 'code').map(c => ({
            plot: c.model.outputs.toJSON().some(o => o.data && 'EXEC' in o.data), ink: ink(c.node)})),
          text: nb.node.innerText.includes('Javascript Error')};
}""".replace('EXEC', BOKEH_EXEC)


def plotting_notebooks():
    "The notebooks that load BokehJS (`output_notebook`): those that can show plots."
    return [p for p in SOURCES if p.suffix == '.ipynb' and 'output_notebook(' in code(p)]


@pytest.fixture(scope='module')
def executed(tmp_path_factory):
    "The plotting notebooks as executed (from the cache; run now those it lacks), copied under a lab root and trusted."
    pytest.importorskip('playwright', reason="pip install 'velox[browser]'")
    if not Path(CHROMIUM).exists(): pytest.skip(f'{CHROMIUM} missing: apt-get install chromium')
    from nbformat import read, sign
    from velox.face.nbcache import CacheKey, cached_notebook, test_notebooks
    here = os.getcwd()
    os.chdir(ROOT)
    try:
        t0, key = time.monotonic(), CacheKey.here(ROOT, ())
        results = test_notebooks(files=plotting_notebooks(), flags=FLAGS, reuse=True, quiet=True, key=key)
        ran = {f.relative_to(ROOT / 'nbs').as_posix(): r[2] for f, r in results.items()}
        assert all(r[0] for r in results.values()), {f.name: r for f, r in results.items() if not r[0]}
        tmp = tmp_path_factory.mktemp('lab')
        (tmp / 'notary').mkdir()
        notary = sign.NotebookNotary(data_dir=str(tmp / 'notary'))
        copies = {}
        for p in plotting_notebooks():
            rel = p.relative_to(ROOT / 'nbs').as_posix()
            dest = tmp / 'nbs' / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cached_notebook(ROOT, p, key), dest)
            notary.sign(read(dest, as_version=4))  # the user ran it: JupyterLab shows its scripts' outputs
            copies[rel] = sum(BOKEH_EXEC in o.get('data', {}) for c in json.loads(dest.read_text())['cells'] for o in c.get('outputs', []))
        print(f"\nexecuted notebooks ready in {time.monotonic() - t0:.1f} s: {ran}")
        return tmp, copies
    finally: os.chdir(here)


def test_every_plotting_notebook_renders_its_plots_in_jupyterlab_offline(executed):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout, sync_playwright
    tmp, copies = executed
    plots = {rel: n for rel, n in copies.items() if n}
    assert len(plots) >= 6, copies  # not vacuous: the research, report, backtest, ensemble, predict, risk... notebooks
    external, seen = [], {}
    with jupyter_lab(tmp / 'nbs', tmp, extra_args=[f'--NotebookNotary.data_dir={tmp / "notary"}']) as (base, token, log):
        local = base.split('//', 1)[1]
        def route(r):
            if r.request.url.split('//', 1)[-1].startswith(local): return r.continue_()
            external.append(r.request.url); r.abort()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                ctx = browser.new_context(viewport={'width': 1400, 'height': 1000})
                ctx.route('**/*', route)
                page = ctx.new_page()
                page.on('websocket', lambda ws: None if local in ws.url else external.append(ws.url))
                first = True
                for rel in plots:
                    t0 = time.monotonic()
                    if first: page.goto(f'{base}/lab/tree/{rel}?token={token}'); first = False
                    else: page.evaluate(f"() => window.jupyterapp.commands.execute('docmanager:open', {{path: {json.dumps(rel)}}}).then(() => null)")
                    try: page.wait_for_function(f"() => {{ const s = ({CELLS_JS})(); return s && s.path === {json.dumps(rel)} && "
                                                "s.cells.filter(c => c.plot).length > 0 && "
                                                "s.cells.filter(c => c.plot).every(c => c.ink.some(n => n > 500)); }", timeout=30_000)
                    except PlaywrightTimeout:  # the assertions below say what was missing
                        ARTIFACTS.mkdir(parents=True, exist_ok=True)
                        page.screenshot(path=str(ARTIFACTS / f"lab_offline_{rel.replace('/', '-')}.png"))
                    seen[rel] = (page.evaluate(CELLS_JS), round(time.monotonic() - t0, 1))
                    page.evaluate("async () => { const w = window.jupyterapp.shell.currentWidget; "
                                  "await w.sessionContext.shutdown(); w.dispose(); }")
                # the blocking is real: a request to the internet from the page is refused and counted
                probe = page.evaluate("() => fetch('https://cdn.bokeh.org/bokeh/release/bokeh-probe.min.js').then(() => 'loaded', e => 'blocked')")
            finally: browser.close()
    print('\n' + '\n'.join(f"{rel}: {sum(c['plot'] for c in s['cells'])} plot cell(s), {t} s: {[c['ink'] for c in s['cells'] if c['plot']]}"
                            for rel, (s, t) in seen.items()))
    for rel, (s, _) in seen.items():
        assert s['trusted'] and not s['text'], (rel, s)
        drawn = [c for c in s['cells'] if c['plot'] and any(n > 500 for n in c['ink'])]
        assert len(drawn) == sum(c['plot'] for c in s['cells']) >= 1, (rel, s)
    assert set(seen) == set(plots)
    assert probe == 'blocked' and external[-1:] == ['https://cdn.bokeh.org/bokeh/release/bokeh-probe.min.js'], (probe, external)
    assert external[:-1] == [], f'requests that would have left the machine: {external[:-1]}'

"""The dashboard notebook (nbs/guides/03_dashboard.ipynb) run by a real JupyterLab in headless chromium: every cell runs
through JupyterLab's own "run all cells" command, the ipywidgets replay control and the Bokeh components render
(ipywidgets and jupyter_bokeh front-end extensions active), and they update while the replays run — the control's
progress bar moves, and the live desk's replay status, tape and candles change in its Bokeh document (counted through
BokehJS, not pixels). Screenshots go to .velox/artifacts/dash/."""
import json, shutil, subprocess, sys, time
from pathlib import Path
import pytest

from browser_util import ARGS, ARTIFACTS, CHROMIUM, ROOT, jupyter_lab

pytestmark = pytest.mark.slow
NOTEBOOK = 'guides/03_dashboard.ipynb'

# the notebook panel's cells, read from JupyterLab's own models
CELLS_JS = """() => {
  const nb = window.jupyterapp.shell.currentWidget.content;
  const code = nb.widgets.filter(c => c.model.type === 'code');
  const outs = c => c.model.outputs.toJSON();
  return {code: code.length, ran: code.filter(c => c.model.executionCount).length,
          errors: code.flatMap(c => outs(c).filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue)),
          kernel: window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel?.status};
}"""

# every Bokeh document the page holds (one per displayed jupyter_bokeh widget), read through BokehJS
BOKEH_JS = """() => {
  if (!window.Bokeh) return {bokehjs: false, roots: 0};
  const docs = new Set();
  for (const v of Bokeh.index) docs.add(v.model.document);
  const find = n => { for (const d of docs) { const m = d.get_model_by_name(n); if (m) return [d, m]; } return [null, null]; };
  const [live, status] = find('replay_status');
  const m = n => live ? live.get_model_by_name(n) : null;
  return {bokehjs: true, roots: Bokeh.index.length ?? docs.size, docs: docs.size,
          status: status ? status.text : '', tape: m('tape_source') ? m('tape_source').get_length() : -1,
          candles: m('candles') ? m('candles').get_length() : -1, board: m('l1_source') ? m('l1_source').get_length() : -1};
}"""

# the ipywidgets replay control: its progress bar (percent of its width) and status line
WIDGETS_JS = """() => {
  const q = s => Array.from(document.querySelectorAll(s));
  const bar = q('.jupyter-widgets .progress-bar')[0];
  return {widgets: q('.jupyter-widgets').length, buttons: q('.widget-button').map(b => b.textContent.trim()),
          progress: bar ? parseFloat(bar.style.width || bar.style.height || '0') : -1,
          status: q('.widget-html-content').map(e => e.textContent).join(' | ')};
}"""


@pytest.fixture
def lab(tmp_path):
    "A JupyterLab server (from this venv) on a free port, serving a copy of the dashboard notebook."
    if not Path(CHROMIUM).exists(): pytest.skip(f'{CHROMIUM} missing: apt-get install chromium')
    pytest.importorskip('playwright', reason="pip install 'velox[browser]'")
    for m in ('jupyterlab', 'jupyter_bokeh', 'ipywidgets', 'ipykernel'):
        pytest.importorskip(m, reason="pip install 'velox[services]'")
    work = tmp_path / 'work'
    (work / 'nbs').mkdir(parents=True)
    (work / 'replay').symlink_to(ROOT / 'replay')  # the notebook reads '../../replay/data'
    nb = json.loads((ROOT / 'nbs' / NOTEBOOK).read_text())
    # the copy leaves out the cells the tests never run (`#| eval: false`: remaking the pictures)
    nb['cells'] = [c for c in nb['cells'] if not ''.join(c['source']).lstrip().startswith('#| eval: false')]
    (work / 'nbs' / NOTEBOOK).parent.mkdir(parents=True, exist_ok=True)
    (work / 'nbs' / NOTEBOOK).write_text(json.dumps(nb))
    with jupyter_lab(work / 'nbs', tmp_path) as (base, token, log):
        yield f'{base}/lab/tree/{NOTEBOOK}?token={token}', log


def test_dashboard_notebook_runs_in_jupyterlab_and_its_widgets_render_and_update(lab):
    from playwright.sync_api import sync_playwright
    url, log = lab
    extensions = subprocess.run([str(Path(sys.executable).parent / 'jupyter'), 'labextension', 'list'], capture_output=True,
                                text=True, timeout=60)
    listed = extensions.stdout + extensions.stderr
    for ext in ('@jupyter-widgets/jupyterlab-manager', '@bokeh/jupyter_bokeh'):
        assert ext in listed and 'enabled' in listed.split(ext, 1)[1].split('\n', 1)[0], listed
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={'width': 1600, 'height': 1200})
            page.goto(url)
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget && "
                                   "window.jupyterapp.shell.currentWidget.content && "
                                   "window.jupyterapp.shell.currentWidget.content.widgets.length > 5", timeout=60_000)
            page.evaluate("async () => { await window.jupyterapp.shell.currentWidget.sessionContext.ready; }")
            page.wait_for_function("() => window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel?.status === 'idle'",
                                   timeout=60_000)
            cells = page.evaluate(CELLS_JS)
            assert cells['code'] >= 15 and cells['ran'] == 0, cells
            t0 = time.monotonic()
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")  # not awaited: we watch it run

            widget_samples, bokeh_samples, lag = [], [], []
            while True:
                t = time.perf_counter()
                c, w, b = page.evaluate(f"() => [({CELLS_JS})(), ({WIDGETS_JS})(), ({BOKEH_JS})()]")  # one round-trip
                lag.append(time.perf_counter() - t)
                if w['progress'] >= 0: widget_samples.append(w['progress'])
                if b.get('status'): bokeh_samples.append(b)
                assert not c['errors'], c['errors']
                if c['ran'] == c['code'] and c['kernel'] == 'idle': break
                assert time.monotonic() - t0 < 150, f"notebook did not finish: {c}; lab log: {log.read_text()[-2000:]}"
                time.sleep(0.1)
            took = time.monotonic() - t0
            page.screenshot(path=str(ARTIFACTS / 'jupyterlab_dashboard_end.png'))
            final_w, final_b = page.evaluate(WIDGETS_JS), page.evaluate(BOKEH_JS)
            # scroll to the live desk and keep a picture of it
            page.evaluate("() => { const nb = window.jupyterapp.shell.currentWidget.content; "
                          "nb.widgets.find(c => c.model.sharedModel.getSource().includes('live.show()')).node.scrollIntoView(); }")
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / 'jupyterlab_live_desk.png'))
        finally: browser.close()

    statuses = [s['status'] for s in bokeh_samples]
    tapes = [s['tape'] for s in bokeh_samples]
    print(f"\nrun all cells in {took:.1f} s; evaluate round-trip max {max(lag) * 1000:.0f} ms; progress samples "
          f"{sorted(set(widget_samples))[:8]}…; live desk samples {len(bokeh_samples)}, distinct statuses "
          f"{len(set(statuses))}, tape rows {sorted(set(tapes))}; final widgets {final_w}; final bokeh {final_b}")
    # ipywidgets rendered: the replay control's buttons, its progress bar, and its status moved to the end
    assert {'start', 'stop'} <= set(final_w['buttons']) and final_w['widgets'] > 5
    assert final_w['progress'] == pytest.approx(100, abs=0.5) and 'events/s' in final_w['status']
    assert len(set(widget_samples)) >= 2, f'the progress bar never moved: {widget_samples}'
    # Bokeh roots rendered: BokehJS loaded, one document per displayed component plus the live page
    assert final_b['bokehjs'] and final_b['docs'] >= 5, final_b  # board, tape, candles, alerts, the live desk
    # the live desk updated while its replay ran: several statuses on the way, the tape filled, then finished
    assert final_b['status'].startswith('<b>finished') and final_b['tape'] == 100 and final_b['candles'] == 15, final_b
    assert any(s.startswith('<b>running') for s in statuses), statuses[:5]
    running = [s for s in bokeh_samples if s['status'].startswith('<b>running')]
    assert len({s['status'] for s in running}) >= 2, 'the replay status did not move while the replay ran'
    assert len({(s['tape'], s['candles']) for s in running + [final_b]}) >= 2, 'the tape and chart did not move'
    assert max(lag) < 10.0, f'page unresponsive: {max(lag):.2f} s for an evaluate round-trip'  # kernel and page share the CPU
    shutil.copy(ARTIFACTS / 'jupyterlab_live_desk.png', ARTIFACTS / 'jupyterlab.png')

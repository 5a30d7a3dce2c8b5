"""The built docs show results and search offline, in headless chromium with every request outside the site blocked
and counted: the research guide's page draws its Bokeh plots (BokehJS from the site's own _static/bokeh.js, pixels on
a canvas) and shows its tables; typing "outside NBBO" in the search box lists the research page, and its link opens
it. The API reference documents parameters. The site is the one tests/test_docs.py builds (built once per session)."""
from pathlib import Path
import pytest

from browser_util import ARGS, CHROMIUM
from test_docs import built_site

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason='chromium not installed: apt-get install -y chromium')]
RESEARCH_PAGE = 'guides-01_research.html'

# canvases anywhere in the page, inside Bokeh's shadow roots too, and how many of their pixels are drawn (not blank)
CANVAS_JS = """() => {
  const found = [];
  const walk = r => { for (const e of r.querySelectorAll('*')) { if (e.tagName === 'CANVAS') found.push(e); if (e.shadowRoot) walk(e.shadowRoot); } };
  walk(document);
  return found.map(c => {
    if (!c.width || !c.height) return 0;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let inked = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && (d[i] < 235 || d[i + 1] < 235 || d[i + 2] < 235)) inked++;
    return inked;
  });
}"""


@pytest.fixture(scope='module')
def browser():
    pytest.importorskip('playwright', reason="pip install 'velox[browser]'")
    from playwright.sync_api import sync_playwright
    out, pages, _ = built_site()
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield out, b
        b.close()


def open_page(browser, url):
    "A page whose requests outside file:// are blocked and counted, with its console errors collected."
    page = browser.new_page(viewport={'width': 1400, 'height': 1000})
    seen = {'external': [], 'errors': []}
    def route(r):
        seen['external'].append(r.request.url); r.abort()
    page.route('http*://**/*', route)
    page.on('console', lambda m: seen['errors'].append(m.text) if m.type == 'error' else None)
    page.on('pageerror', lambda e: seen['errors'].append(str(e)))
    page.goto(url, wait_until='load')
    return page, seen


def test_the_research_page_shows_a_rendered_plot_and_a_table(browser):
    out, b = browser
    page, seen = open_page(b, (out / RESEARCH_PAGE).as_uri())
    page.wait_for_function(f"() => ({CANVAS_JS})().some(n => n > 500)", timeout=30_000)  # a plot drawn
    inked = page.evaluate(CANVAS_JS)
    tables = page.locator('main table.dataframe')
    n_tables, rows = tables.count(), tables.first.locator('tbody tr').count()
    text = page.locator('main').inner_text()
    errors = list(seen['errors'])  # before the probe, whose refusal the console reports
    # the blocking is real: a request to the internet from the page is refused and counted
    probe = page.evaluate("() => fetch('https://cdn.bokeh.org/bokeh/release/bokeh-probe.min.js').then(() => 'loaded', e => 'blocked')")
    page.close()
    assert sum(n > 500 for n in inked) >= 2, inked  # the day's chart and the live replay's chart
    assert n_tables >= 1 and rows >= 3, (n_tables, rows)
    assert 'Javascript Error' not in text and 'BokehJS' not in text
    assert probe == 'blocked' and seen['external'] == ['https://cdn.bokeh.org/bokeh/release/bokeh-probe.min.js'], seen['external']
    assert errors == [], errors


def test_search_for_outside_nbbo_finds_the_research_page(browser):
    out, b = browser
    page, seen = open_page(b, (out / 'index.html').as_uri())
    page.fill('#velox-search', 'outside NBBO')
    page.wait_for_selector('#velox-results a.velox-hit')
    hits = page.eval_on_selector_all('#velox-results a.velox-hit', 'els => els.map(e => e.getAttribute("href"))')
    assert any(h.split('#')[0] == RESEARCH_PAGE for h in hits), hits
    page.locator(f'#velox-results a.velox-hit[href^="{RESEARCH_PAGE}"]').first.click()
    page.wait_for_load_state('load')
    assert page.url.split('#')[0].endswith(RESEARCH_PAGE) and 'outside the NBBO' in page.title() + page.locator('main h1').first.inner_text()
    page.fill('#velox-search', 'zzzz no such words')
    assert page.locator('#velox-results').inner_text() == 'no match'
    page.close()
    assert seen['external'] == [] and seen['errors'] == [], seen


def test_the_api_reference_documents_parameters():
    out, pages, _ = built_site()
    api = (out / 'api.html').read_text()
    config = api.split('id="velox-core-Config"')[1].split('class="api-item"')[0]
    # the comment on Config's `bus` field in nbs/00_core.ipynb, in the row of its parameter table
    assert '<td><code>bus</code></td><td>str</td><td>&#x27;memory://&#x27;</td><td>memory://, kafka://' in config
    assert api.count('class="api-params"') >= 200

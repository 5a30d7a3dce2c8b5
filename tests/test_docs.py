"""The documentation site builds offline (`velox docs build`) and every page renders in a headless browser
(Debian's chromium driven by Playwright; without Playwright, chromium --dump-dom) with its title, the
navigation, no console errors and no request that fails. In the whole suite (VELOX_WHOLE_SUITE=1) the build reuses
the notebooks the test run executed (`velox docs test`, .velox/nbcache) and every notebook page shows its outputs;
alone, only the research guide is executed (or taken from the cache) and the other pages are rendered from the cache
or as committed."""
import functools, json, os, re, shutil, subprocess, sys, tempfile
from html.parser import HTMLParser
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
ARGS = ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
        '--disable-sync', '--no-first-run']
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason='chromium not installed: apt-get install -y chromium')]


RESEARCH = 'nbs/guides/01_research.ipynb'
WHOLE_SUITE = bool(os.environ.get('VELOX_WHOLE_SUITE'))


def velox(*args):
    r = subprocess.run([sys.executable, '-m', 'velox.face.cli', *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


@functools.cache
def built_site():
    "The site, built once per test session (tests/test_docs_site.py reads the same one): (directory, pages.json, build output)."
    out = Path(tempfile.mkdtemp(prefix='velox-docs-')) / '_docs'
    if WHOLE_SUITE: said = velox('docs', 'build', '--out', str(out))  # runs only what the notebook test run did not cache
    else:
        velox('docs', 'test', '--path', RESEARCH, '--flags', 'slow kafka redis', '--reuse')
        said = velox('docs', 'build', '--out', str(out), '--no-execute')
    return out, json.loads((out / 'pages.json').read_text()), said


@pytest.fixture(scope='module')
def site():
    out, pages, _ = built_site()
    return out, pages


def test_the_site_has_a_page_per_notebook_a_getting_started_page_and_an_api_reference(site):
    out, pages = site
    files = {p['file'] for p in pages}
    nbs = [p for p in (ROOT / 'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts]
    assert len(files) == len(nbs) + 2 and {'index.html', 'api.html'} <= files
    assert all((out / f).exists() for f in files)
    for f in files:  # every internal link resolves, nothing is fetched from the network
        text = (out / f).read_text()
        assert not re.search(r'(?:src|href)="https?://', text), f
        for href in links(text):
            if not href.startswith(('http:', 'https:', 'mailto:', '#')): assert (out / href.split('#')[0]).exists(), (f, href)
    api = (out / 'api.html').read_text()
    assert 'velox.runtime.launcher' in api and 'fleet_start' in api and 'stage_worker' in api


def links(text):
    "The href of every <a> of a page."
    found = []
    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == 'a' and dict(attrs).get('href'): found.append(dict(attrs)['href'])
    P().feed(text)
    return found


def _check_with_playwright(out, pages):
    from playwright.sync_api import sync_playwright
    problems = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        errors = []
        page.on('console', lambda m: errors.append(f'console {m.type}: {m.text}') if m.type == 'error' else None)
        page.on('pageerror', lambda e: errors.append(f'page error: {e}'))
        page.on('requestfailed', lambda r: errors.append(f'request failed: {r.url}'))
        for p in pages:
            errors.clear()
            page.goto((out / p['file']).as_uri(), wait_until='load')
            if page.title() != f"{p['title']} · velox": problems.append(f"{p['file']}: title {page.title()!r}")
            if page.locator('nav.velox-nav a').count() != len(pages): problems.append(f"{p['file']}: navigation incomplete")
            if not page.locator('main h1').count(): problems.append(f"{p['file']}: no heading rendered")
            problems += [f"{p['file']}: {e}" for e in errors]
        browser.close()
    return problems


def _check_with_dump_dom(out, pages):
    problems = []
    for p in pages:
        r = subprocess.run([CHROMIUM, *ARGS, '--dump-dom', (out / p['file']).as_uri()], capture_output=True, text=True, timeout=120)
        if f"<title>{p['title']} · velox</title>" not in r.stdout.replace('&amp;', '&'): problems.append(f"{p['file']}: title missing")
        if 'velox-nav' not in r.stdout: problems.append(f"{p['file']}: navigation missing")
    return problems


def test_every_page_renders_in_headless_chromium_with_its_title_and_no_console_errors(site):
    out, pages = site
    try: import playwright  # noqa: F401
    except ImportError: problems = _check_with_dump_dom(out, pages)
    else: problems = _check_with_playwright(out, pages)
    assert not problems, '\n'.join(problems)


def test_every_notebook_page_shows_what_its_notebook_ran(site):
    "The pages show outputs (not code only): all of them in the whole suite, the research guide always."
    out, pages = site
    said = built_site()[2]
    research = next(p for p in pages if p['source'] == RESEARCH)
    assert research['executed'], research
    if not WHOLE_SUITE: pytest.skip('every page executed: checked in the whole suite, after the notebook test run')
    workers = {p['source'] for p in pages if p['source'].startswith('nbs/workers/')}  # skip_exec: run by papermill in tests/
    missing = [p['source'] for p in pages if p['source'] and p['source'] not in workers and not p['executed']]
    assert not missing, f"pages without outputs: {missing}\n{said}"
    print(f"\nbuild: {said.strip()}")  # 'executing N notebook(s)' would mean the test run's cache was not reused

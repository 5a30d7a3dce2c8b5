"""Nothing velox draws needs the internet: every notebook and exported module that shows Bokeh plots loads BokehJS
inline (`output_notebook(INLINE)`, `file_html(..., INLINE)`, `output_file(..., mode='inline')`), never from the CDN —
offline, a CDN load shows "Javascript Error: timeout" instead of the plot (issue 18)."""
import json, re
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(ROOT.glob('nbs/**/*.ipynb')) + sorted(p for p in (ROOT / 'velox').rglob('*.py') if p.name != '_modidx.py')
CALL = r'\b{}\s*\(([^()]*(?:\([^()]*\)[^()]*)*)\)'  # a call and its arguments (one level of nested parentheses)


def code(path:Path) -> str:
    "The code of a module, or of a notebook's code cells."
    if path.suffix == '.py': return path.read_text(encoding='utf-8')
    cells = json.loads(path.read_text(encoding='utf-8'))['cells']
    return '\n'.join(''.join(c['source']) for c in cells if c['cell_type'] == 'code')


def offline_problems(text:str) -> list[str]:
    "What in `text` would load BokehJS from the internet."
    out = [f'output_notebook({a})' for a in re.findall(CALL.format('output_notebook'), text) if 'INLINE' not in a]
    out += [f'output_file({a})' for a in re.findall(CALL.format('output_file'), text) if 'INLINE' not in a and "'inline'" not in a]
    out += [f'file_html({a})' for a in re.findall(CALL.format('file_html'), text) if 'INLINE' not in a]
    out += [f'CDN: {m}' for m in re.findall(r'from bokeh\.resources import [^\n]*\bCDN\b', text)]
    shows = re.search(r'from bokeh\.(?:io|plotting) import [^\n]*\bshow\b', text)
    if shows and not re.search(CALL.format('output_notebook').replace(r'([^()]', r'(INLINE[^()]'), text):
        out.append('bokeh show() without output_notebook(INLINE) (show() alone writes a page that loads BokehJS from the CDN)')
    return out


def test_the_check_finds_what_loads_bokehjs_from_the_internet():
    assert offline_problems("from bokeh.io import output_notebook, show\noutput_notebook(hide_banner=True)\nshow(p)")
    assert offline_problems("from bokeh.io import show\nshow(p)")
    assert offline_problems("from bokeh.resources import CDN\nfile_html(p, CDN, 't')")
    assert offline_problems("output_file('x.html')")
    assert not offline_problems("from bokeh.io import output_notebook, show\nfrom bokeh.resources import INLINE\n"
                                "output_notebook(INLINE, hide_banner=True)\nshow(p)")
    assert not offline_problems("output_notebook(resources=INLINE)\nfile_html(column(*f) if f else column(), INLINE, t)")


@pytest.mark.parametrize('path', SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_bokehjs_is_loaded_inline(path):
    assert not offline_problems(code(path)), f"{path.relative_to(ROOT)}: {offline_problems(code(path))}"


def test_the_plotting_notebooks_are_checked():
    "Not vacuous: the notebooks that plot are among the sources, each with its inline output_notebook."
    plotting = [p for p in SOURCES if 'output_notebook(' in code(p)]
    assert len(plotting) >= 10, [str(p) for p in plotting]

"""The package architecture, checked on the source: layers, no import cycles, module and constructor size limits.

The checker is tests/layers.py (the rules are in its docstring). The self-tests below plant small velox trees in
tmp_path, one violation each, to show the checker sees every kind of import it has to see and says where it is.
"""
from pathlib import Path

import pytest

from layers import check_layers, check_sizes

PACKAGE = Path(__file__).resolve().parent.parent / 'velox'


def test_the_package_tree_follows_the_layers_and_has_no_cycles():
    found = check_layers(PACKAGE)
    assert not found, f'{len(found)} layer violations and import cycles:\n' + '\n'.join(found)


def test_no_module_over_400_lines_and_no_constructor_over_8_parameters():
    found = check_sizes(PACKAGE)
    assert not found, f'{len(found)} size violations:\n' + '\n'.join(found)


# A clean tree that uses every allowed kind of import: relative, inside functions, behind TYPE_CHECKING, re-exports,
# import_module, plugin-table strings, a self-referencing logger name, strings that only mention a module.
FIELDS = ''.join(f'    f{i}: int = {i}\n' for i in range(12))
CLEAN = {
    'velox/__init__.py': '__version__ = "0.1.0"\n',
    'velox/core.py': 'import logging\n\nclass VeloxError(Exception): pass\n\n'
                     'def get_logger(name): return logging.getLogger(f"velox.{name}")\n',
    'velox/events.py': 'from .core import VeloxError\n\nPRICE_SCALE = 10_000\n',
    'velox/stage.py': 'from velox.events import PRICE_SCALE\nfrom velox import core\n\nclass Stage: pass\n\n'
                      'def run_frame(stage, frame): return frame\n',
    'velox/market/__init__.py': 'from .book import Book\n',
    'velox/market/book.py': '"The order book, drawn by velox.face.cli."\nfrom ..core import VeloxError\n\n'
                            'class Book:\n    def __init__(self, a, b, c, d, e, f, g, *, h): pass  # 8: at the limit\n',
    'velox/detect/__init__.py': '',
    'velox/detect/spread.py': 'from typing import TYPE_CHECKING\nfrom velox.market import Book\nfrom velox.stage import run_frame\n'
                              'if TYPE_CHECKING:\n    from velox.market.book import Book as B\n',
    'velox/detect/outside.py': 'from ..events import PRICE_SCALE\n',
    'velox/trade/__init__.py': '',
    'velox/trade/models.py': 'from dataclasses import dataclass\nfrom ..detect import outside\nfrom ..stage import Stage\n\n'
                             f'@dataclass\nclass Settings:\n{FIELDS}\n'
                             "_log = __import__('logging').getLogger('velox.trade.models')\n",
    'velox/feeds/__init__.py': '',
    'velox/feeds/recorded.py': "import importlib\n\nMODELS = importlib.import_module('velox.trade.models')\n"
                               "DEFAULT = 'velox.trade.models.Settings'\n",
    'velox/feeds/long.py': 'x = 1\n' * 400,  # at the limit
    'velox/infra/__init__.py': '',
    'velox/infra/bus.py': 'from velox.feeds import recorded\n\ndef publish(msg): return msg\n',
    'velox/runtime/__init__.py': '',
    'velox/runtime/x.py': 'from ..infra.bus import publish\n\ndef run_frame(frame): return publish(frame)\n',
    'velox/runtime/job.py': 'from . import x\n\ndef main():\n    import velox.infra.bus\n\n'
                            '    class Job:\n        def __init__(self, a, b, /, c, d, *args, e, **kwargs): pass\n'
                            '    return Job\n',
    'velox/face/__init__.py': '',
    'velox/face/cli.py': "PLUGINS = {'job': ('velox.runtime.job', 'run a job')}\nENTRY = 'velox.face.cli:main'\n\ndef main(): pass\n",
    # generated: names every module and is long, but is not checked
    'velox/_modidx.py': "d = {'velox.face.cli': ('velox.face.cli.main', 'velox/face/cli.py')}\n" + 'x = 1\n' * 450,
}


def plant(tmp_path: Path, files: dict[str, str]) -> Path:
    "Write the clean tree with `files` added or replaced; return its velox folder."
    for rel, text in {**CLEAN, **files}.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / 'velox'


def test_a_clean_tree_passes(tmp_path):
    package = plant(tmp_path, {})
    assert check_layers(package) == []
    assert check_sizes(package) == []


# (checker, files planted on the clean tree, fragments of each message expected: exactly those messages, no others)
PLANTED = {
    'market imports runtime at top level': (
        check_layers, {'velox/market/quotes.py': 'import numpy\nfrom velox.runtime.job import main\n'},
        [('velox/market/quotes.py:2 imports velox.runtime.job (main): market may import only core, events, state, stage',)]),
    'detect imports face inside a function': (
        check_layers, {'velox/detect/alerts.py': 'def show():\n    from velox.face import cli\n    return cli\n'},
        [('velox/detect/alerts.py:2 imports velox.face.cli (cli): detect may import only core, events, state, stage, market',
          'nothing outside face may import face')]),
    'market imports face behind TYPE_CHECKING and detect in a try block': (
        check_layers, {'velox/market/typed.py': 'from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from velox.face.cli import main\n'
                                                'try:\n    import velox.detect.spread\nexcept ImportError:\n    pass\n'},
        [('velox/market/typed.py:3 imports velox.face.cli (main): market may import only',),
         ('velox/market/typed.py:5 imports velox.detect.spread: market may import only',)]),
    'feeds imports infra by a relative import': (
        check_layers, {'velox/feeds/live.py': '"Live feed."\nfrom ..infra.bus import publish\n'},
        [('velox/feeds/live.py:2 imports velox.infra.bus (publish): feeds may import only', 'trade')]),
    'trade imports runtime with import_module': (
        check_layers, {'velox/trade/auto.py': "import importlib\n\ndef load():\n    return importlib.import_module('velox.runtime.job')\n"},
        [("velox/trade/auto.py:4 imports velox.runtime.job (importlib.import_module('velox.runtime.job')): trade may import only",)]),
    'infra names face in a plugin table': (
        check_layers, {'velox/infra/plugins.py': "PLUGINS = {\n    'cli': ('velox.face.cli', 'the command line'),\n}\n"},
        [("velox/infra/plugins.py:2 imports velox.face.cli (string 'velox.face.cli'): infra may import only",)]),
    'detect takes a runtime name re-exported by market': (
        check_layers, {'velox/market/__init__.py': 'from .book import Book\nfrom velox.runtime.x import run_frame\n',
                       'velox/detect/d.py': 'from velox.market import run_frame\n'},
        [('velox/market/__init__.py:2 imports velox.runtime.x (run_frame): market may import only',),
         ('velox/detect/d.py:1 imports velox.runtime.x (run_frame, re-exported by velox.market): detect may import only',)]),
    'three trade modules import each other in a cycle': (
        check_layers, {'velox/trade/a.py': 'from .b import B\n\nclass A: pass\n',
                       'velox/trade/b.py': 'from velox.trade.c import C\n\nclass B: pass\n',
                       'velox/trade/c.py': 'class C: pass\n\ndef make():\n    from . import a\n    return a.A()\n'},
        [('import cycle velox/trade/a.py -> velox/trade/b.py -> velox/trade/c.py -> velox/trade/a.py',
          'velox/trade/a.py:1 imports velox.trade.b (B)', 'velox/trade/b.py:1 imports velox.trade.c (C)',
          'velox/trade/c.py:4 imports velox.trade.a (a)')]),
    'modules outside the declared packages': (
        check_layers, {'velox/utils.py': 'def helper(): pass\n', 'velox/misc/x.py': 'from velox.core import VeloxError\n'},
        [('velox/utils.py', 'outside the declared packages'), ('velox/misc/x.py', 'outside the declared packages')]),
    'a 401-line module': (
        check_sizes, {'velox/market/long.py': 'x = 1\n' * 401},
        [('velox/market/long.py: 401 lines (limit 400)',)]),
    'a constructor with 7 parameters, *args and **kwargs': (
        check_sizes, {'velox/trade/worker.py': 'class Worker:\n    def __init__(self, a, b, /, c, d, *args, e, f, g, **kwargs): pass\n'},
        [('velox/trade/worker.py:2 class Worker: constructor takes 9 parameters (limit 8): group them in a settings dataclass',)]),
}


@pytest.mark.parametrize('check, files, expected', list(PLANTED.values()), ids=list(PLANTED))
def test_the_checker_reports_each_planted_violation(tmp_path, check, files, expected):
    found = check(plant(tmp_path, files))
    report = '\n'.join(found)
    assert len(found) == len(expected), report
    for fragments in expected:
        assert any(all(f in line for f in fragments) for line in found), f'{fragments} not in:\n{report}'

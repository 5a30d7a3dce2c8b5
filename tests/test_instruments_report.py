"""The run report on a symbol of another venue: the real ESU4 trades and mbp-1 quotes (tests/fixtures/vendor,
NautilusTrader test data, LGPL-3.0, originally from Databento; see its README), with the vendor's definitions in the
instrument registry, are drawn on Chicago time and the page says so; the wall-clock times derived with pandas."""
from pathlib import Path

import numpy as np
import pandas as pd

from velox.events import empty
from velox.feeds.databento import load_dbn, read_dbn
from velox.face.report import price_chart, write_report
from velox.runtime.job import Summary
from velox.runtime.runners import RunResult

from vendor_files import ES_MBP1 as MBP1, ES_TRADES as TRADES, es_registry


def es_day():
    reg = es_registry()
    tr = load_dbn(TRADES, reg)['trade']
    q = read_dbn(MBP1, reg).events['quote']
    nb = empty('nbbo', len(q))
    for c in ('ts', 'symbol', 'bid', 'bid_size', 'ask', 'ask_size'): nb[c] = q[c]
    return reg, tr, nb


def wall_ms(ts, tz):
    "Local wall-clock time as epoch ms of the naive datetime (what a Bokeh datetime axis shows), by pandas."
    return pd.to_datetime(ts, utc=True).tz_convert(tz).tz_localize(None).asi8 / 1e6


def test_an_es_chart_is_on_chicago_time_and_says_so():
    reg, tr, nb = es_day()
    fig = price_chart(tr, nb, None, symbol='ESU4', instruments=reg)
    assert fig.xaxis[0].axis_label == 'Chicago time (America/Chicago)'
    prints = fig.select_one({'name': 'prints:ESU4'}).data
    want = wall_ms(tr['ts'], 'America/Chicago')
    assert np.isin(np.asarray(prints['x']), want).all() and int(np.asarray(prints['n']).sum()) == len(tr)
    x = np.asarray(prints['x'])  # 18:58 to 19:02 Chicago on Monday 1 July (23:58-00:02 UTC, across UTC midnight)
    lo, hi = pd.Timestamp('2024-07-01 18:58').value // 10**6, pd.Timestamp('2024-07-01 19:02').value // 10**6
    assert lo <= x.min() and x.max() < hi


def test_the_report_page_names_the_chart_clock(tmp_path):
    reg, tr, nb = es_day()
    summ = Summary(['ESU4'], '2024-07-02', events={'trade': len(tr)})
    page = Path(write_report(tmp_path / 'r.html', summ, RunResult({'trade': tr, 'nbbo': nb}), instruments=reg)).read_text()
    assert 'charts: ESU4 in Chicago time (America/Chicago)' in page
    assert 'Chicago time (America/Chicago)' in page.split('charts:')[1]  # the axis label too

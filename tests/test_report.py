"""The `velox run` report never contradicts the run's numbers.

A full day and a window of IBM and BAC are run on embedded defaults into one output directory (so a store that
counted its whole table would show it), each report is written, and its charts are read back from the page — the
Bokeh document embedded in the HTML, as the browser receives it. Every count a chart carries is checked against the
run's summary (the dict and the printed text) and against a count made here with numpy/pandas from the recorded files
or the run's alert batch."""
import json, re, subprocess, sys
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from bokeh.document import Document
from bokeh.models import Plot
from velox.core import Config, ConfigError, clock_ns, day_start_ns, local_ms
from velox.events import TRADE_CONDITIONS
from velox.feeds.recorded import Catalog
from velox.face.report import report_path, write_report
from velox.runtime.job import run

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / 'replay' / 'data'
DAY, SYMBOLS = '2013-10-08', ['IBM', 'BAC']
WINDOWS = {'day': {}, 'window': {'start': '10:00', 'end': '10:30'}}
NY_AXIS = 'New York time (America/New_York)'


def read_report(path) -> Document:
    "The Bokeh document a report page embeds (its docs_json script), decoded as BokehJS would."
    page = Path(path).read_text(encoding='utf-8')
    scripts = re.findall(r'<script type="application/json" id="[^"]+">\s*(.*?)\s*</script>', page, re.S)
    assert len(scripts) == 1, f'{len(scripts)} document scripts in {path}'
    (doc_json,) = json.loads(scripts[0]).values()
    return Document.from_json(doc_json)


def source(doc:Document, name:str) -> dict:
    "The columns of the data source called `name`, as numpy arrays."
    found = list(doc.select({'name': name}))
    assert len(found) == 1, f'{len(found)} models named {name!r}'
    return {k: np.asarray(v) for k, v in found[0].data.items()}


def bars(doc:Document, name:str) -> dict:
    d = source(doc, name)
    return dict(zip(d['category'].tolist(), d['count'].tolist()))


def printed(text:str, title:str) -> dict:
    "A breakdown line of the printed summary (`by venue  D 886, K 163, ...`) as a dict."
    line = next(l for l in text.splitlines() if l.strip().startswith(title + ' '))
    items = line.strip()[len(title):].split(', ')
    return {k: int(v.replace(',', '')) for k, v in (i.strip().rsplit(' ', 1) for i in items)}


def span_ns(window:dict) -> tuple[int, int]:
    if not window: return day_start_ns(DAY), day_start_ns('2013-10-09')
    return clock_ns(DAY, window['start']), clock_ns(DAY, window['end'])


def pixel_column(x, start:float, end:float, width:int) -> np.ndarray:
    "The pixel column of each x when [start, end] is drawn `width` pixels wide (written here, not imported from the report)."
    return np.clip(((x - start) / (end - start) * width).astype(np.int64), 0, width - 1)


def recorded_trades(symbol:str, window:dict) -> np.ndarray:
    "The recorded trades of `symbol` in the window, cut here with plain numpy."
    (src,) = Catalog(DATA).find(symbol, DAY, kinds=('trade',))
    t, (lo, hi) = src.load(), span_ns(window)
    return t[(t['ts'] >= lo) & (t['ts'] < hi)]


@pytest.fixture(scope='module')
def out(tmp_path_factory):
    return tmp_path_factory.mktemp('reports')


@pytest.fixture(scope='module')
def runs(out):
    "The full day, then the window, into the same output directory and store; each with its report read back."
    cfg = Config.load(env={}, data_dir=str(DATA), out_dir=str(out))
    got = {}
    for name, window in WINDOWS.items():
        summ, res = run(cfg, SYMBOLS, DAY, progress=False, **window)
        summ.report = write_report(report_path(out, summ), summ, res)
        got[name] = (summ, res, read_report(summ.report), window)
    return got


@pytest.fixture(params=list(WINDOWS))
def one(request, runs): return runs[request.param]


def test_breakdown_charts_count_exactly_what_the_summary_prints(one):
    summ, res, doc, _ = one
    al = pd.DataFrame({k: res['alert'][k] for k in ('kind', 'symbol', 'venue', 'cond')})
    outside = al[al['kind'] == 'outside_nbbo']
    names = pd.Series([n for c in outside['cond'] for n in [f for i, f in enumerate(TRADE_CONDITIONS) if c >> i & 1] or ['(none)']])
    independent = {'by_kind': al['kind'].value_counts(), 'by_symbol': outside['symbol'].value_counts(),
                   'by_venue': outside['venue'].value_counts(), 'by_condition': names.value_counts()}
    text = summ.text()
    for key, title in (('by_symbol', 'by symbol'), ('by_venue', 'by venue'), ('by_condition', 'by condition')):
        chart = bars(doc, key)
        assert chart == summ.alerts[key] == printed(text, title) == independent[key].to_dict(), key
    assert bars(doc, 'by_kind') == summ.alerts['by_kind'] == independent['by_kind'].to_dict()
    assert sum(bars(doc, 'by_venue').values()) == summ.alerts['outside_nbbo'] == len(outside)
    assert sum(bars(doc, 'by_kind').values()) == summ.alerts['total'] == len(al)
    # the chart of all kinds and the outside-NBBO charts are not the same number, and their titles say which is which
    titles = {m.name: m.title.text for m in doc.select({'type': Plot}) if (m.name or '').startswith('chart:')}
    assert titles['chart:by_venue'] == f"outside-NBBO prints by venue · {len(outside):,}"
    assert titles['chart:by_kind'] == f"alerts by kind · {len(al):,}"


def test_price_chart_marks_every_alert_once_by_kind(one):
    summ, res, doc, window = one
    al = pd.DataFrame({k: res['alert'][k] for k in ('kind', 'symbol', 'ts')})
    counted = 0
    for (sym, kind), group in al.groupby(['symbol', 'kind']):
        marks = source(doc, f'alerts:{sym}:{kind}')
        assert len(marks['x']) == len(group), (sym, kind)
        assert sorted(marks['x'].tolist()) == sorted(local_ms(group['ts'].to_numpy()).tolist())
        counted += len(marks['x'])
        legend = [i.label.value for p in doc.select({'name': f'price:{sym}'}) for i in p.legend[0].items]
        assert f"{kind} · {len(group):,}" in legend
    assert counted == summ.alerts['total'] == len(al)


def test_prints_and_nbbo_account_for_every_event_of_the_run_and_nothing_outside_it(one):
    summ, res, doc, window = one
    lo, hi = local_ms(np.array(span_ns(window)))
    prints_total = nbbo_total = 0
    for sym in SYMBOLS:
        want = recorded_trades(sym, window)
        prints = source(doc, f'prints:{sym}')
        assert prints['n'].sum() == len(want), sym  # each dot says how many prints it stands for
        assert set(prints['price'].tolist()) == set((want['price'] / 1e8).tolist())  # every price printed is drawn
        nb = res['nbbo'][res['nbbo']['symbol'] == sym]
        line = source(doc, f'nbbo:{sym}')
        assert line['n'].sum() == len(nb), sym
        assert (line['bid'].min(), line['bid'].max(), line['ask'].min(), line['ask'].max()) == \
               (nb['bid'].min() / 1e8, nb['bid'].max() / 1e8, nb['ask'].min() / 1e8, nb['ask'].max() / 1e8)
        assert line['bid'][-1] == nb['bid'][-1] / 1e8 and line['ask'][-1] == nb['ask'][-1] / 1e8  # it ends where the NBBO ends
        # at the drawn width, every pixel column shows the lowest and highest bid and ask of all the updates in it
        fig = doc.select_one({'name': f'price:{sym}'})
        start, end = (fig.x_range.start, fig.x_range.end) if window else \
            (min(d['x'].min() for d in (prints, line)), max(d['x'].max() for d in (prints, line)))
        full = pd.DataFrame({'c': pixel_column(local_ms(nb['ts']), start, end, fig.width), 'bid': nb['bid'] / 1e8,
                             'ask': nb['ask'] / 1e8}).groupby('c')
        drawn = pd.DataFrame({'c': pixel_column(line['x'], start, end, fig.width), 'bid': line['bid'], 'ask': line['ask']}).groupby('c')
        for f in ('bid', 'ask'):
            pd.testing.assert_series_equal(drawn[f].min(), full[f].min()); pd.testing.assert_series_equal(drawn[f].max(), full[f].max())
        for d in (prints, line): assert lo <= d['x'].min() and d['x'].max() < hi
        prints_total, nbbo_total = prints_total + len(want), nbbo_total + len(nb)
    assert summ.events['trade'] == prints_total
    assert summ.nbbo['updates'] == nbbo_total


def test_candles_draw_every_alert_and_only_the_run_span(one):
    summ, res, doc, window = one
    lo, hi = local_ms(np.array(span_ns(window)))
    for sym in SYMBOLS:
        mine = res['alert'][res['alert']['symbol'] == sym]
        marks = source(doc, f'candle_alerts:{sym}')
        assert len(marks['x']) == len(mine)  # no "last 500": IBM's alerts do not start at 14:00
        assert marks['x'].min() == local_ms(mine['ts']).min()
        candles = source(doc, f'candles:{sym}')
        assert lo <= candles['x'].min() and candles['x'].max() < hi
        (title,) = [p.title.text for p in doc.select({'type': Plot}) if p.title and p.title.text.startswith(f'{sym} · 5m')]
        assert title == f"{sym} · 5m · {len(candles['x']):,} candles · {len(mine):,} alerts"


def test_every_time_axis_and_the_summary_name_the_exchange_time_zone(one):
    summ, res, doc, _ = one
    plots = [p for p in doc.select({'type': Plot}) if type(p.xaxis[0]).__name__ == 'DatetimeAxis']
    assert len(plots) == 4 * len(SYMBOLS)  # per symbol: prints vs NBBO; candles, volume, RSI
    assert [p.xaxis[0].axis_label for p in plots] == [NY_AXIS] * len(plots)
    text = summ.text()
    assert f'times are {NY_AXIS}' in text
    for line in (l for l in text.splitlines() if l.strip().startswith('L1 ')):
        assert re.search(r' at \d\d:\d\d:\d\d\.\d{3}$', line), line  # exchange time, not an ISO UTC stamp


def test_a_window_counts_only_its_own_events_and_stored_rows(runs):
    summ, res, _, window = runs['window']
    want = {s: recorded_trades(s, window) for s in SYMBOLS}
    n_trades = sum(len(t) for t in want.values())
    assert summ.events['trade'] == n_trades
    assert summ.stored == {'trade': n_trades, 'alert': len(res['alert'])}  # not the table's total after the full day
    day = runs['day'][0]
    assert day.stored['trade'] == sum(len(recorded_trades(s, {})) for s in SYMBOLS) > n_trades
    assert summ.text().splitlines()[0] == 'velox run · IBM, BAC · 2013-10-08 10:00–10:30 · in-process replay'


def test_reports_are_named_by_symbols_date_and_window_and_do_not_overwrite_each_other(runs, out):
    day, window = runs['day'][0].report, runs['window'][0].report
    assert Path(day).name == 'report-IBM_BAC-2013-10-08.html'
    assert Path(window).name == 'report-IBM_BAC-2013-10-08-1000-1030.html'
    cfg = Config.load(env={}, data_dir=str(DATA), out_dir=str(out))
    summ, res = run(cfg, ['IBM'], DAY, start='10:30', end='11:00', progress=False)
    later = write_report(report_path(out, summ), summ, res)
    assert Path(later).name == 'report-IBM-2013-10-08-1030-1100.html'
    for p, first in ((day, runs['day'][0].text()), (window, runs['window'][0].text()), (later, summ.text())):
        assert Path(p).exists() and first.splitlines()[0] in Path(p).read_text(encoding='utf-8')


def test_a_window_that_ends_before_it_starts_is_refused_in_one_line_and_writes_nothing(tmp_path):
    cfg = Config.load(env={}, data_dir=str(DATA), out_dir=str(tmp_path / 'api'))
    with pytest.raises(ConfigError, match=r'--end 10:00 is not after --start 10:30'):
        run(cfg, ['IBM'], DAY, start='10:30', end='10:00', progress=False)
    assert not (tmp_path / 'api').exists()
    r = subprocess.run([sys.executable, '-m', 'velox.face.cli', 'run', '--out-dir', str(tmp_path / 'cli'), '--no-progress',
                        '--start', '10:30', '--end', '10:00'], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'not after --start 10:30' in r.stderr, r.stderr
    assert not list(tmp_path.glob('cli/report-*.html'))


def test_a_trading_run_counts_the_rows_it_stored_of_every_kind_all_stamped_in_its_window(tmp_path):
    """A window starts warm and emits only what is stamped in [--start, --end) (issue 16): predictions and signals
    included (a bar closing at --end is stamped at --end, so it is the next window's); each kind stored is counted."""
    import shutil
    from velox.trade.registry import ModelRegistry
    reg = ModelRegistry(shutil.copytree(ROOT / 'tests' / 'fixtures' / 'pre_layers' / 'registry', tmp_path / 'registry'))
    reg.migrate()
    cfg = Config.load(env={}, data_dir=str(DATA), out_dir=str(tmp_path / 'out'))
    window = {'start': '10:00', 'end': '10:30'}
    summ, res = run(cfg, SYMBOLS, DAY, progress=False, models=str(reg.root), **window)
    lo, hi = span_ns(window)
    assert all(len(res[k]) for k in ('prediction', 'signal'))
    assert all(((res[k]['ts'] >= lo) & (res[k]['ts'] < hi)).all() for k in res.outputs if k != 'trade'), 'a row outside the window'
    assert summ.warm > 0 and summ.events == {k: sum(int(((b := s.load())['ts'] >= lo).sum() - (b['ts'] >= hi).sum())
                                                    for s in res.sources if s.kind == k) for k in ('quote', 'trade')}
    for kind, n in summ.stored.items():
        want = sum(len(recorded_trades(s, window)) for s in SYMBOLS) if kind == 'trade' else \
            len(np.unique(res[kind]['id'])) if kind in res.outputs else 0
        assert n == want, (kind, n, want)


# the outside-NBBO explanations of issue 19, written here from the condition names (first reason wins, in this order)
REASONS = {'negotiated': {'DerivativelyPriced', 'StoppedStock', 'Acquisition', 'Bunched', 'StockOption', 'Distribution',
                          'AveragePrice', 'PriceVariation', 'PriorReferencePrice'},
           'auction': {'OpeningPrints', 'ClosingPrints', 'ReOpeningPrints', 'Cross', 'OfficialClose', 'OfficialOpen'},
           'late': {'Sold', 'OutOfSequence'}, 'settlement': {'Cash', 'NextDay', 'Seller'},
           'extended_hours': {'FormT', 'ExtendedHours'}, 'odd_lot': {'OddLot'},
           'sweep': {'IntermarketSweep', 'TradeThroughExempt'}}


def test_explained_and_retail_midpoint_other_splits_add_up_to_the_totals(one):
    "Summary dict, printed text and report charts agree with a pandas count, and each split adds up to its total."
    summ, res, doc, _ = one
    a, text = res['alert'], summ.text()
    out = a[a['kind'] == 'outside_nbbo']
    names = [{f for i, f in enumerate(TRADE_CONDITIONS) if int(c) >> i & 1} for c in out['cond']]
    why = pd.Series([next((r for r, ns in REASONS.items() if n & ns), 'unexplained') for n in names])
    ref = why.value_counts().to_dict()
    s = summ.alerts
    assert s['explained'] + s['unexplained'] == s['outside_nbbo'] == len(out)
    assert {**s['explained_by'], 'unexplained': s['unexplained']} == ref == bars(doc, 'explained')
    assert printed(text, 'explained by') == s['explained_by']
    assert sum(v['unexplained'] for v in s['unexplained_by_venue'].values()) == s['unexplained']
    un = pd.Series(out['venue'])[why.to_numpy() == 'unexplained'].value_counts().to_dict()
    assert {v: d['unexplained'] for v, d in s['unexplained_by_venue'].items() if d['unexplained']} == un

    def split(x):  # retail: a sub-penny away from .4-.6 cent; midpoint: exactly at the NBBO mid; else other
        df = pd.DataFrame({k: x[k] for k in ('price', 'bid', 'ask', 'off_exchange')})
        df = df[df['off_exchange']]
        z = (df['price'] % 10**6) / 10**6
        mid = (df['bid'] > 0) & (df['ask'] >= df['bid']) & (2 * df['price'] == df['bid'] + df['ask'])
        retail = ~mid & (((z > 0) & (z < 0.4)) | (z > 0.6))
        return {'retail': int(retail.sum()), 'midpoint': int(mid.sum()), 'other': int((~mid & ~retail).sum())}
    dark = a[a['kind'] == 'dark_print']
    assert s['off_exchange_split'] == split(out) == bars(doc, 'off_exchange_split') == printed(text, 'off-exchange')
    assert sum(s['off_exchange_split'].values()) == s['off_exchange'] == int(out['off_exchange'].sum())
    assert s['dark_print_split'] == split(dark) == bars(doc, 'dark_print_split') == printed(text, 'dark prints')
    assert sum(s['dark_print_split'].values()) == len(dark) > 0


def test_off_exchange_volume_split_adds_up_and_equals_pandas(one):
    "The off-exchange volume line: retail + midpoint + other = off-exchange shares, as pandas counts them (merge_asof)."
    summ, res, doc, window = one
    ov = summ.alerts['off_exchange_volume']
    want = dict.fromkeys(('volume', 'retail', 'midpoint', 'other'), 0.0)
    for sym in SYMBOLS:
        t = pd.DataFrame({k: recorded_trades(sym, window)[k] for k in ('ts', 'price', 'size', 'venue', 'suspicious')})
        t = t[(t['size'] > 0) & ~t['suspicious']].sort_values('ts', kind='stable')
        nb = res['nbbo'][res['nbbo']['symbol'] == sym]
        q = pd.DataFrame({'ts': nb['ts'], 'bid': nb['bid'], 'ask': nb['ask']})
        m = pd.merge_asof(t, q, on='ts', direction='backward')  # the last NBBO at or before the print
        m[['bid', 'ask']] = m[['bid', 'ask']].fillna(0)
        off = m['venue'].isin(['D', 'ADF', 'TRF', 'MW'])
        z = (m['price'] % 10**6) / 10**6
        mid = off & (m['bid'] > 0) & (m['ask'] >= m['bid']) & (2 * m['price'] == m['bid'] + m['ask'])
        retail = off & ~mid & (((z > 0) & (z < 0.4)) | (z > 0.6))
        want['volume'] += m['size'].sum()
        for k, sel in (('retail', retail), ('midpoint', mid), ('other', off & ~mid & ~retail)): want[k] += m.loc[sel, 'size'].sum()
    assert {k: ov[k] for k in want} == pytest.approx(want)
    assert ov['retail'] + ov['midpoint'] + ov['other'] == pytest.approx(ov['off_exchange']) and 0 < ov['off_exchange'] < ov['volume']
    line = next(l for l in summ.text().splitlines() if l.strip().startswith('off-exchange vol'))
    assert f"of {ov['volume']:,.0f} shares" in line and f"midpoint {ov['midpoint'] / ov['volume']:.1%}" in line
    assert line.strip() in Path(summ.report).read_text(encoding='utf-8')

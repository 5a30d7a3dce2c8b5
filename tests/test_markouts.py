"""Markouts (`velox.detect.markouts`) on the real IBM day of 2013-10-08.

The alert markouts and the baseline markouts equal an independent pandas computation (`merge_asof` on the Lean quote
file's own NBBO, read with plain csv/zipfile in `tests/reference.py`, alerts from the pandas outside-NBBO reference);
horizons past the 16:00 close are dropped; repeating every alert ten times leaves every confidence interval as it was;
and the matched baseline of an alert does not change when anything after the alert's time changes."""
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from reference import midnight_ns, outside_nbbo_pandas, raw_rows
from velox.core import NS
from velox.detect.markouts import markouts
from velox.detect.params import detect_stage
from velox.feeds.recorded import Catalog
from velox.runtime.runners import run_frame

DATA = Path(__file__).resolve().parent.parent / 'replay' / 'data'
LEAN = DATA / 'lean/equity/usa/tick/ibm'
DAY = '2013-10-08'
H = {'1s': 1, '10s': 10, '1m': 60, '5m': 300}
T0 = midnight_ns(DAY)
OPEN, CLOSE = T0 + int(9.5 * 3600) * NS, T0 + 16 * 3600 * NS


@pytest.fixture(scope='module')
def day():
    "velox's NBBO and alerts of IBM that day, the pandas reference alerts and the quote file's mid (pandas)."
    q, tr = (s.load() for s in Catalog(DATA).find('IBM', DAY))
    res = run_frame(detect_stage(None), {'quote': q, 'trade': tr}, collect=('nbbo', 'alert'))
    ref = outside_nbbo_pandas(LEAN / '20131008_trade.zip', LEAN / '20131008_quote.zip', DAY)
    ref_alerts = pd.DataFrame({'ts': ref['ts'], 'symbol': 'IBM', 'kind': 'outside_nbbo',
                               'side': np.where(ref['price'] > ref['ask'], 1, -1)})
    qf = pd.DataFrame(raw_rows(LEAN / '20131008_quote.zip')).iloc[:, :5].astype('int64')
    qf.columns = ['ms', 'bid', 'bid_size', 'ask', 'ask_size']
    qf['bid'] = qf['bid'].where((qf['bid'] != 0) | (qf['bid_size'] != 0)).ffill().fillna(0)
    qf['ask'] = qf['ask'].where((qf['ask'] != 0) | (qf['ask_size'] != 0)).ffill().fillna(0)
    qf = qf[(qf['bid'] > 0) & (qf['ask'] > 0) & (qf['bid'] <= qf['ask'])]
    mid = qf.groupby('ms', as_index=False).last().assign(ts=lambda d: T0 + d['ms'] * 10**6, mid=lambda d: (d['bid'] + d['ask']) / 2)
    return res['nbbo'], res['alert'], ref_alerts, mid[['ts', 'mid']]


def pandas_markouts(ts, side, mid:pd.DataFrame) -> pd.DataFrame:
    "Signed forward mid returns (bps) by merge_asof: the mid in force at t and at t + h; NaN past the close."
    ev = pd.DataFrame({'ts': np.asarray(ts, 'i8'), 'side': np.asarray(side, 'f8'), 'row': range(len(ts))})
    at = lambda x: pd.merge_asof(pd.DataFrame({'ts': x}).reset_index().sort_values('ts'), mid, on='ts').sort_values('index')['mid'].to_numpy()
    m0 = at(ev['ts'])
    out = {}
    for h, s in H.items():
        m1 = at(ev['ts'] + s * NS)
        ok = (ev['ts'] >= OPEN) & (ev['ts'] < CLOSE) & (ev['ts'] + s * NS <= CLOSE)
        out[f'm_{h}'] = np.where(ok, ev['side'] * (m1 / m0 - 1) * 1e4, np.nan)
    return pd.DataFrame(out)


def same(got, want):
    got, want = np.asarray(got, 'f8'), np.asarray(want, 'f8')
    assert (np.isnan(got) == np.isnan(want)).all()
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=0, atol=1e-9)


def test_alert_and_baseline_markouts_equal_pandas_merge_asof_on_the_real_day(day):
    nbbo, _, ref_alerts, mid = day
    mk = markouts(ref_alerts, nbbo, n_random=5)
    cols = [f'm_{h}' for h in H]
    want = pandas_markouts(mk.alerts['ts'], mk.alerts['side'], mid)
    same(mk.alerts[cols], want[cols])
    assert (~np.isnan(mk.alerts[cols].to_numpy())).sum() > 4 * 300  # not vacuous: hundreds of alerts marked out
    same(mk.baseline[cols], pandas_markouts(mk.baseline['ts'], mk.baseline['side'], mid)[cols])
    assert len(mk.baseline) > 1000 and mk.baseline['m_5m'].notna().mean() > 0.99
    tab = mk.table().set_index('horizon')
    for h in H:  # the table's means are the means of the pandas markouts
        assert tab.loc[h, 'mean_bps'] == pytest.approx(want[f'm_{h}'].mean(), abs=1e-9)


def test_horizons_that_run_past_the_close_are_dropped(day):
    nbbo, _, _, mid = day
    clock = ['15:54:00', '15:55:00', '15:58:30', '15:59:55', '15:59:59', '15:59:59.500', '16:00:00', '09:29:00']
    ts = [int(pd.Timestamp(f'{DAY} {c}', tz='America/New_York').value) for c in clock]
    al = pd.DataFrame({'ts': ts, 'symbol': 'IBM', 'kind': 'test', 'side': 1})
    got = markouts(al, nbbo).alerts.set_index('ts').loc[ts, [f'm_{h}' for h in H]]
    kept = np.array([[t + s * NS <= CLOSE and OPEN <= t < CLOSE for s in H.values()] for t in ts])
    assert kept.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0] * 4, [0] * 4, [0] * 4]
    assert (got.notna().to_numpy() == kept).all()
    same(got, pandas_markouts(ts, [1] * len(ts), mid))


def test_repeating_every_alert_ten_times_does_not_narrow_the_intervals(day):
    nbbo, alerts, _, _ = day
    one = markouts(alerts, nbbo).table()
    ten = markouts(np.repeat(alerts, 10), nbbo).table()
    assert (ten['n'] == 10 * one['n']).all() and (ten['bursts'] == one['bursts']).all()
    for c in ['mean_bps', 'lo_bps', 'hi_bps', 'base_mean_bps', 'base_lo_bps', 'base_hi_bps']:
        np.testing.assert_allclose(ten[c], one[c], rtol=0, atol=1e-9)
    assert one['lo_bps'].notna().all()
    # the property has teeth: with every alert its own cluster (no bursts), the repeats would narrow the interval
    naive1, naive10 = markouts(alerts, nbbo, burst_s=0).table(), markouts(np.repeat(alerts, 10), nbbo, burst_s=0).table()
    assert ((naive10['hi_bps'] - naive10['lo_bps']) < 0.5 * (naive1['hi_bps'] - naive1['lo_bps'])).all()


@pytest.mark.parametrize('seed', range(4))
def test_the_baseline_of_an_alert_uses_nothing_after_its_time(day, seed):
    "Property: change the NBBO after a random cut and add alerts after it; nothing of the alerts before it changes."
    nbbo, alerts, _, _ = day
    rng = np.random.default_rng(seed)
    cut = int(rng.integers(OPEN + 900 * NS, CLOSE))
    changed = nbbo.copy()
    after = changed['ts'] > cut
    f = rng.uniform(0.9, 1.1, after.sum())
    changed['bid'][after] = (changed['bid'][after] * f).astype('i8')
    changed['ask'][after] = (changed['ask'][after] * f).astype('i8') + 10**6
    extra = alerts[alerts['ts'] > cut][: int(rng.integers(1, 50))].copy()
    extra['ts'] = cut + 1 + rng.integers(0, CLOSE - cut, len(extra))
    before, later = markouts(alerts, nbbo, seed=seed), markouts(np.concatenate([alerts, extra]), changed, seed=seed)
    keep = lambda b, a: b[a['ts'].to_numpy()[b['alert'].to_numpy()] <= cut].reset_index(drop=True)
    b0, b1 = keep(before.baseline, before.alerts), keep(later.baseline, later.alerts)
    assert len(b0) > 0
    b0 = b0.assign(at=before.alerts['ts'].to_numpy()[b0['alert']]).sort_values(['at', 'ts'], kind='stable', ignore_index=True)
    b1 = b1.assign(at=later.alerts['ts'].to_numpy()[b1['alert']]).sort_values(['at', 'ts'], kind='stable', ignore_index=True)
    assert b0['ts'].tolist() == b1['ts'].tolist()  # the same matched times
    same(b1[[f'm_{h}' for h in H]], b0[[f'm_{h}' for h in H]])  # and the same baseline markouts
    assert (b0['ts'] + 300 * NS <= b0['at']).all()  # every baseline markout ends by its alert's time


def test_the_reports_markout_charts_show_the_numbers_of_markouts(tmp_path):
    "`velox run`'s report on the default day: each horizon's chart holds exactly `markouts()`'s table, alerts and baseline."
    import json, re
    from bokeh.document import Document
    from velox.core import Config
    from velox.face.report import report_path, write_report
    from velox.runtime.job import run
    summ, res = run(Config.load(env={}, data_dir=str(DATA), out_dir=str(tmp_path)), ['IBM', 'BAC'], DAY, progress=False)
    page = Path(write_report(report_path(tmp_path, summ), summ, res)).read_text(encoding='utf-8')
    (doc_json,) = json.loads(re.findall(r'<script type="application/json" id="[^"]+">\s*(.*?)\s*</script>', page, re.S)[0]).values()
    doc = Document.from_json(doc_json)
    tab = markouts(res['alert'], res['nbbo']).table()
    assert set(tab['kind']) == set(res['alert']['kind'].tolist()) and len(tab) == 4 * len(set(tab['kind']))
    for h in H:
        (src,) = doc.select({'name': f'markouts:{h}'})
        got = pd.DataFrame({k: src.data[k] for k in ('kind', 'sample', 'n', 'mean', 'lo', 'hi')})
        t = tab[tab['horizon'] == h]
        for sample, pre in (('alerts', ''), ('baseline', 'base_')):
            g = got[got['sample'] == sample].set_index('kind').loc[t['kind']]
            assert g['n'].tolist() == t[pre + 'n'].tolist()
            for k in ('mean', 'lo', 'hi'):
                np.testing.assert_allclose(g[k].astype(float), t[f'{pre}{k}_bps'], rtol=0, atol=1e-9)

"""The desk's markouts panel (`velox.face.market_panels.MarkoutsPanel`) on a real window: IBM 2013-10-08 10:00-10:30,
quotes and trades through the detect stage, its NBBO and alerts fed to the panel a minute at a time in time order.

After each refresh the panel's table is `velox.detect.markouts.markouts` computed directly on everything fed so far (so
each alert counts only at the horizons already past the latest NBBO time); the alerts a horizon still waits for are
counted as pending, and a horizon no alert has reached yet reads 'pending'. The panel holds only the updates that change
the mid, and with `keep_alerts` only the newest alerts."""
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from velox.core import NS, clock_ns
from velox.detect.markouts import horizon_ns, markouts
from velox.detect.params import detect_stage
from velox.face.market_panels import MarkoutsPanel
from velox.feeds.recorded import Catalog
from velox.runtime.runners import run_frame

DATA = Path(__file__).resolve().parent.parent / 'replay' / 'data'
DAY = '2013-10-08'
T0 = clock_ns(DAY, '10:00')
T1 = T0 + 1800 * NS
H = horizon_ns()


@pytest.fixture(scope='module')
def window():
    "velox's NBBO and alerts of IBM, 10:00-10:30 that day."
    q, tr = (s.load() for s in Catalog(DATA).find('IBM', DAY))
    cut = lambda a: a[(a['ts'] >= T0) & (a['ts'] < T1)]
    res = run_frame(detect_stage(None), {'quote': cut(q), 'trade': cut(tr)}, collect=('nbbo', 'alert'))
    nb, al = res['nbbo'], res['alert']
    assert len(al) > 20 and len(nb) > 1000 and (np.diff(nb['ts']) >= 0).all()
    return nb, al


def fed_in_minutes(panel, nb, al, check):
    "Feed `panel` a minute at a time (NBBO, then the alerts of that minute); after each, refresh and `check(upto)`."
    for upto in range(T0 + 60 * NS, T1 + 1, 60 * NS):
        for kind, b in (('nbbo', nb), ('alert', al)):
            panel.feed(kind, b[(b['ts'] >= upto - 60 * NS) & (b['ts'] < upto)])
        panel.refresh(force=True)
        check(upto)


def test_markouts_panel_shows_markouts_of_what_was_fed_with_unpassed_horizons_pending(window):
    nb, al = window
    panel, checked = MarkoutsPanel(), []
    def check(upto):
        n, a = nb[nb['ts'] < upto], al[al['ts'] < upto]
        if not len(a): return
        want = markouts(a, n).table()
        got = panel.table
        pd.testing.assert_frame_equal(got[want.columns], want, check_exact=False, rtol=1e-12, atol=1e-12)
        last = int(n['ts'][(n['bid'] > 0) & (n['ask'] > 0) & (n['bid'] <= n['ask'])].max())
        for r in got.itertuples():
            ts = a['ts'][a['kind'] == r.kind]
            assert r.pending == int((ts + H[r.horizon] > last).sum())
            assert r.n <= int((ts + H[r.horizon] <= last).sum())  # only horizons already past the latest NBBO count
        src = panel.source.data
        assert src['n'] == got['n'].tolist() and src['pending'] == got['pending'].tolist()
        for w, m, x in zip(((got['n'] == 0) & (got['pending'] > 0)).tolist(), src['mean'], got['mean_bps']):
            assert m == ('pending' if w else '' if np.isnan(x) else f"{x:+.2f}")
        checked.append((upto, got))
    fed_in_minutes(panel, nb, al, check)
    assert len(checked) >= 25
    # early on, no alert is 5 minutes old yet: that horizon is pending, the shorter ones have counts
    upto, first = checked[0]
    assert upto < T0 + 5 * 60 * NS
    five = first[first['horizon'] == '5m']
    assert (five['n'] == 0).all() and (five['pending'] > 0).any()
    assert (first[first['horizon'] == '1s']['n'] > 0).any()
    # at the end the 5m markouts of the window's first 25 minutes are known and those of the last alerts still pending
    _, end = checked[-1]
    five = end[end['horizon'] == '5m']
    assert five['n'].sum() > 0 and five['pending'].sum() > 0
    assert '(New York)' in panel.status.text and 'pending' in panel.status.text and '5m' in panel.status.text
    assert panel.points.data['x'] and all(f in panel.chart.x_range.factors for f in panel.points.data['x'])


def test_markouts_panel_holds_only_mid_changes_and_the_newest_alerts(window):
    nb, al = window
    panel = MarkoutsPanel(keep_alerts=20)
    fed_in_minutes(panel, nb, al, lambda upto: None)
    assert len(panel._mids) < len(nb)
    pd.testing.assert_frame_equal(panel.table.drop(columns='pending'), markouts(al[-20:], nb).table(), check_exact=False,
                                  rtol=1e-12, atol=1e-12)
    assert panel.status.text.startswith(f"markouts of the last 20 of {len(al):,} alerts")
    panel.reset(); panel.refresh(force=True)
    assert panel.table is None and panel.source.data['n'] == [] and panel.status.text == 'no alerts yet'

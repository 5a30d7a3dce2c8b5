"""Event study (velox.detect.event_study): forward returns against a brute-force loop over the price path, the matched
random baseline's promises (same symbol, session, time of day, event times excluded, seeded), genericity over any
event kinds, and — with -s — the table for the recorded week.

The brute force walks a symbol-day's path rows one by one in Python, with session bounds computed here from the
local calendar, and shares no code with velox's searchsorted version."""
from datetime import datetime, time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from velox.core import NS
from velox.detect.event_study import event_study, events_frame, forward_returns, matched_random_times, session_days
from velox.runtime.research import study_inputs
from velox.face.research import event_study_chart
from velox.feeds.recorded import Catalog

DATA = Path(__file__).resolve().parent.parent/'replay/data'
CAT = Catalog(DATA)
NY = ZoneInfo('America/New_York')
HORIZONS = {'1m': 60, '5m': 300, '15m': 900, '30m': 1800}


def first_pair():
    "The first (symbol, day) with ticks and minute bars recorded."
    have = lambda fmt, kind: {(s.symbol, s.day) for s in CAT.sources() if s.fmt == fmt and s.kind == kind}
    return sorted(have('lean_tick', 'trade') & have('lean_tick', 'quote') & have('lean_minute', 'bar'))[0]


def session_of(ts):
    "Regular-session open and close (ns) of the New York day of `ts`."
    d = datetime.fromtimestamp(ts / NS, NY).date()
    f = lambda t: int(datetime.combine(d, t, NY).timestamp()) * NS
    return f(dtime(9, 30)), f(dtime(16, 0))


def brute_returns(t, rows, horizons=HORIZONS):
    "Forward returns (bps) of an event at `t` from the path `rows` [(ts, price)] of its symbol, by walking them."
    o, c = session_of(t)
    out = {h: float('nan') for h in horizons}
    if not (o <= t < c): return out
    checkpoints = {h: t + s * NS for h, s in horizons.items()}
    p0 = p0_ts = None
    at = {}
    for ts, price in rows:  # rows in time order
        if ts <= t: p0, p0_ts = price, ts
        for h, x in checkpoints.items():
            if ts <= x: at[h] = price
        if ts > t + max(horizons.values()) * NS: break
    if p0 is None or p0_ts < o: return out
    for h, x in checkpoints.items():
        if x <= c: out[h] = (at[h] / p0 - 1) * 1e4
    return out


def check_against_brute_force(fr, path, n, seed):
    rng = np.random.default_rng(seed)
    sample = fr.iloc[np.sort(rng.choice(len(fr), min(n, len(fr)), replace=False))]
    rows_of = {}
    checked = 0
    for _, e in sample.iterrows():
        key = (e['symbol'], session_of(int(e['ts']))[0])
        if key not in rows_of:
            o, c = key[1], session_of(int(e['ts']))[1]
            p = path[(path['symbol'] == e['symbol']) & (path['ts'] >= o - 3600 * NS) & (path['ts'] <= c + 3600 * NS)]
            rows_of[key] = list(zip(p['ts'].tolist(), p['price'].tolist()))
        want = brute_returns(int(e['ts']), rows_of[key])
        for h in HORIZONS:
            got = e[f'r_{h}']
            assert (np.isnan(got) and np.isnan(want[h])) or abs(got - want[h]) < 1e-9, (e.to_dict(), h, want[h])
            checked += not np.isnan(got)
    assert checked > n  # most of the sample has returns: the comparison is not vacuous


@pytest.fixture(scope='module')
def one_day():
    sym, day = first_pair()
    inputs, path = study_inputs(CAT, symbols=[sym], days=[day])
    return inputs, path


def test_forward_returns_of_alerts_and_patterns_equal_a_brute_force_walk_on_a_sample(one_day):
    inputs, path = one_day
    ev = events_frame(inputs['alert'], inputs['pattern'], by_side=True)
    assert {'outside_nbbo/above', 'SWING_HIGH'} <= set(ev['kind'])
    check_against_brute_force(forward_returns(ev, path, tuple(HORIZONS)), path, 60, seed=1)


def test_forward_returns_of_the_random_baseline_equal_the_brute_force_walk(one_day):
    inputs, path = one_day
    st = event_study(events_frame(inputs['pattern']), path, tuple(HORIZONS), n_random=3)
    check_against_brute_force(st.returns[st.returns['sample'] == 'random'].reset_index(drop=True), path, 60, seed=2)


def test_a_return_does_not_change_when_the_path_after_its_horizon_or_before_its_entry_price_changes(one_day):
    inputs, path = one_day
    ev = events_frame(inputs['pattern']).iloc[::25].reset_index(drop=True)
    base = forward_returns(ev, path, ('5m',))
    for i, e in ev.iterrows():
        t = int(e['ts'])
        mine = path['symbol'] == e['symbol']
        entry = path['ts'][mine & (path['ts'] <= t)].max() if (mine & (path['ts'] <= t)).any() else t
        noisy = path.copy()
        noisy['price'][mine & ((noisy['ts'] > t + 300 * NS) | (noisy['ts'] < entry))] *= 3.0  # the future beyond h, the past
        got = forward_returns(ev.iloc[[i]], noisy, ('5m',))['r_5m'].iloc[0]
        want = base['r_5m'].iloc[i]
        assert (np.isnan(got) and np.isnan(want)) or abs(got - want) < 1e-9


def test_random_times_share_symbol_session_and_time_of_day_and_avoid_event_times(one_day):
    inputs, path = one_day
    ev = events_frame(inputs['alert'], inputs['pattern'], by_side=True)
    days = session_days(path)
    rt = matched_random_times(ev, days, n_random=5, jitter_s=300, exclude_s=60, seed=11)
    assert len(rt) > 3 * len(ev)
    src = ev.loc[rt['event']].reset_index(drop=True)
    assert (rt['symbol'].to_numpy() == src['symbol'].to_numpy()).all() and (rt['kind'].to_numpy() == src['kind'].to_numpy()).all()
    for (_, r), (_, e) in zip(rt.iloc[::37].iterrows(), src.iloc[::37].iterrows()):
        o, c = session_of(int(r['ts']))
        assert o <= r['ts'] < c
        assert abs((r['ts'] - o) - (e['ts'] - session_of(int(e['ts']))[0])) <= 300 * NS
        same = ev[(ev['kind'] == r['kind']) & (ev['symbol'] == r['symbol'])]['ts'].to_numpy()
        assert np.abs(same - r['ts']).min() > 60 * NS
        assert o in set(days[r['symbol']].tolist())
    pd.testing.assert_frame_equal(rt, matched_random_times(ev, days, n_random=5, jitter_s=300, exclude_s=60, seed=11))
    assert not rt['ts'].equals(matched_random_times(ev, days, n_random=5, jitter_s=300, exclude_s=60, seed=12)['ts'])
    # one kind's baseline does not depend on which other kinds are in the study
    k = 'SWING_LOW'
    alone = matched_random_times(ev[ev['kind'] == k].reset_index(drop=True), days, n_random=5, seed=11)
    assert alone['ts'].tolist() == rt[rt['kind'] == k]['ts'].tolist()


def test_the_study_accepts_any_alert_kinds_from_any_detector(one_day):
    inputs, path = one_day
    t = inputs['alert']['ts'][::50]
    other = pd.DataFrame({'ts': t, 'symbol': inputs['alert']['symbol'][::50], 'kind': 'STEALTH_ACCUMULATION',
                          'score': np.linspace(0, 1, len(t))})
    st = event_study(events_frame(inputs['alert'], other), path, ('1m', '5m'), n_random=4)
    tab = st.table()
    assert {'outside_nbbo', 'STEALTH_ACCUMULATION'} <= set(tab['kind'])  # with whatever kinds the detect stage emits
    assert (tab.loc[tab['kind'] == 'STEALTH_ACCUMULATION', 'n'] > 0).all()
    with pytest.raises(ValueError, match='missing'):
        events_frame(pd.DataFrame({'ts': [1], 'symbol': ['X']}))


@pytest.mark.slow
def test_event_study_of_the_recorded_week_prints_its_table():
    inputs, path = study_inputs(CAT)
    ev = events_frame(inputs['alert'], inputs['pattern'], by_side=True)
    st = event_study(ev, path)
    check_against_brute_force(st.returns, path, 150, seed=3)
    tab = st.table()
    kinds = set(tab['kind'])
    assert {'outside_nbbo/above', 'outside_nbbo/below', 'BOS_UP', 'CHOCH_DOWN', 'ORDER_BLOCK_BULL', 'FVG_UP',
            'EQUAL_LOWS'} <= kinds
    assert set(tab['horizon']) == set(HORIZONS)
    # about ten random times per event (fewer only where draws kept landing on event times)
    r = tab['random_n'] / tab['n']
    assert (r > 8).all() and (r < 11).all(), r
    days = {s: len(v) for s, v in session_days(path).items()}
    from bokeh.embed import file_html
    from bokeh.resources import CDN
    assert len(file_html(event_study_chart(st), CDN, 'event study')) > 10_000
    counts = ev.groupby(['kind', 'symbol']).size().unstack(fill_value=0)
    with pd.option_context('display.width', 250, 'display.max_columns', 30, 'display.max_rows', 200):
        print(f"\nEvent study, {', '.join(f'{s} {n} days' for s, n in days.items())}: forward returns on the NBBO mid, bps; "
              "10 matched random times per event\n")
        print(counts.to_string(), '\n')
        cols = ['kind', 'horizon', 'n', 'mean_bps', 'median_bps', 'std_bps', 'hit_rate', 'random_n', 'random_mean_bps',
                'random_std_bps', 'excess_bps', 't_welch']
        print(tab[cols].round(2).to_string(index=False))

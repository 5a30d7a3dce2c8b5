"""Dark-pool detection on real days: block prints and off-exchange volume against independent pandas implementations,
outside-NBBO alerts identical to the OutsideNBBO detector, runner agreement, no look-ahead, bad input."""
import copy
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from velox.detect.darkpool import DarkPoolParams, DarkPoolStage
from velox.detect.accumulation import AccumulationParams, AccumulationStage
from velox.detect.outside_nbbo import OutsideNBBO
from velox.events import batch, empty, PRICE_SCALE
from velox.feeds.recorded import Catalog
from velox.market.nbbo import NBBOStage
from velox.feeds.replay import Replay, ArraySource
from velox.stage import Chain
from velox.runtime.runners import run_frame, run_replay
from reference_detectors import block_prints, interval_table, z_against_earlier_days

DATA = Path(__file__).resolve().parent.parent / 'replay' / 'data'
CAT = Catalog(DATA)
TICKS = CAT.table().query("format == 'lean_tick'")
SYMBOLS, DAYS = sorted(TICKS['symbol'].unique()), sorted(TICKS['date'].unique())
S = 10**4  # Lean units -> velox units
NEW = ('method', 'classes', 'notional', 'score')


def canon(a):
    return a[np.lexsort((a['trade_seq'], a['kind'], a['ts'], a['symbol']))] if len(a) else a


def assert_same(a, b):
    "Structured arrays equal field by field (NaN equals NaN, as in the per-field numpy comparison)."
    assert a.dtype == b.dtype and len(a) == len(b), (a.dtype, b.dtype, len(a), len(b))
    for n in a.dtype.names: np.testing.assert_array_equal(a[n], b[n], err_msg=n)


def kind(a, *kinds):
    return a[np.isin(a['kind'], kinds)]


@pytest.mark.parametrize('sym,day', [('IBM', DAYS[1]), ('BAC', DAYS[1]), ('IBM', DAYS[-1]), ('BAC', DAYS[-1])])
def test_block_prints_equal_an_independent_pandas_implementation(sym, day):
    srcs = {s.kind: s for s in CAT.find(sym, day)}
    al = run_frame(Chain(NBBOStage(), DarkPoolStage()), list(srcs.values()))['alert']
    got = kind(al, 'dark_print', 'block_print')
    got = got[np.argsort(got['trade_seq'], kind='stable')]
    ref = block_prints(srcs['trade'].path, srcs['quote'].path)
    assert len(ref) > 20
    assert got['trade_seq'].tolist() == ref['seq'].tolist()
    assert got['kind'].tolist() == ref['kind'].tolist()
    assert (got['bid'] == ref['bid'].to_numpy() * S).all() and (got['ask'] == ref['ask'].to_numpy() * S).all()
    assert got['side'].tolist() == ref['side'].tolist()
    assert (got['size'] == ref['size'].to_numpy()).all()
    assert ((got['confidence'] > 0) & (got['confidence'] <= 1)).all()


@pytest.mark.parametrize('sym', ['IBM', 'BAC'])
def test_outside_nbbo_alerts_of_the_dark_pool_stage_are_the_outside_nbbo_detectors(sym):
    srcs = CAT.find(sym, DAYS[1])
    params = dict(tolerance_bps=0.5, quote_lag_ms=3)
    a = kind(run_frame(Chain(NBBOStage(), DarkPoolStage(DarkPoolParams(**params))), srcs)['alert'], 'outside_nbbo')
    b = run_frame(Chain(NBBOStage(), OutsideNBBO(**params)), srcs)['alert']
    same = [n for n in b.dtype.names if n not in NEW]
    assert len(b) > 50
    np.testing.assert_array_equal(a[same], b[same])
    assert (a['method'] & 2).all() and ((a['method'] & 1 > 0) == a['off_exchange']).all()


@pytest.mark.parametrize('lag_ms', [0, 3, 250])
def test_outside_nbbo_over_replay_windows_of_any_size_equals_one_window(lag_ms):
    "Windows join the rows held from earlier windows with the window's own: every chunk size gives run_frame's alerts."
    srcs = CAT.find('IBM', DAYS[1]) + CAT.find('BAC', DAYS[1])
    stage = lambda: Chain(NBBOStage(), OutsideNBBO(tolerance_bps=0, quote_lag_ms=lag_ms))
    ref = run_frame(stage(), srcs)['alert']
    assert len(ref) > 100
    for rows in (97, 4096, 65_536):
        got = run_replay(stage(), Replay(srcs, chunk_rows=rows))['alert']
        assert_same(canon(got), canon(ref))


def _week_chain_alerts(sym, days, **kw):
    chain = Chain(NBBOStage(), DarkPoolStage(DarkPoolParams(**kw)))
    return [run_frame(chain, CAT.find(sym, d), collect=('alert',)).outputs.get('alert', empty('alert')) for d in days]


@pytest.mark.slow
@pytest.mark.parametrize('sym', ['IBM', 'BAC'])
def test_dark_volume_equals_a_pandas_z_score_against_earlier_days_over_the_week(sym):
    z_thr, min_vol = 1.5, 1_000  # a lower threshold than the default, so the comparison has alerts to compare
    got = kind(np.concatenate(_week_chain_alerts(sym, DAYS, z_threshold=z_thr, min_interval_volume=min_vol)), 'dark_volume')
    tab = pd.concat([interval_table(*[s.path for s in CAT.find(sym, d)][::-1], d, 5) for d in DAYS], ignore_index=True)
    tab['share'] = tab['off'] / tab['volume']
    tab['z'] = z_against_earlier_days(tab, 'share', min_vol)
    ref = tab[tab['z'] >= z_thr]
    assert len(ref) > 0
    assert got['ts'].tolist() == ref['end_ns'].tolist()
    np.testing.assert_allclose(got['score'], ref['z'], rtol=1e-9)
    np.testing.assert_allclose(got['size'], ref['off'], rtol=0)
    assert not (tab['day'] == DAYS[0]).loc[ref.index].any(), 'the first day has no earlier day to compare with'


def _sources(day, syms=SYMBOLS):
    return [ArraySource(s.kind, s.symbol, s.load(), key=s.key) for sym in syms for s in CAT.find(sym, day)]


def _both():
    return Chain(NBBOStage(), DarkPoolStage(DarkPoolParams(z_threshold=1.5)), AccumulationStage(AccumulationParams(score_threshold=1.5)))


@pytest.mark.slow
def test_notebook_runner_and_replay_runner_give_identical_outputs_over_two_days():
    frame, replay = _both(), _both()
    outs = {'frame': [], 'replay': []}
    for day in DAYS[:2]:
        srcs = _sources(day)
        outs['frame'].append(run_frame(frame, srcs, collect=('alert', 'accumulation')))
        outs['replay'].append(run_replay(replay, Replay(srcs, chunk_rows=7_777), collect=('alert', 'accumulation')))
    for f, r in zip(outs['frame'], outs['replay']):
        np.testing.assert_array_equal(canon(f['alert']), canon(r['alert']))
        acc = lambda a: a[np.lexsort((a['ts'], a['symbol']))]
        assert_same(acc(f['accumulation']), acc(r['accumulation']))
    assert len(kind(outs['frame'][1]['alert'], 'dark_volume')) > 0


@pytest.mark.slow
def test_appending_future_data_never_changes_an_alert_already_emitted():
    warm = _both()
    for sym in SYMBOLS: run_frame(warm, _sources(DAYS[0], [sym]))  # a day of history, so every kind can fire
    day = {(s.kind, s.symbol): s.load() for s in _sources(DAYS[1])}
    full = run_frame(copy.deepcopy(warm), [ArraySource(k, s, b) for (k, s), b in day.items()], collect=('alert', 'accumulation'))
    rng = np.random.default_rng(11)
    lo, hi = min(int(b['ts'][0]) for b in day.values()), max(int(b['ts'][-1]) for b in day.values())
    for cut in rng.integers(lo, hi, 6).tolist():
        part = [ArraySource(k, s, b[b['ts'] < cut]) for (k, s), b in day.items()]
        pre = run_frame(copy.deepcopy(warm), part, collect=('alert', 'accumulation'))
        seen = max(int(p.data['ts'][-1]) for p in part if len(p.data))
        for k in ('alert', 'accumulation'):
            a, b = pre.outputs.get(k), full[k]
            b = b[b['ts'] <= seen]
            key = (lambda x: canon(x)) if k == 'alert' else (lambda x: x[np.lexsort((x['ts'], x['symbol']))])
            assert_same(key(a) if a is not None else b[:0], key(b))


def test_bad_input_is_counted_and_handled_never_a_crash():
    src = {s.kind: s.load() for s in CAT.find('IBM', DAYS[1])}
    q, t = src['quote'], src['trade']
    t0 = int(q['ts'][0])
    early = batch('trade', ts=[t0 - 10**9] * 2, symbol=['IBM'] * 2, price=[1_800_000_000_0] * 2, size=[50_000, 100],
                  venue=['D', 'N'], cond=[1, 1], seq=[-2, -1])  # before any quote
    t = np.concatenate([early, t]).copy()
    mid = np.flatnonzero(t['ts'] > t0 + 4 * 3600 * 10**9)[:30]
    t['size'][mid[:10]] = 0                           # zero sizes
    t['venue'][mid[10:20]] = 'QQ'                     # unknown venue letters
    t['cond'][mid[20:30]] |= np.uint32(1 << 30)       # the undocumented condition bit
    nb = run_frame(NBBOStage(), {'quote': q})['nbbo']
    cross = np.flatnonzero(nb['ts'] > t0 + 5 * 3600 * 10**9)[:50]
    nb['bid'][cross] = nb['ask'][cross] + 100 * PRICE_SCALE // 100  # crossed by a cent
    dp, acc = DarkPoolStage(), AccumulationStage()
    out = run_frame(Chain(dp, acc), {'nbbo': nb, 'trade': t})
    c = dp.state['IBM']['counts']
    assert c['zero_size'] == 10 and c['unknown_venue'] == 10 and c['unknown_condition'] == 10
    assert c['no_quote'] == 2 and c['crossed'] > 0 and dp.state['IBM']['skipped_crossed'] == c['crossed']
    assert acc.state['IBM']['counts']['crossed'] == c['crossed']
    assert len(out['accumulation']) > 0 and len(out['alert']) > 0
    assert not np.isin(t['seq'][mid[:10]], kind(out['alert'], 'dark_print', 'block_print')['trade_seq']).any()

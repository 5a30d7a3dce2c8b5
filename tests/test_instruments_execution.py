"""Execution on a registered instrument (velox.market.instruments): an E-mini S&P future (tick 0.25, multiplier 50)
built by hand, against numbers derived by hand and a brute-force recomputation from the fills; on the real ESU4
mbp-1 quotes (tests/fixtures/vendor, NautilusTrader test data, LGPL-3.0, originally from Databento; see its README).
Rounding is on the passive side: a buy price rounds down, a sell price up; a stop or target rounds as the order that
would close the position (a long's exits are sells: up)."""

import numpy as np

from velox.events import PRICE_SCALE as S, batch, empty
from velox.feeds.databento import read_dbn
from velox.feeds.replay import ArraySource
from velox.market.instruments import Instrument, Instruments
from velox.runtime.runners import run_frame
from velox.trade.broker import PaperBroker
from velox.trade.execution import ExecutionStage
from velox.trade.risk import Account, Limits, Strategy

from vendor_files import ES_MBP1 as MBP1

KEEP = ('order', 'fill', 'position', 'risk')
ES = Instrument('ESU4', 'GLBX', 25_000_000, multiplier=50.0, calendar='CME', asset_class='future', vendor_ids=(('databento', 5602),))
T = 1_719_878_400 * 10**9  # 2024-07-02 00:00 UTC (19:00 CT, Tuesday's Globex session)


def px(x): return int(round(x * S))


def nbbo(rows, sym='ESU4'):
    return batch('nbbo', ts=[r[0] for r in rows], symbol=[sym] * len(rows), bid=[px(r[1]) for r in rows],
                 bid_size=[10.0] * len(rows), ask=[px(r[2]) for r in rows], ask_size=[10.0] * len(rows), seq=range(len(rows)))


def signal(rows, sym='ESU4'):
    n = len(rows)
    return batch('signal', ts=[r[0] for r in rows], symbol=[sym] * n, strategy=['s'] * n, stage=['final'] * n,
                 direction=[r[1] for r in rows], size=[r[2] for r in rows], entry=[px(r[3]) for r in rows],
                 stop=[px(r[4]) for r in rows], target=[px(r[5]) for r in rows], id=[f'g{i}' for i in range(n)])


def stage(reg, limits=Limits(), **kw):
    return ExecutionStage([Account('a', (Strategy('s', limits),))], PaperBroker(slippage_ticks=1, fee_per_share=0.85, instruments=reg), **kw)


def test_an_es_trade_by_hand_ticks_lots_and_fifty_dollars_a_point():
    reg = Instruments([ES])
    quotes = nbbo([(T, 5500.00, 5500.25), (T + 3 * S, 5510.25, 5510.50), (T + 5 * S, 5511.00, 5511.25)])
    # buy 2.6 -> 2 contracts (lot 1); limit 5500.30 -> 5500.25 (buy: down); stop 5495.10 -> 5495.25 and
    # target 5510.10 -> 5510.25 (a long's exits are sells: up)
    sig = signal([(T + 1 * S, 1, 2.6, 5500.30, 5495.10, 5510.10)])
    res = run_frame(stage(reg), [ArraySource('nbbo', 'ESU4', quotes), ArraySource('signal', 'ESU4', sig)], collect=KEEP)
    placed = res['order'][res['order']['status'] == 'PLACED']
    assert placed[['qty', 'price', 'reason']].tolist() == [(2.0, px(5500.25), 'signal'), (2.0, 0, 'take_profit')]
    f = res['fill']
    # entry at the 5500.25 ask + 1 tick; the 5510.25 bid reaches the 5510.25 target: sold at it - 1 tick
    assert f[['side', 'qty', 'price', 'fee']].tolist() == [(1, 2.0, px(5500.50), 1.7), (-1, 2.0, px(5510.00), 1.7)]
    last = res['position'][-1]
    assert (last['qty'], last['realized'], last['fees']) == (0.0, 2 * (5510.00 - 5500.50) * 50, 3.4)  # $950


def test_an_open_es_position_is_marked_and_limited_at_fifty_dollars_a_point():
    reg = Instruments([ES])
    quotes = nbbo([(T, 5500.00, 5500.25), (T + 3 * S, 5502.00, 5502.25)])
    # gross limit $600,000: 2 contracts at 5500.25 are $550,025 (allowed), 3 would be $825,037.50 (blocked)
    sig = signal([(T + 1 * S, 1, 3, 0.0, 0.0, 0.0), (T + 2 * S, 1, 2, 0.0, 0.0, 0.0), (T + 4 * S, -1, 1, 5499.10, 0.0, 0.0)])
    res = run_frame(stage(reg, Limits(max_gross_exposure=600_000)), [ArraySource('nbbo', 'ESU4', quotes), ArraySource('signal', 'ESU4', sig)], collect=KEEP)
    assert res['risk'][['rule', 'value']].tolist() == [('gross_exposure', 3 * 5500.25 * 50)]
    o = res['order']
    assert o[o['status'] == 'PLACED'][['side', 'qty', 'price']].tolist() == [(1, 2.0, 0), (-1, 1.0, px(5499.25))]  # sell: up
    pos = res['position']
    at_end = pos[-1]  # 1 left, bought at 5500.50, marked at the 5502.125 mid; 1 sold at 5502.00 - 0.25
    assert at_end['qty'] == 1.0 and at_end['realized'] == (5501.75 - 5500.50) * 50
    assert at_end['unrealized'] == (5502.125 - 5500.50) * 50


def test_unknown_symbols_keep_cents_and_shares():
    reg = Instruments([ES])
    quotes = nbbo([(T, 10.00, 10.01)], 'XYZ')
    sig = signal([(T + 1, 1, 2.5, 10.013, 0.0, 10.0271)], 'XYZ')
    res = run_frame(stage(reg), [ArraySource('nbbo', 'XYZ', quotes), ArraySource('signal', 'XYZ', sig)], collect=KEEP)
    placed = res['order'][res['order']['status'] == 'PLACED']
    assert placed[['qty', 'price']].tolist() == [(2.5, px(10.013))]  # neither lots nor ticks imposed, as before
    assert res['fill'][['qty', 'price']].tolist() == [(2.5, px(10.02))]  # ask + one cent


def test_real_es_quotes_pnl_equals_a_brute_force_recomputation_from_the_fills():
    reg = Instruments([ES])
    q = read_dbn(MBP1, reg).events['quote']
    q = q[(q['bid'] > 0) & (q['ask'] > 0)]
    nb = empty('nbbo', len(q))
    for c in ('ts', 'symbol', 'bid', 'bid_size', 'ask', 'ask_size'): nb[c] = q[c]
    nb['seq'] = np.arange(len(q))
    t0, t1 = int(nb['ts'][0]), int(nb['ts'][-1])
    ts = np.linspace(t0 + S, t1 - S, 24).astype('i8')
    sig = signal([(int(t), (1, 1, -1, -1, -1, 1)[i % 6], (1, 2, 1, 3, 1, 1)[i % 6], 0.0, 0.0, 0.0) for i, t in enumerate(ts)])
    res = run_frame(stage(reg), [ArraySource('nbbo', 'ESU4', nb), ArraySource('signal', 'ESU4', sig)], collect=KEEP)
    f = res['fill']
    assert len(f) >= 20 and (f['price'] % ES.tick == 0).all()
    # brute force: cash flow of every fill x 50, plus the open contracts at the last mid x 50, less fees
    qty = float((f['side'] * f['qty']).sum())
    cash = float(-(f['side'] * f['qty'] * f['price']).sum()) / S * 50
    mid = (int(nb['bid'][-1]) + int(nb['ask'][-1])) / 2 / S
    last = res['position'][-1]
    assert last['qty'] == qty
    np.testing.assert_allclose(last['realized'] + last['unrealized'], cash + qty * mid * 50, rtol=0, atol=1e-6)
    np.testing.assert_allclose(last['fees'], 0.85 * f['qty'].sum(), rtol=1e-12)


def test_a_day_order_on_es_works_until_the_globex_close_not_new_yorks():
    reg = Instruments([ES])
    ct = lambda h, m: int(pd_ts(f'2024-07-01 {h:02d}:{m:02d}'))  # Monday, Chicago (CDT)
    quotes = nbbo([(ct(14, 50), 5500.00, 5500.25), (ct(15, 30), 5500.00, 5500.25), (ct(16, 5), 5500.00, 5500.25)])
    sig = signal([(ct(14, 55), 1, 1, 5490.10, 0.0, 0.0)])  # a resting buy at 5490.00, far below the ask
    res = run_frame(stage(reg, tif='DAY'), [ArraySource('nbbo', 'ESU4', quotes), ArraySource('signal', 'ESU4', sig)], collect=KEEP)
    o = res['order']
    assert o[['ts', 'status', 'price', 'reason']].tolist() == [(ct(14, 55), 'PLACED', px(5490.00), 'signal'),
                                                               (ct(16, 0), 'CANCELLED', px(5490.00), 'end of day')]
    # unknown to the registry, the same symbol gets the old New York session: ended at 16:00 New York = 15:00 Chicago
    old = run_frame(stage(Instruments(), tif='DAY'), [ArraySource('nbbo', 'ESU4', quotes), ArraySource('signal', 'ESU4', sig)], collect=KEEP)
    assert old['order'][['ts', 'status']].tolist() == [(ct(14, 55), 'PLACED'), (ct(15, 0), 'CANCELLED')]


def pd_ts(s):
    import pandas as pd
    return pd.Timestamp(s).tz_localize('America/Chicago').value

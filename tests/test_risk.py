"Every guardrail driven to breach on a real replay (IBM and BAC, 2013-10-08, 10:00-12:00), showing the block."
import numpy as np
import pytest
from velox.core import NS, day_start_ns
from velox.events import PRICE_SCALE, batch
from velox.trade.broker import PaperBroker
from velox.trade.execution import ExecutionStage
from velox.feeds.replay import ArraySource
from velox.trade.risk import Account, Limits, Strategy
from velox.runtime.runners import run_frame
from reference_trading import DAY, equity_path, nbbo_window, scripted_signals, sources

KEEP = ('order', 'fill', 'position', 'risk')
T0 = day_start_ns(DAY)
LO, HI = T0 + 10 * 3600 * NS, T0 + 12 * 3600 * NS


def run(strategy_limits=Limits(), account_limits=Limits(), sig=None, extra=(), **kw):
    nb = nbbo_window()
    sig = sig if sig is not None else [scripted_signals('IBM', LO, HI, every_s=300, pattern=(1,)),
                                       scripted_signals('BAC', LO, HI, every_s=300, offset_s=3, size=1000, pattern=(1,))]
    acct = Account('alice', (Strategy('momo', strategy_limits),), limits=account_limits)
    stage = ExecutionStage([acct], PaperBroker(fee_per_share=0.005), **kw)
    return nb, run_frame(stage, sources(nb, sig) + list(extra), collect=KEEP).outputs


def blocked_after(out, rule):
    "The first breach of `rule`, the orders rejected for it, and the signal orders placed after it."
    r = out['risk'][out['risk']['rule'] == rule]
    assert len(r), f"{rule} never breached"
    o = out['order']
    rej = o[(o['status'] == 'REJECTED') & np.char.startswith(o['reason'], f'risk: {rule}')]
    placed_after = o[(o['status'] == 'PLACED') & (o['reason'] == 'signal') & (o['ts'] > r['ts'][0])]
    return r, rej, placed_after


def test_max_position_limit_blocks_the_order_that_would_exceed_it():
    _, out = run(Limits(max_position=250))
    r, rej, _ = blocked_after(out, 'max_position')
    assert len(rej) and (r['value'] > 250).all() and (r['limit'] == 250).all()
    pos = out['position']
    assert np.abs(pos['qty'][pos['symbol'] == 'IBM']).max() <= 250  # 100-share buys stop at 200


def gross_at_fills(fills, nbbo:dict) -> np.ndarray:
    """Brute force, from the fills alone: the gross exposure ($) right after each fill, the filled symbol at its fill
    price and every other open position at its prevailing NBBO mid."""
    qty, out = {s: 0.0 for s in nbbo}, []
    for f in fills:
        sym = str(f['symbol'])
        qty[sym] += int(f['side']) * float(f['qty'])
        g = 0.0
        for s, q in qty.items():
            if not q: continue
            if s == sym: px = int(f['price']) / PRICE_SCALE
            else:
                j = np.searchsorted(nbbo[s]['ts'], f['ts'], 'right') - 1
                px = (int(nbbo[s]['bid'][j]) + int(nbbo[s]['ask'][j])) / 2 / PRICE_SCALE
            g += abs(q) * px
        out.append(g)
    return np.array(out)


def test_gross_exposure_limit_blocks_orders_beyond_it():
    nb, free = run()
    assert gross_at_fills(free['fill'], nb).max() > 60_000, 'without the limit the script must go past it for the test to bite'
    _, out = run(Limits(max_gross_exposure=60_000))
    r, rej, _ = blocked_after(out, 'gross_exposure')
    assert len(rej) == len(r) and (r['value'] > 60_000).all() and (r['limit'] == 60_000).all()
    held = gross_at_fills(out['fill'], nb)
    assert len(held) and held.max() <= 60_000, f"gross exposure reached {held.max():,.0f} $ under a 60,000 $ limit"


def test_order_rate_limit_blocks_the_order_over_the_rate():
    sig = [scripted_signals('IBM', LO, LO + 1800 * NS, every_s=20, pattern=(1, -1))]
    _, out = run(Limits(max_orders_per_min=2), sig=sig)
    r, rej, _ = blocked_after(out, 'order_rate')
    o = out['order']
    placed = o['ts'][(o['status'] == 'PLACED')]
    assert all(((placed > t - 60 * NS) & (placed <= t)).sum() <= 2 for t in placed)  # never 3 in any 60 s
    assert len(rej) == len(sig[0]) - len(placed)


@pytest.mark.parametrize('scope', ['strategy', 'account'])
def test_daily_loss_limit_rejects_new_orders_after_breach(scope):
    nb, free = run()
    _, eq = equity_path(free['fill'], nb)
    worst = -eq.min()
    assert worst > 100, 'the scripted strategy must lose money on this morning for the test to bite'
    lim = Limits(max_daily_loss=worst / 2)
    nb, out = run(**({'strategy_limits': lim} if scope == 'strategy' else {'account_limits': lim}))
    r, rej, placed_after = blocked_after(out, 'daily_loss')
    assert (r['order_id'] == '').sum() == 1 and r['order_id'][0] == ''  # latched once, then one event per blocked order
    assert set(r['strategy']) == {'momo' if scope == 'strategy' else ''}
    assert (r['order_id'][1:] != '').all() and len(r) == len(rej) + 1
    times, eq = equity_path(out['fill'], nb)  # brute force: the first moment equity fell below -limit
    assert r['ts'][0] == times[np.argmax(eq < -lim.max_daily_loss)]
    assert len(rej) > 0 and len(placed_after) == 0


def test_drawdown_limit_from_high_water_mark_blocks_and_flatten_closes_positions():
    nb, free = run()
    times, eq = equity_path(free['fill'], nb)
    dd = np.maximum.accumulate(np.r_[0, eq])[1:] - eq
    lim = Limits(max_drawdown=dd.max() / 2, on_breach='flatten')
    nb, out = run(lim)
    r, rej, placed_after = blocked_after(out, 'drawdown')
    times, eq = equity_path(out['fill'], nb)
    dd = np.maximum.accumulate(np.r_[0, eq])[1:] - eq
    assert r['ts'][0] == times[np.argmax(dd > lim.max_drawdown)] and r['action'][0] == 'flatten'
    o = out['order']
    flat = o[(o['reason'] == 'flatten') & (o['status'] == 'FILLED')]
    assert len(flat) and flat['ts'].min() >= r['ts'][0]
    pos = out['position']
    last = {s: pos[pos['symbol'] == s][-1] for s in ('IBM', 'BAC')}
    assert all(p['qty'] == 0 for p in last.values()) and len(placed_after) == 0 and len(rej) > 0


def test_kill_switch_command_flattens_and_blocks_until_resumed():
    cmd = lambda t, action: batch('risk', ts=[t], symbol=['IBM'], account=['alice'], rule=['kill_switch'], action=[action])
    kill, resume = LO + 3600 * NS, LO + 5400 * NS
    extra = [ArraySource('risk', 'IBM', np.concatenate([cmd(kill, 'flatten'), cmd(resume, 'resume')]))]
    _, out = run(extra=extra)
    o = out['order']
    sig = o[o['reason'] == 'signal']
    between = o[(o['ts'] > kill) & (o['ts'] < resume)]
    assert (between['status'][between['signal_id'] != ''] == 'REJECTED').all()
    assert (between['reason'][between['status'] == 'REJECTED'] == 'risk: kill_switch (account)').all()
    assert len(between) and ((sig['ts'] > resume) & (sig['status'] == 'FILLED')).any()
    fl = o[(o['reason'] == 'flatten') & (o['status'] == 'FILLED')]
    assert set(fl['symbol']) == {'IBM', 'BAC'} and (fl['ts'] >= kill).all()
    k = out['risk'][out['risk']['rule'] == 'kill_switch']
    assert k['action'].tolist()[:2] == ['flatten', 'block']


def test_kill_switch_from_config_blocks_everything_and_no_position_opens():
    _, out = run(Limits(kill=True))
    assert 'fill' not in out and (out['order']['status'] == 'REJECTED').all()
    assert len(out['risk']) == len(out['order'])


def test_account_limit_spans_strategies():
    nb = nbbo_window()
    sig = [scripted_signals('IBM', LO, HI, every_s=300, pattern=(1,)),
           scripted_signals('IBM', LO, HI, every_s=300, offset_s=11, strategy='swing', pattern=(1,))]
    acct = Account('alice', (Strategy('momo'), Strategy('swing')), limits=Limits(max_position=300))
    out = run_frame(ExecutionStage([acct]), sources(nb, sig), collect=KEEP).outputs
    pos = out['position']
    net = {}
    for p in pos[pos['ts'] < pos['ts'].max()]: net[str(p['strategy'])] = p['qty']; assert sum(net.values()) <= 300
    assert set(out['risk']['strategy']) == {''} and set(net) == {'momo', 'swing'}

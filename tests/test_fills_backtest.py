"""Issue 20: a backtest of a bundled day fills the same signals in both tiers, and its fill report (fill rate, slippage
against the arrival mid, queue time, fees, latency, PnL per tier and strategy) agrees with pandas recomputations."""
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from velox.runtime.backtest import backtest
from velox.trade.fill_report import fill_report, tier_divergence

DATA = Path(__file__).resolve().parent.parent / 'replay/data'


@pytest.fixture(scope='module')
def run():
    res = backtest(['IBM'], ['2013-10-09'], data_dir=DATA)
    return res, fill_report(res)


def test_both_tiers_trade_the_same_signals_side_by_side(run):
    res, rep = run
    ex = res.tiers['exact']
    assert list(rep['tier']) == ['fast', 'exact'] and len(res.orders) > 20
    sig = lambda r: sorted(r.orders['signal_id'][r.orders['status'] == 'PLACED'].tolist())
    assert sig(res) == sig(ex)  # one replay, one set of signals, two ways of filling them
    assert ex.latency_ms == res.latency_ms == 5.0


def test_fill_report_agrees_with_pandas(run):
    res, rep = run
    for tier, r in (('fast', res), ('exact', res.tiers['exact'])):
        row = rep[rep['tier'] == tier].iloc[0]
        o = pd.DataFrame(r.orders[r.orders['status'] == 'PLACED'][['ts', 'order_id', 'qty']].tolist(), columns=['ts', 'order_id', 'qty'])
        f = pd.DataFrame(r.fills[['ts', 'order_id', 'side', 'qty', 'price', 'fee']].tolist(), columns=['ts', 'order_id', 'side', 'qty', 'price', 'fee'])
        assert row['fill_rate'] == pytest.approx(f['qty'].sum() / o['qty'].sum())
        assert row['fees'] == pytest.approx(f['fee'].sum())
        q = pd.DataFrame({'ts': r.quotes['ts'], 'mid': r.quotes['mid']}).sort_values('ts', kind='stable')
        arr = pd.merge_asof(o.sort_values('ts'), q, on='ts', direction='backward')  # the mid on each order's arrival
        f = f.merge(arr[['order_id', 'mid']], on='order_id')
        bps = f['side'] * (f['price'] - f['mid']) / f['mid'] * 1e4
        assert row['slippage_bps'] == pytest.approx((bps * f['qty']).sum() / f['qty'].sum())
        wait = (f.groupby('order_id')['ts'].min() - o.set_index('order_id')['ts']).dropna() / 1e6
        assert row['queue_ms'] == pytest.approx(wait.mean())
        assert row['pnl'] == pytest.approx(float(r.positions['equity'][-1]))
    d = tier_divergence(rep).iloc[0]
    assert d['d_pnl'] == pytest.approx(rep['pnl'][1] - rep['pnl'][0])


def test_exact_tier_pays_the_taker_fee_on_market_orders_the_fast_tier_its_flat_fee(run):
    res, _ = run
    ex = res.tiers['exact']
    assert np.allclose(res.fills['fee'], 0.005 * res.fills['qty'])  # backtest's fee_per_share
    assert np.allclose(ex.fills['fee'], 0.003 * ex.fills['qty'])  # the default schedule's taker fee: every order is a market order


def test_html_report_shows_both_fill_tiers_and_says_why_the_exact_tier_uses_the_nbbo(run, tmp_path):
    from velox.face.research import report
    res, rep = run
    page = Path(report(res, tmp_path / 'b.html')).read_text()
    table = page[page.index('id="fills"'):]
    table = table[:table.index('</table>')]
    assert table.count('<tr') == 1 + len(rep) and '<td>fast</td>' in table and '<td>exact</td>' in table
    assert "no L2 or L3 book: the exact tier uses the NBBO's displayed sizes and the risk-averse queue" in page

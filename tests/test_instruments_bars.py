"""Bars follow each symbol's venue calendar from the instrument registry (velox.market.instruments): the real CME
E-mini trades sample (tests/fixtures/vendor, NautilusTrader test data, LGPL-3.0, originally from Databento; see its
README) with the vendor's definitions loaded; the trade date and session open derived independently with pandas."""

import numpy as np
import pandas as pd

from velox.core import Session
from velox.feeds.databento import load_dbn
from velox.market.bars import BarStage, resample_bars, trade_bars
from velox.market.instruments import crypto
from velox.feeds.replay import ArraySource
from velox.runtime.runners import run_frame

from vendor_files import ES_OHLCV as OHLCV, ES_TRADES as TRADES, es_registry


def es_sample():
    reg = es_registry()
    return reg, load_dbn(TRADES, reg)['trade']


def test_cme_bars_follow_the_registry_and_still_equal_the_vendors_minutes():
    reg, tr = es_sample()
    vendor = load_dbn(OHLCV, reg)['bar']
    mine = trade_bars(tr, '1m', instruments=reg)  # no session or zone given: the registry's CME calendar
    want = vendor[(vendor['symbol'] == 'ESU4') & np.isin(vendor['ts'], mine['ts'])]
    cols = ['ts', 'open', 'high', 'low', 'close', 'volume']
    assert len(mine) == len(want) == 4 and mine[cols].tolist() == want[cols].tolist()
    # the same through the streaming stage
    got = run_frame(BarStage('1m', instruments=reg), [ArraySource('trade', 'ESU4', tr)])['bar']
    assert got[cols].tolist() == mine[cols].tolist()


def test_a_cme_day_bar_is_the_globex_session_of_its_trade_date():
    reg, tr = es_sample()
    t = pd.to_datetime(tr['ts'], utc=True).tz_convert('America/Chicago')
    # independent rule: at or after 17:00 Chicago belongs to the next day's session (no holidays in this sample)
    trade_date = (t.normalize() + pd.to_timedelta((t.hour >= 17).astype(int), unit='D')).tz_localize(None)
    assert set(trade_date.strftime('%Y-%m-%d')) == {'2024-07-02'}  # Monday evening UTC-night prints: Tuesday
    open_ = (pd.Timestamp('2024-07-01 17:00').tz_localize('America/Chicago')).value
    d = trade_bars(tr, '1d', instruments=reg)
    assert d['ts'].tolist() == [open_]  # one bar, keyed at Monday 17:00 CT, holding UTC prints of Jul 1 and Jul 2
    assert pd.to_datetime(tr['ts'], utc=True).normalize().nunique() == 2
    assert float(d['volume'][0]) == float(tr['size'].sum())
    prices = tr['price']
    assert d[['open', 'high', 'low', 'close']].tolist() == [(prices[0], prices.max(), prices.min(), prices[-1])]
    assert resample_bars(trade_bars(tr, '1m', instruments=reg), '1d', instruments=reg).tolist() == d.tolist()
    # regular hours keep everything here: 18:58-19:02 CT is inside the session (17:00-16:00)
    assert trade_bars(tr, '1d', hours='regular', instruments=reg).tolist() == d.tolist()
    # the old New York assumption (09:30-16:00) would have dropped every one of these prints as out of hours
    assert len(trade_bars(tr, '1d', session=Session(), hours='regular')) == 0


def test_crypto_days_are_utc_and_us_equities_are_unchanged():
    reg, tr = es_sample()
    btc = tr.copy(); btc['symbol'] = 'BTCUSDT'
    reg.add(crypto('BTCUSDT', 'BINANCE'))
    d = trade_bars(btc, '1d', instruments=reg)
    utc_days = pd.to_datetime(btc['ts'], utc=True).normalize()
    assert d['ts'].tolist() == sorted({x.value for x in utc_days})  # 2024-07-01 and 2024-07-02 UTC
    assert d['volume'].tolist() == [float(btc['size'][utc_days == x].sum()) for x in sorted(set(utc_days))]
    ibm = tr.copy(); ibm['symbol'] = 'IBM'  # unknown: a US equity on the New York clock, as before
    for tf in ('1m', '1h', '1d'):
        assert trade_bars(ibm, tf, instruments=reg).tolist() == trade_bars(ibm, tf, session=Session()).tolist()
    ny_midnight = pd.Timestamp('2024-07-01').tz_localize('America/New_York').value
    assert trade_bars(ibm, '1d', instruments=reg)['ts'].tolist() == [ny_midnight]

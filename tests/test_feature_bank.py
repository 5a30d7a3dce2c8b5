"""SeedFeatureBank: the five seed features of many series in one compiled call equal, at every update, what each
series' own SeedFeatures gives, on real 1-minute closes of every recorded symbol-day interleaved in time order."""
import numpy as np
import pytest
from velox.events import PRICE_SCALE
from velox.feeds.recorded import Catalog
from velox.market.bars import trade_bars
from velox.market.features import SeedFeatureBank, SeedFeatures
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bank_equals_each_series_own_seed_features_at_every_update():
    cat = Catalog(ROOT / 'replay' / 'data')
    series = []  # (minute, closes) of every recorded Lean trade symbol-day, as one day's clock
    for s in cat.sources():
        if s.kind != 'trade' or s.fmt != 'lean_tick': continue
        b = trade_bars(s.load(), '1m')
        b = b[b['close'] > 0]
        series.append((b['ts'] % (86400 * 10**9), b['close'] / PRICE_SCALE))
    assert len(series) >= 4, len(series)
    ts = np.concatenate([t for t, _ in series])
    rows = np.concatenate([np.full(len(t), i) for i, (t, _) in enumerate(series)])
    vals = np.concatenate([v for _, v in series])
    order = np.argsort(ts, kind='stable')  # interleaved by time of day, as a market's bars close
    bank = SeedFeatureBank(len(series))
    half = len(order) // 2  # two calls: the state carries over between them
    out = np.concatenate([bank.update(rows[order[:half]], vals[order[:half]]), bank.update(rows[order[half:]], vals[order[half:]])])
    got = np.empty_like(out); got[order] = out
    for i, (_, v) in enumerate(series):
        one = SeedFeatures()
        want = np.array([one.update(x).copy() for x in v])
        assert np.array_equal(got[rows == i], want, equal_nan=True), i
    assert np.isfinite(got[:, 0]).sum() > 1000  # past the warm-up: the comparison saw real values


def test_bank_names_what_is_wrong_with_its_input():
    bank = SeedFeatureBank(3)
    with pytest.raises(ValueError, match=r'indices in \[0, 3\)'): bank.update([0, 3], [1.0, 2.0])
    with pytest.raises(ValueError, match='one length'): bank.update([0, 1], [1.0])

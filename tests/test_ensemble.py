"Ensemble: the leakage guard on real data, walk-forward discipline, models and calibration against references, signal stage determinism."
import numpy as np
import pytest
from velox.core import NS, day_start_ns
from velox.trade.ensemble import Ensemble, Isotonic, Platt, SignalRules, SignalStage, brier, leakage_check, tier_of
from velox.trade.models import GBTModel, LogisticModel, Model, forward_labels, indicator_features, walk_forward
from velox.market.features import FeatureStage
from velox.feeds.recorded import Catalog
from velox.feeds.replay import ArraySource, Replay
from velox.runtime.runners import run_frame, run_replay
from reference_trading import DATA, DAY


@pytest.fixture(scope='module')
def ibm_trades():
    return Catalog(DATA).find('IBM', DAY, kinds=('trade',))[0].load()


def _feats(tr):
    return indicator_features(run_frame(FeatureStage(), [ArraySource('trade', 'IBM', tr)])['indicator'])


def test_leakage_guard_features_do_not_change_when_the_future_is_perturbed(ibm_trades):
    before, after = leakage_check(_feats, ibm_trades, day_start_ns(DAY) + 13 * 3600 * NS, seed=3)
    assert before == 0 and after > 50


def test_leakage_guard_catches_a_feature_that_peeks(ibm_trades):
    def peeking(tr):
        rows, X = _feats(tr)
        ret, _ = forward_labels(rows, 60)  # uses the next minute's close
        return rows, np.column_stack([X, np.nan_to_num(ret)])
    before, _ = leakage_check(peeking, ibm_trades, day_start_ns(DAY) + 13 * 3600 * NS, seed=3)
    assert before > 0


def test_forward_labels_match_a_plain_loop(ibm_trades):
    rows, _ = _feats(ibm_trades[:8000])
    ret, ok = forward_labels(rows, 300)
    for i in range(len(rows)):
        later = [j for j in range(i + 1, len(rows)) if rows['ts'][j] >= rows['ts'][i] + 300 * NS]
        if not later: assert not ok[i]; continue
        r = (rows['close'][later[0]] / rows['close'][i] - 1) * 1e4
        assert ok[i] == (r != 0) and np.isclose(ret[i], r)


def test_walk_forward_trains_only_on_earlier_days():
    for fit, val, test in walk_forward(range(7), min_train=3):
        assert max(fit) < min(val) and max(val) < test and len(fit) + 1 >= 3


def test_isotonic_is_the_least_squares_monotone_fit():
    rng = np.random.default_rng(1)
    p, y = rng.random(300), (rng.random(300) < 0.5).astype(float)
    iso = Isotonic().fit(p, y)
    f = iso.predict(np.sort(p))
    assert (np.diff(f) >= -1e-12).all()
    o = np.argsort(p)
    sse = ((f - y[o]) ** 2).sum()
    for _ in range(200):  # no random monotone perturbation of the fit does better
        g = np.maximum.accumulate(np.clip(f + rng.normal(0, 0.02, len(f)), 0, 1))
        assert ((g - y[o]) ** 2).sum() >= sse - 1e-9


def test_platt_recovers_a_miscalibrated_logistic():
    rng = np.random.default_rng(2)
    z = rng.normal(size=20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-z))).astype(float)
    p = 1 / (1 + np.exp(-3 * z))  # over-confident
    cal = Platt().fit(p, y)
    assert abs(cal.m.w[1] / cal.m.sd[0] - 1 / 3) < 0.03
    assert brier(cal.predict(p), y) < brier(p, y)


def test_model_version_is_a_content_hash_and_survives_save_load(tmp_path):
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(500, 4)), (rng.random(500) < 0.5).astype(float)
    a, b = LogisticModel().fit(X, y), LogisticModel().fit(X, y)
    assert a.version == b.version != LogisticModel(l2=2).fit(X, y).version
    m = Model.load(a.save(tmp_path / 'm.pkl'))
    assert m.version == a.version and np.array_equal(m.predict_proba(X), a.predict_proba(X))


def test_signal_stage_same_signals_in_both_runners_and_tiers_ordered(ibm_trades):
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(3000, 8)), (rng.random(3000) < 0.5).astype(float)
    ens = Ensemble([LogisticModel(), GBTModel(n_trees=10)], calibration='platt').fit(X[:2000], y[:2000], X[2000:], y[2000:])
    from velox.stage import Chain
    mk = lambda: Chain(FeatureStage(), SignalStage(ens, SignalRules(min_tier='D')))
    src = [ArraySource('trade', 'IBM', ibm_trades)]
    a = run_frame(mk(), src)['signal']
    b = run_replay(mk(), Replay(src, chunk_rows=1500))['signal']
    assert a.tobytes() == b.tobytes()
    for stage in ('raw', 'calibrated', 'final'): assert (a['stage'] == stage).any()
    fin = a[a['stage'] == 'final']
    assert (fin['expires'] == fin['ts'] + 120 * NS).all() and (tier_of(fin['confidence']) == fin['tier']).all()
    assert ((fin['stop'] < fin['target']) == (fin['direction'] > 0)).all()

"The sequence model: windows against a brute-force loop, the numpy LSTM's gradient against finite differences, a task that needs memory, save/load, the torch backend (skipped without the extra seq), and the LSTM as a prediction stage on real data."
import contextlib
import io
import time
import numpy as np
import pytest
from velox.core import ConfigError, DataError
from velox.trade.models import LogisticModel, Model, indicator_features
from velox.market.features import FeatureStage
from velox.feeds.recorded import Catalog
from velox.trade.registry import ModelRegistry
from velox.trade.predict import PredictionParams, PredictionStage
from velox.trade.training import day_index, fit_models, register_all
from velox.trade.lstm import LSTMModel, LSTMParams, _has_torch, lstm_loss, windows
from velox.runtime.runners import run_frame
from reference_trading import DATA

DAYS = ('2013-10-08', '2013-10-09')  # fit, validate (and the live day of the stage tests)


def _lagged_task(n, seed, lag=3, features=3):
    "The label is the sign of the first feature `lag` rows back: invisible in the current row."
    r = np.random.default_rng(seed)
    X = r.normal(size=(n, features))
    return X, np.r_[np.zeros(lag), X[:-lag, 0] > 0].astype(float)


def test_windows_match_a_brute_force_loop():
    r = np.random.default_rng(4)
    X, groups = r.normal(size=(60, 3)), r.choice(['IBM', 'BAC', 'X'], 60)
    for lookback in (1, 2, 5, 70):
        w = windows(X, lookback, groups)
        for i in range(len(X)):
            before = [j for j in range(i + 1) if groups[j] == groups[i]][-lookback:]  # this row and its group's rows before it
            expect = [before[0]] * (lookback - len(before)) + before
            assert np.array_equal(w[i], X[expect]), (lookback, i)
    assert np.array_equal(windows(X, 3), windows(X, 3, np.zeros(60)))
    with pytest.raises(ConfigError, match='lookback 0'): windows(X, 0)
    with pytest.raises(DataError, match='59 groups for 60 rows'): windows(X, 2, groups[1:])


def test_numpy_lstm_gradient_matches_finite_differences():
    r = np.random.default_rng(7)
    F, H, L, n, l2 = 3, 2, 5, 6, 0.05
    w = dict(Wx=r.normal(size=(4 * H, F)), Wh=r.normal(size=(4 * H, H)), b=r.normal(size=4 * H), wo=r.normal(size=H), bo=np.array(-0.2))
    Z, y = r.normal(size=(n, L, F)), r.integers(0, 2, n).astype(float)
    _, g = lstm_loss(w, Z, y, l2)
    for k in w:
        for idx in np.ndindex(w[k].shape):
            up, dn = ({a: v.copy() for a, v in w.items()} for _ in range(2))
            up[k][idx] += 1e-6; dn[k][idx] -= 1e-6
            num = (lstm_loss(up, Z, y, l2)[0] - lstm_loss(dn, Z, y, l2)[0]) / 2e-6
            assert abs(num - g[k][idx]) <= 1e-6 * max(1.0, abs(num)), (k, idx, num, g[k][idx])


def test_numpy_lstm_learns_a_lagged_sign_where_a_row_wise_logistic_model_is_at_chance():
    X, y = _lagged_task(3000, 1)
    Xt, yt = _lagged_task(2000, 2)
    m = LSTMModel(LSTMParams(lookback=6, hidden=8, epochs=20, l2=1e-4, backend='numpy')).fit(windows(X, 6)[3:], y[3:])
    acc = ((m.predict_proba(windows(Xt, 6))[3:] >= 0.5) == yt[3:]).mean()
    acc_lr = ((LogisticModel().fit(X[3:], y[3:]).predict_proba(Xt[3:]) >= 0.5) == yt[3:]).mean()
    assert acc > 0.9 and abs(acc_lr - 0.5) < 0.05, (acc, acc_lr)
    assert m.fitted_with == 'numpy'


def test_save_load_round_trip_gives_identical_probabilities_and_a_row_never_depends_on_its_batch(tmp_path):
    X, y = _lagged_task(800, 3)
    W = windows(X, 4)
    m = LSTMModel(LSTMParams(lookback=4, hidden=5, epochs=3, backend='numpy')).fit(W, y)
    back = Model.load(m.save(tmp_path / 'lstm.pkl'))
    assert type(back) is LSTMModel and back.version == m.version and m.version.startswith('lstm-')
    assert np.array_equal(back.predict_proba(W), m.predict_proba(W))
    assert np.array_equal(np.concatenate([m.predict_proba(W[i:i + 13]) for i in range(0, len(W), 13)]), m.predict_proba(W))
    again = LSTMModel(LSTMParams(lookback=4, hidden=5, epochs=3, backend='numpy')).fit(W, y)
    other = LSTMModel(LSTMParams(lookback=4, hidden=5, epochs=3, seed=1, backend='numpy')).fit(W, y)
    assert again.version == m.version and other.version != m.version  # deterministic for a seed; the hash sees the weights
    with pytest.raises(DataError, match=r'expected \(n, 4, n_features\)'): m.predict_proba(X)


def test_bad_backends_are_refused_naming_what_to_install():
    with pytest.raises(ConfigError, match='expected auto, numpy or torch'): LSTMModel(LSTMParams(backend='jax'))
    with pytest.raises(ConfigError, match='lookback'): LSTMModel(LSTMParams(lookback=0))
    if _has_torch(): pytest.skip('torch is installed: nothing to refuse')
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[seq\]'"): LSTMModel(LSTMParams(backend='torch'))
    assert LSTMModel().fit(*_small()).fitted_with == 'numpy'  # auto without torch


def _small():
    X, y = _lagged_task(200, 5)
    return windows(X, 8), y


def test_torch_backend_learns_the_lagged_sign_into_weights_the_numpy_forward_pass_reads(tmp_path):
    pytest.importorskip('torch', reason="PyTorch not installed: pip install -e '.[seq]'")
    X, y = _lagged_task(3000, 1)
    Xt, yt = _lagged_task(2000, 2)
    m = LSTMModel(LSTMParams(lookback=6, hidden=8, epochs=20, l2=1e-4, backend='torch')).fit(windows(X, 6)[3:], y[3:])
    assert m.fitted_with == 'torch' and LSTMModel(LSTMParams(backend='auto')).fit(*_small()).fitted_with == 'torch'
    # a gate order or bias mapping wrong between torch.nn.LSTM and the numpy pass would leave it at chance
    assert ((m.predict_proba(windows(Xt, 6))[3:] >= 0.5) == yt[3:]).mean() > 0.9
    back = Model.load(m.save(tmp_path / 'lstm.pkl'))
    assert np.array_equal(back.predict_proba(windows(Xt, 6)), m.predict_proba(windows(Xt, 6)))


@pytest.fixture(scope='module')
def days():
    cat = Catalog(DATA)
    return run_frame(FeatureStage(), [s for sym in ('IBM', 'BAC') for d in DAYS for s in cat.find(sym, d, kinds=('trade',))])['indicator']


@pytest.fixture(scope='module')
def fitted(days):
    t0 = time.perf_counter()
    out = fit_models(days, DAYS, lstm=LSTMModel(LSTMParams(backend='numpy')))
    return out, time.perf_counter() - t0


def test_fit_models_adds_lstm_only_when_asked_and_leaves_the_others_unchanged(days, fitted):
    out, seconds = fitted
    plain = fit_models(days, DAYS)
    assert sorted(plain) == ['ensemble', 'gbt', 'lr'] and sorted(out) == ['ensemble', 'gbt', 'lr', 'lstm']
    assert all(out[k][0].version == plain[k][0].version and out[k][1] == plain[k][1] for k in plain)
    m, metrics = out['lstm']
    assert m.fitted_with == 'numpy' and metrics['lookback'] == m.lookback and metrics['n'] == plain['lr'][1]['n']
    assert 0 <= metrics['brier'] <= 1 and metrics['validation_days'] == [DAYS[1]] and seconds < 20


def _feed(stage, pieces):
    out = {}
    for p in pieces:
        for k, b in stage.process_window([('indicator', p)]): out.setdefault(k, []).append(b)
    return {k: np.sort(np.concatenate(v), order=['symbol', 'ts', 'id']) for k, v in out.items()}


def _cuts(b, n, rng):
    ok = np.flatnonzero(b['ts'][1:] != b['ts'][:-1]) + 1  # upstream never cuts inside one base bar's outputs
    return np.split(b, np.sort(rng.choice(ok, n - 1, replace=False)))


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert len(a[k]) == len(b[k]), k
        for f in a[k].dtype.names:
            if f != 'infer_us': assert np.array_equal(a[k][f], b[k][f]), (k, f)


def test_prediction_stage_runs_the_lstm_on_windows_of_each_symbol_however_the_day_is_cut(tmp_path, days, fitted):
    reg = ModelRegistry(tmp_path / 'reg')
    register_all(reg, {'lstm': fitted[0]['lstm']}, promote=True)
    live = days[day_index(days['ts'], DAYS[1:]) == 0]
    whole = _feed(PredictionStage(reg, 'lstm', PredictionParams(window=60, every=15)), [live])
    assert len(whole['prediction']) > 600 and len(whole['model_metric']) > 10
    m = fitted[0]['lstm'][0]
    rows, X = indicator_features(live)
    ref = m.predict_proba(windows(X, m.lookback, rows['symbol']))  # the whole day's windows, built in one go
    for s in ('IBM', 'BAC'):
        pr = whole['prediction'][whole['prediction']['symbol'] == s]
        assert np.array_equal(pr['prob'], ref[rows['symbol'] == s][np.argsort(rows['ts'][rows['symbol'] == s], kind='stable')])
    rng = np.random.default_rng(12)
    for n in (2, 40, 300):
        _assert_same(whole, _feed(PredictionStage(reg, 'lstm', PredictionParams(window=60, every=15)), _cuts(live, n, rng)))
    pieces = _cuts(live, 50, rng)  # a worker restarts mid-day from a snapshot of the per-symbol state
    first = PredictionStage(reg, 'lstm', PredictionParams(window=60, every=15))
    a = _feed(first, pieces[:20])
    second = PredictionStage(reg, 'lstm', PredictionParams(window=60, every=15))
    second.restore(first.snapshot())
    b = _feed(second, pieces[20:])
    _assert_same(whole, {k: np.sort(np.concatenate([a[k], b[k]]), order=['symbol', 'ts', 'id']) for k in whole})


def test_cli_train_with_lstm_registers_it_beside_the_default_models(tmp_path):
    from velox.face.cli import main
    r = str(tmp_path / 'reg')
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        main(['models', 'train', '--symbols', 'BAC', '--days', ','.join(DAYS), '--data-dir', str(DATA), '--registry', r, '--lstm'])
    reg = ModelRegistry(r)
    assert reg.names() == ['ensemble', 'gbt', 'lr', 'lstm'], out.getvalue()
    meta = reg.versions('lstm')[0]
    assert meta['model_class'] == 'LSTMModel' and meta['metrics']['symbols'] == ['BAC'] and meta['metrics']['lookback'] == 8
    assert type(reg.load('lstm', meta['version'])) is LSTMModel

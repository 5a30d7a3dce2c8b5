"Models as stages: the registry and its errors, hot reload, live monitoring against a plain-loop reference, the ensemble stage against SignalStage, the CLI."
import contextlib
import io
import threading
import numpy as np
import pytest
from velox.core import NS, ConfigError
from velox.trade.ensemble import Ensemble, SignalRules, SignalStage, brier
from velox.trade.models import LogisticModel, indicator_features
from velox.market.features import FeatureStage
from velox.feeds.recorded import Catalog
from velox.trade.predict import Combiner, EnsembleStage, Inverted, PredictionParams, PredictionStage
from velox.trade.registry import ModelRegistry
from velox.trade.training import day_index, fit_models, register_all
from velox.stage import Chain
from velox.runtime.runners import run_frame
from reference_trading import DATA

DAYS = ('2013-10-08', '2013-10-09', '2013-10-10')  # fit, validate, live


@pytest.fixture(scope='module')
def week():
    cat = Catalog(DATA)
    return run_frame(FeatureStage(), [s for sym in ('IBM', 'BAC') for d in DAYS for s in cat.find(sym, d, kinds=('trade',))])['indicator']


@pytest.fixture(scope='module')
def fitted(week):
    return fit_models(week, DAYS[:2])


@pytest.fixture
def reg(tmp_path, fitted):
    r = ModelRegistry(tmp_path / 'reg')
    register_all(r, fitted, promote=True)
    return r


def _day(week, i):
    return week[day_index(week['ts'], DAYS[i:i + 1]) == 0]


def _feed(stage, pieces, kind='indicator'):
    out = {}
    for p in pieces:
        for k, b in stage.process_window([(kind, p)]): out.setdefault(k, []).append(b)
    return {k: np.concatenate(v) for k, v in out.items()}


def _cuts(b, n, rng):
    ok = np.flatnonzero(b['ts'][1:] != b['ts'][:-1]) + 1  # upstream never cuts inside one base bar's outputs
    return np.split(b, np.sort(rng.choice(ok, n - 1, replace=False)))


def _assert_same(a, b, skip=()):
    assert a.keys() == b.keys()
    for k in a:
        x, y = np.sort(a[k], order=['symbol', 'ts', 'id']), np.sort(b[k], order=['symbol', 'ts', 'id'])
        assert len(x) == len(y), k
        for f in x.dtype.names:
            if f not in skip: assert np.array_equal(x[f], y[f]), (k, f)


def test_registry_errors_name_the_path_and_what_exists(tmp_path, fitted):
    r = ModelRegistry(tmp_path / 'nope')
    with pytest.raises(ConfigError, match=str(tmp_path / 'nope')): r.current('lr')
    v = r.register(fitted['lr'][0], 'lr', fitted['lr'][1])
    with pytest.raises(ConfigError, match='no version promoted'): r.current('lr')
    with pytest.raises(ConfigError, match=r"model 'gbt': not in the registry .*it has: lr"): r.promote('gbt', v)
    with pytest.raises(ConfigError, match=f"version 'deadbeef': not found .*versions: {v}"): r.promote('lr', 'deadbeef')
    with pytest.raises(ConfigError, match='not found'): r.meta('lr', '../../etc')
    with pytest.raises(ConfigError, match='1-16 letters'): r.register(fitted['lr'][0], 'bad name!')
    (tmp_path / 'nope' / 'lr' / f'{v}.model').write_bytes(b'garbage')
    r.promote('lr', v)
    with pytest.raises(ConfigError, match=f'{v}.model: cannot load'): r.current('lr')
    (tmp_path / 'nope' / 'lr' / f'{v}.json').write_text('{')
    with pytest.raises(ConfigError, match=f'{v}.json: not valid JSON'): r.versions('lr')


def test_register_and_promote_round_trip_and_leave_no_temp_files(reg, fitted):
    assert reg.names() == ['ensemble', 'gbt', 'lr']
    for name, (m, metrics) in fitted.items():
        v, loaded, meta = reg.current(name)
        assert v == m.version.rsplit('-', 1)[1] and loaded.version == m.version
        assert meta['metrics']['brier'] == pytest.approx(metrics['brier']) and meta['metrics']['validation_days'] == [DAYS[1]]
    assert not [p for p in reg.root.rglob('.*')]


def test_a_concurrent_reader_sees_one_promoted_version_or_the_other(reg, fitted, week):
    v1 = reg.promoted('lr')
    v2 = reg.register(LogisticModel(l2=7.0).fit(*_labelled(week)), 'lr')
    seen, stop = set(), threading.Event()
    def read():
        while not stop.is_set(): seen.add(reg.promoted('lr'))
    t = threading.Thread(target=read); t.start()
    for i in range(300): reg.promote('lr', (v1, v2)[i % 2])
    stop.set(); t.join()
    assert seen <= {v1, v2} and seen


def _labelled(ind):
    from velox.trade.models import forward_labels
    rows, X = indicator_features(ind)
    ret, ok = forward_labels(rows)
    return X[ok], (ret[ok] > 0).astype(float)


def test_prediction_stage_output_is_the_same_however_the_day_is_cut(reg, week):
    live = _day(week, 2)
    whole = _feed(PredictionStage(reg, 'gbt', PredictionParams(window=60, every=15)), [live])
    assert len(whole['prediction']) > 800 and len(whole['model_metric']) > 20
    rng = np.random.default_rng(11)
    for n in (2, 40, 300):
        _assert_same(whole, _feed(PredictionStage(reg, 'gbt', PredictionParams(window=60, every=15)), _cuts(live, n, rng)), skip=('infer_us',))
    pieces = _cuts(live, 50, rng)  # a worker restarts mid-day from a snapshot of the per-symbol state
    first = PredictionStage(reg, 'gbt', PredictionParams(window=60, every=15))
    a = _feed(first, pieces[:20])
    second = PredictionStage(reg, 'gbt', PredictionParams(window=60, every=15))
    second.restore(first.snapshot())
    b = _feed(second, pieces[20:])
    _assert_same(whole, {k: np.concatenate([a[k], b[k]]) for k in whole}, skip=('infer_us',))


def test_live_metrics_match_a_plain_loop_over_forward_outcomes(reg, week, fitted):
    live, window, every, h = _day(week, 2), 60, 15, 300
    out = _feed(PredictionStage(reg, 'lr', PredictionParams(window=window, every=every, horizon_s=h)), _cuts(_day(week, 2), 25, np.random.default_rng(2)))
    pred, met = out['prediction'], out['model_metric']
    meta = reg.current('lr')[2]['metrics']
    for sym in ('IBM', 'BAC'):
        p = pred[pred['symbol'] == sym]
        rows, X = indicator_features(live[live['symbol'] == sym])
        assert np.array_equal(p['ts'], rows['ts']) and np.array_equal(p['prob'], fitted['lr'][0].predict_proba(X))
        resolved = []  # (resolving row, prediction, up?) by plain loops
        for i in range(len(p)):
            for j in range(len(p)):
                if p['ts'][j] >= p['ts'][i] + h * NS:
                    if p['ts'][j] // (86400 * NS) == p['ts'][i] // (86400 * NS) and p['close'][j] != p['close'][i]:
                        resolved.append((j, i, float(p['close'][j] > p['close'][i])))
                    break
        resolved.sort()
        want = []
        for k in range(every, len(resolved) + 1, every):
            last = resolved[max(0, k - window):k]
            pp, yy = np.array([p['prob'][i] for _, i, _ in last]), np.array([y for *_, y in last])
            want.append((p['ts'][resolved[k - 1][0]], len(last), ((pp >= 0.5) == yy).mean(), brier(pp, yy)))
        m = met[met['symbol'] == sym]
        assert len(m) == len(want) > 3
        for row, (t, n, hit, b) in zip(m, want):
            assert row['ts'] == t and row['n'] == n and row['hit_rate'] == pytest.approx(hit) and row['brier'] == pytest.approx(b)
            assert row['ref_brier'] == meta['by_symbol'][sym]['brier'] and row['drift'] == (n == window and (
                b > row['ref_brier'] + 0.03 or hit < row['ref_hit_rate'] - 0.10))


def test_hot_reload_switches_to_a_newly_promoted_version_without_restart(reg, week, fitted):
    live = _day(week, 2)
    mid = np.median(live['ts'])
    early, late = live[live['ts'] < mid], live[live['ts'] >= mid]
    new = LogisticModel(l2=7.0).fit(*_labelled(week[day_index(week['ts'], DAYS[:2]) >= 0]))
    fast, slow = PredictionStage(reg, 'lr', PredictionParams(reload_every_s=0)), PredictionStage(reg, 'lr', PredictionParams(reload_every_s=3600))
    p1 = _feed(fast, [early])['prediction']
    _feed(slow, [early])
    v_old, v_new = reg.promoted('lr'), reg.register(new, 'lr')
    reg.promote('lr', v_new)
    p2, p2_slow = _feed(fast, [late])['prediction'], _feed(slow, [late])['prediction']
    assert set(p1['version']) == {v_old} and set(p2['version']) == {v_new}
    assert set(p2_slow['version']) == {v_old}  # checks PROMOTED at most every reload_every_s
    for p, m, part in ((p1, fitted['lr'][0], early), (p2, new, late)):
        for sym in ('IBM', 'BAC'):
            assert np.array_equal(p['prob'][p['symbol'] == sym], m.predict_proba(indicator_features(part[part['symbol'] == sym])[1]))


def test_a_broken_promotion_keeps_the_running_version(reg, week):
    stage = PredictionStage(reg, 'lr', PredictionParams(reload_every_s=0))
    v_old = stage.version
    v_bad = reg.register(LogisticModel(l2=3.0).fit(*_labelled(_day(week, 0))), 'lr')
    (reg.root / 'lr' / f'{v_bad}.model').write_bytes(b'truncated')
    reg.promote('lr', v_bad)
    p = _feed(stage, [_day(week, 2)])['prediction']
    assert set(p['version']) == {v_old}


def test_drift_is_raised_against_unrealistic_validation_figures_and_not_against_the_true_ones(reg, week, fitted):
    m, figures = fitted['gbt']
    reg.promote('boasted', reg.register(m, 'boasted', {**figures, 'by_symbol': {}, 'brier': 0.15, 'hit_rate': 0.8}))
    val = _day(week, 1)  # the day the true figures were measured on
    bad, good = (_feed(PredictionStage(reg, n), [val])['model_metric'] for n in ('boasted', 'gbt'))
    assert np.array_equal(bad[['ts', 'symbol', 'n', 'hit_rate', 'brier']], good[['ts', 'symbol', 'n', 'hit_rate', 'brier']])
    assert (bad['n'] == 200).sum() >= 4
    assert (bad['drift'] == (bad['n'] == 200)).all()  # every full window; no verdict before the window is full
    assert not good['drift'].any()


def test_an_inverted_release_is_flagged_on_the_validation_and_the_live_day(reg, week, fitted):
    m, figures = fitted['gbt']
    reg.promote('flipped', reg.register(Inverted(m), 'flipped', figures))
    for day in (1, 2):
        bad = _feed(PredictionStage(reg, 'flipped'), [_day(week, day)])['model_metric']
        full = bad[bad['n'] == 200]
        assert len(full) >= 4 and full['drift'].mean() > 0.5, (day, full['drift'])


def test_ensemble_stage_gives_the_signals_of_signal_stage_with_the_same_models(reg, week, fitted):
    live = _day(week, 2)
    comb = fitted['ensemble'][0]
    ens = Ensemble([fitted['lr'][0], fitted['gbt'][0]])
    ens.weights, ens.cal = comb.weights, comb.cal
    rules = SignalRules(min_tier='C', ttl_s=90, k_stop=0.8, k_target=2.0, vol_window=20)
    a = run_frame(Chain(PredictionStage(reg, 'lr'), PredictionStage(reg, 'gbt'), EnsembleStage(reg, rules=rules)), {'indicator': live})['signal']
    b = run_frame(SignalStage(ens, rules), {'indicator': live})['signal']
    assert len(a) == len(b) > 1000 and set(a['stage']) == {'raw', 'calibrated', 'filtered', 'final'}
    _assert_same({'signal': a}, {'signal': b}, skip=('version',))
    assert set(a['version']) == {reg.promoted('ensemble')}


def test_ensemble_stage_joins_predictions_that_arrive_in_different_windows(reg, week):
    live = _day(week, 2)
    preds = {m: _feed(PredictionStage(reg, m), [live])['prediction'] for m in ('lr', 'gbt')}
    whole = _feed(EnsembleStage(reg), [np.concatenate([preds['lr'], preds['gbt']])], 'prediction')
    rng = np.random.default_rng(5)
    lr_parts, gbt_parts = _cuts(np.sort(preds['lr'], order='ts'), 30, rng), _cuts(np.sort(preds['gbt'], order='ts'), 7, rng)
    stage = EnsembleStage(reg)
    pieces = [lr_parts[0]] + [np.concatenate(x) for x in zip(gbt_parts[:-1], lr_parts[1:7])] + lr_parts[7:] + [gbt_parts[-1]]
    cut = _feed(stage, pieces, 'prediction')
    _assert_same(whole, cut)
    assert not _feed(stage, [preds['lr'][:100], preds['gbt'][:100]], 'prediction')  # a redelivery emits nothing


def test_ensemble_stage_refuses_a_combiner_of_other_models(fitted):
    with pytest.raises(ConfigError, match=r"expected one combining models \['lr', 'xgb'\]"):
        EnsembleStage(fitted['ensemble'][0], models=('lr', 'xgb'))
    assert isinstance(fitted['ensemble'][0], Combiner)


def _velox(*args):
    from velox.face.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try: main(list(args)); code = 0
        except SystemExit as e: code = e.code
    return code, out.getvalue()


def test_cli_trains_lists_and_promotes(tmp_path):
    r = str(tmp_path / 'reg')
    code, text = _velox('models', 'train', '--symbols', 'BAC', '--days', '2013-10-09,2013-10-08', '--data-dir', str(DATA),
                        '--registry', r, '--horizon', '600')
    assert code == 0, text
    reg = ModelRegistry(r)
    assert reg.names() == ['ensemble', 'gbt', 'lr'] and reg.promoted('lr') is None  # no --promote
    meta = reg.versions('gbt')[0]
    assert meta['metrics']['horizon_s'] == 600 and meta['metrics']['train_days'] == ['2013-10-08'] and meta['metrics']['symbols'] == ['BAC']
    assert _velox('models', 'promote', 'gbt', meta['version'], '--registry', r)[0] == 0 and reg.promoted('gbt') == meta['version']
    code, text = _velox('models', 'list', '--registry', r)
    assert code == 0 and any(meta['version'] in ln and '*' in ln for ln in text.splitlines())
    code, text = _velox('models', 'promote', 'svm', 'abc', '--registry', r)
    assert code == 2 and "model 'svm': not in the registry" in text
    code, text = _velox('models', 'list', '--registry', str(tmp_path / 'missing'))
    assert code == 2 and str(tmp_path / 'missing') in text
    code, text = _velox('models', 'train', '--days', '2013-10-08,2013-10-09', '--tf', '120', '--registry', r, '--data-dir', str(DATA))
    assert code == 2 and '--tf 120' in text


def test_a_worker_parameter_file_maps_its_flat_keys_onto_the_stage_settings(reg):
    from velox.runtime.stages import ensemble_stage, predict_stage
    p = predict_stage('lr', {'registry': str(reg.root), 'horizon_s': 120, 'window': 30, 'tol_hit': 0.2})
    assert p.params == PredictionParams(horizon_s=120, window=30, tol_hit=0.2) and p.name == 'predict.lr'
    e = ensemble_stage({'registry': str(reg.root), 'models': ['lr', 'gbt'], 'min_tier': 'C', 'ttl_s': 90, 'vol_bps': [0.0, 50.0],
                        'max_buffer': 5})
    assert e.rules == SignalRules(min_tier='C', ttl_s=90, vol_bps=[0.0, 50.0]) and e.models == ('lr', 'gbt') and e.max_buffer == 5
    with pytest.raises(ConfigError, match="predict.lr parameters: .*'windw'"): predict_stage('lr', {'registry': str(reg.root), 'windw': 3})
    with pytest.raises(ConfigError, match="ensemble parameters: .*'min_teir'"): ensemble_stage({'registry': str(reg.root), 'min_teir': 'C'})
    with pytest.raises(ConfigError, match='predict.lr parameters: horizon_s, window, every'): predict_stage('lr', {'registry': str(reg.root), 'every': 0})

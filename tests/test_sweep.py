"""`velox.runtime.sweep` on two real symbol-day windows (IBM 2013-10-08 and 2013-10-09, 10:00-10:30 New York time).

A 2x2 grid swept on a local Dask cluster (two workers) gives the table an independent loop gives: each cell run
through the deployed detect stage (`detect_stage`, NBBO included) and `markouts`, pooled with pandas. A second sweep
over the same directory calls the evaluation function zero times (counted), and one whose cell file was removed
calls it once. The walk-forward choice for a day is the best set of the earlier days, computed here by hand, and stays
so whatever the day's own cells and later ones say."""
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from velox.core import clock_ns
from velox.detect.markouts import markouts
from velox.detect.params import detect_stage
from velox.feeds.recorded import Catalog
from velox.runtime.runners import run_frame
from velox.runtime.sweep import SweepSettings, evaluate_cell, param_grid, sweep, walk_forward

DATA = Path(__file__).resolve().parent.parent / 'replay' / 'data'
DAYS = ['2013-10-08', '2013-10-09']
SETTINGS = SweepSettings(data=str(DATA), window=('10:00', '10:30'))
GRID = param_grid({'tolerance_bps': [0.5, 5.0], 'min_size': [0, 200]})
CALLS = []


def counting_evaluate(params, symbol, day, settings):
    CALLS.append((symbol, day))
    return evaluate_cell(params, symbol, day, settings)


@pytest.fixture(scope='module')
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp('sweep')
    return sweep(GRID, ['IBM'], DAYS, SETTINGS, out, scheduler='threads', workers=2, progress=False), out


def reference(params):
    "Pooled alert count and mean markouts (alerts, matched random times) of `params` over both windows, by hand."
    al, base = [], []
    for day in DAYS:
        q, tr = (s.load() for s in Catalog(DATA).find('IBM', day))
        lo, hi = clock_ns(day, '10:00'), clock_ns(day, '10:30')
        q, tr = (x[(x['ts'] >= lo) & (x['ts'] < hi)] for x in (q, tr))
        res = run_frame(detect_stage(params), {'quote': q, 'trade': tr}, collect=('nbbo', 'alert'))
        mk = markouts(res['alert'], res['nbbo'])
        al.append(mk.alerts); base.append(mk.baseline)
    al, base = pd.concat(al), pd.concat(base)
    return {'alerts': len(al), **{f'mean_{h}': al[f'm_{h}'].mean() for h in ('1s', '10s', '1m', '5m')},
            **{f'base_{h}': base[f'm_{h}'].mean() for h in ('1s', '10s', '1m', '5m')}}


def test_sweep_on_a_dask_cluster_equals_each_cell_evaluated_directly(swept):
    r, _ = swept
    assert (r.computed, r.reused, len(r.table)) == (8, 0, 4)
    for p in GRID:
        row = r.table[(r.table['p_tolerance_bps'] == p['tolerance_bps']) & (r.table['p_min_size'] == p['min_size'])].iloc[0]
        want = reference(p)
        assert row['alerts'] == want['alerts']
        np.testing.assert_allclose([row[k] for k in want if k != 'alerts'], [want[k] for k in want if k != 'alerts'], rtol=1e-9, atol=1e-12)
    assert r.table['alerts'].nunique() > 1  # the parameters matter on this data


def test_resumed_sweep_recomputes_nothing_and_a_lost_cell_once(swept):
    r, out = swept
    CALLS.clear()
    again = sweep(GRID, ['IBM'], DAYS, SETTINGS, out, scheduler='threads', workers=2, progress=False, evaluate=counting_evaluate)
    assert CALLS == [] and (again.computed, again.reused) == (0, 8)
    pd.testing.assert_frame_equal(again.table.drop(columns='manifest'), r.table.drop(columns='manifest'))
    next((out / 'cells').glob('*.json')).unlink()
    CALLS.clear()
    sweep(GRID, ['IBM'], DAYS, SETTINGS, out, scheduler='serial', progress=False, evaluate=counting_evaluate)
    assert len(CALLS) == 1


def test_walk_forward_chooses_on_earlier_days_only(swept):
    r, _ = swept
    c = r.cells
    first = c[c['day'] == DAYS[0]]
    excess = first['sum_1m'] / first['cnt_1m'] - first['base_sum_1m'] / first['base_cnt_1m']
    best = first.assign(x=excess).sort_values(['x', 'pid'], ascending=[False, True])['pid'].iloc[0]
    assert r.walk['chosen'].tolist() == [best]
    rng = np.random.default_rng(0)
    for _ in range(10):  # the test day's cells rewritten at random: the choice stays
        c2 = c.copy()
        later = c2['day'] >= DAYS[1]
        for col in ('sum_1m', 'base_sum_1m', 'sum_10s'): c2.loc[later, col] = rng.normal(0, 100, later.sum())
        assert walk_forward(c2, SETTINGS)['chosen'].tolist() == [best]

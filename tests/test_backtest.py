"Backtests on real replays: windowed performance against a pandas recomputation, cut invariance, the report, the CLI."
import hashlib, json, math, re, subprocess, sys
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from velox.trade.performance import PerformanceStage, round_trips
from velox.runtime.backtest import backtest
from velox.face.research import report
from velox.core import NS
from velox.trade.ensemble import Ensemble, SignalRules, SignalStage
from velox.trade.models import Model
from velox.events import PRICE_SCALE
from velox.trade.risk import Account, Limits, Sizer, Strategy
from reference_trading import DATA
from velox.feeds.recorded import Catalog

ROOT = Path(__file__).resolve().parent.parent
WINDOW_S, EVERY_S = 1800, 120


@pytest.fixture(scope='module')
def res():
    "Two test days of IBM and BAC, two accounts, one strategy allowed to add to a position (max 200 shares)."
    accts = (Account('alice', (Strategy('ensemble', Limits(max_position=100), Sizer('fixed', 100)),
                               Strategy('tier_a', Limits(max_position=200), Sizer('fixed', 100)))),
             Account('bob', (Strategy('ensemble', Limits(max_position=300), Sizer('fixed', 300)),)))
    return backtest(['IBM', 'BAC'], ['2013-10-09', '2013-10-10'], DATA, accts, min_tier={'ensemble': 'B', 'tier_a': 'A'},
                    fee_per_share=0.005, window_s=WINDOW_S, every_s=EVERY_S)


# -- an independent reference: round trips from the fills' cash, windows with pandas --------------------------------
def trips_from_fills(fills) -> dict:
    "{(account, strategy): [(close_ts, net pnl)]}: walk each symbol's fills; a trip ends when the position is flat or crosses zero."
    out, state = {}, {}
    for f in fills:
        key, sym = (str(f['account']), str(f['strategy'])), str(f['symbol'])
        q, cash = state.get(key + (sym,), (0.0, 0.0))
        side, qty, px = int(f['side']), float(f['qty']), int(f['price']) / PRICE_SCALE
        closing = min(qty, abs(q)) if q and (q > 0) != (side > 0) else 0.0
        cash += -side * closing * px - float(f['fee'])
        q += side * closing
        if closing and abs(q) < 1e-9:
            out.setdefault(key, []).append((int(f['ts']), cash))
            q, cash = 0.0, 0.0
        rest = qty - closing
        if rest > 1e-9: q, cash = q + side * rest, cash - side * rest * px
        state[key + (sym,)] = (q, cash)
    return out


def equity_before(eq:pd.Series, t:int) -> float:
    "The book's equity as of `t`: its last update strictly before `t` (0 before the first)."
    before = eq[eq.index < t]
    return float(before.iloc[-1]) if len(before) else 0.0


def reference_performance(fills, positions, window_s, every_s) -> pd.DataFrame:
    W, E, M = window_s * NS, every_s * NS, 60 * NS
    events = np.sort(np.concatenate([fills['ts'], positions['ts']]))
    bounds = np.arange((events[0] // E + 1) * E, (events[-1] // E + 1) * E + 1, E)
    # a boundary is reported when its window [B - W, B) holds at least one event
    bounds = [int(B) for B in bounds if np.searchsorted(events, B, 'left') > np.searchsorted(events, B - W, 'left')]
    pos = pd.DataFrame({k: positions[k] for k in ('ts', 'account', 'strategy', 'equity')})
    fl = pd.DataFrame({k: fills[k] for k in ('ts', 'account', 'strategy')})
    trips, rows = trips_from_fills(fills), []
    for (acct, strat), g in pos.groupby(['account', 'strategy'], sort=True):
        first = min(g['ts'].min(), fl[(fl['account'] == acct) & (fl['strategy'] == strat)]['ts'].min()) // M * M
        eq = pd.Series(g['equity'].to_numpy(), index=g['ts'].to_numpy())
        tr = pd.DataFrame(trips.get((acct, strat), []), columns=['ts', 'pnl'])
        for B in bounds:
            if B <= first: continue
            lo = B - W
            path = pd.Series([equity_before(eq, lo)] + eq[(eq.index >= lo) & (eq.index < B)].tolist())
            dd = path.cummax() - path
            minutes = pd.Series([equity_before(eq, m) for m in range(max(lo, first), B + 1, M)]).diff().dropna()
            sd = minutes.std()  # pandas: sample standard deviation
            t = tr[(tr['ts'] >= lo) & (tr['ts'] < B)]
            wins = int((t['pnl'].round(6) > 0).sum())
            rows.append(dict(ts=B, account=acct, strategy=strat, trades=len(t), wins=wins, win_rate=wins / len(t) if len(t) else math.nan,
                             pnl=path.iloc[-1] - path.iloc[0], drawdown=dd.iloc[-1], max_drawdown=dd.max(), equity=path.iloc[-1],
                             sharpe=minutes.mean() / sd * math.sqrt(252 * 390) if len(minutes) >= 2 and sd > 1e-9 else math.nan))
    return pd.DataFrame(rows).sort_values(['ts', 'account', 'strategy'], kind='stable').reset_index(drop=True)


def test_windowed_performance_equals_pandas_recomputation_from_fills_and_positions(res):
    assert len(res.fills) > 100 and {(str(a), str(s)) for a, s in zip(res.fills['account'], res.fills['strategy'])} == \
        {('alice', 'ensemble'), ('alice', 'tier_a'), ('bob', 'ensemble')}
    assert (np.abs(res.positions['qty']) > 100).any()  # tier_a and bob add to or hold more than one lot
    ref = reference_performance(res.fills, res.positions, WINDOW_S, EVERY_S)
    got = pd.DataFrame({k: res.performance[k] for k in res.performance.dtype.names})
    assert len(ref) > 500 and len(got) == len(ref)
    assert (got['ts'].to_numpy() == ref['ts'].to_numpy()).all()
    assert got[['account', 'strategy']].values.tolist() == ref[['account', 'strategy']].values.tolist()
    assert (got['window_s'] == WINDOW_S).all() and (got['symbol'] == '').all() and got['id'].is_unique
    assert (got['trades'].to_numpy() == ref['trades'].to_numpy()).all() and (got['wins'].to_numpy() == ref['wins'].to_numpy()).all()
    assert got['trades'].max() >= 5
    for c in ('win_rate', 'pnl', 'drawdown', 'max_drawdown', 'equity'):
        np.testing.assert_allclose(got[c], ref[c], atol=1e-6, equal_nan=True, err_msg=c)
    np.testing.assert_allclose(got['sharpe'], ref['sharpe'], rtol=1e-9, atol=1e-9, equal_nan=True)
    assert got['sharpe'].notna().sum() > 100 and (got['max_drawdown'] > 0).any()


def test_performance_is_the_same_however_the_input_is_cut(res):
    fills, pos = res.fills, res.positions
    def run(cuts, snapshot_at=None):
        st, out = PerformanceStage(WINDOW_S, EVERY_S), []
        edges = np.r_[fills['ts'].min(), cuts, np.iinfo('i8').max]
        for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            f, p = fills[(fills['ts'] >= lo) & (fills['ts'] < hi)], pos[(pos['ts'] >= lo) & (pos['ts'] < hi)]
            out += st.process_window([('fill', f), ('position', p)])
            if i == snapshot_at: fresh = PerformanceStage(WINDOW_S, EVERY_S); fresh.restore(st.snapshot()); st = fresh
        return np.concatenate([b for _, b in out + st.flush()])
    whole = run([])
    assert whole.tobytes() == res.performance.tobytes()  # the backtest fed it as the replay's windows released them
    rng = np.random.default_rng(7)
    ts = np.unique(pos['ts'])
    for n in (3, 40, len(ts)):
        cuts = np.sort(rng.choice(ts, n, replace=False))
        assert run(cuts).tobytes() == whole.tobytes(), n
    assert run(np.sort(rng.choice(ts, 25, replace=False)), snapshot_at=10).tobytes() == whole.tobytes()


def test_report_has_one_trades_row_per_round_trip_counted_from_fills(res, tmp_path):
    page = Path(report(res, tmp_path / 'r.html')).read_text()
    trades = re.search(r'<table[^>]*id="trades".*?</table>', page, re.S).group(0)
    n_rows = len(re.findall(r'<tr', trades.split('<tbody>')[1]))
    ref = trips_from_fills(res.fills)
    assert n_rows == sum(map(len, ref.values())) > 20
    trips = round_trips(res)
    for key, ts_pnl in ref.items():  # and the table's PnL per trip is the fills' cash
        t = trips[(trips['account'] == key[0]) & (trips['strategy'] == key[1])]
        np.testing.assert_allclose(np.sort(t['pnl']), np.sort([p for _, p in ts_pnl]), atol=1e-6)
    assert set(trips['tier']) <= {'A', 'B'} and (trips[trips['strategy'] == 'tier_a']['tier'] == 'A').all()
    for tid in ('headline', 'tiers', 'risk', 'risk_events'): assert f'id="{tid}"' in page
    assert not re.search(r'<script[^>]*src=', page)  # self-contained: BokehJS inlined


def _velox(*args, timeout=120):
    return subprocess.run([sys.executable, '-m', 'velox.face.cli', *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_cli_backtest_writes_the_report_end_to_end(tmp_path):
    out = tmp_path / 'bt.html'
    p = _velox('backtest', '--symbols', 'IBM', '--days', '2013-10-09', '--out', str(out), '--data-dir', str(DATA), '--no-progress')
    assert p.returncode == 0, p.stderr
    assert out.exists() and 'id="trades"' in out.read_text() and str(out) in p.stdout
    assert 'paper' in p.stdout and 'ensemble' in p.stdout  # the headline table
    (man,) = tmp_path.glob('manifest-*.json')  # provenance beside the report: named in the output and the report's header
    m = json.loads(man.read_text())
    assert f"provenance {m['id']}" in p.stdout and man.name == f"manifest-{m['id']}.json"
    assert re.search(r'<h1>([^<]*)</h1>', out.read_text())[1].endswith(f" · {m['id']}")
    read = [s for s in Catalog(DATA).sources() if s.symbol == 'IBM' and s.kind in ('trade', 'quote') and s.day <= '2013-10-09']
    assert len({s.day for s in read}) >= 3  # two days to fit and validate on, and the test day
    assert sorted((d['day'], d['kind'], d['sha256']) for d in m['data']) == sorted(
        (s.day, s.kind, hashlib.sha256(Path(s.path).read_bytes()).hexdigest()) for s in read)
    assert m['what']['days'] == ['2013-10-09'] and set(m['params']['models']) == {'2013-10-09'}


def test_cli_backtest_bad_input_gives_a_clear_error(tmp_path):
    p = _velox('backtest', '--symbols', 'IBM,NOPE', '--days', '2013-10-09', '--data-dir', str(DATA))
    assert p.returncode == 2 and "no recorded lean_tick data for 'NOPE'" in p.stderr and 'Traceback' not in p.stderr
    p = _velox('backtest', '--symbols', 'IBM', '--days', '2013-10-19', '--data-dir', str(DATA))
    assert p.returncode == 2 and 'available dates: 2013-10-07' in p.stderr
    bad = tmp_path / 'accounts.yaml'
    bad.write_text('accounts:\n  - name: alice\n    strategies:\n      - {name: ensemble, limits: {max_loss: 5}}\n')
    p = _velox('backtest', '--days', '2013-10-09', '--accounts', str(bad), '--data-dir', str(DATA))
    assert p.returncode == 2 and str(bad) in p.stderr and "unknown key(s) ['max_loss']" in p.stderr
    p = _velox('backtest', '--days', '2013-10-09', '--accounts', str(tmp_path / 'missing.yaml'), '--data-dir', str(DATA))
    assert p.returncode == 2 and 'missing.yaml: accounts file not found' in p.stderr


class AlwaysUp(Model):
    "A stub model: P(up) = 0.7 for every row."
    name = 'up'
    def fit(self, X, y): return self
    def predict_proba(self, X): return np.full(len(X), 0.7)


def test_a_ready_signal_stage_trades_from_the_first_recorded_day_and_ends_each_day_flat():
    X = np.zeros((10, 8))
    ens = Ensemble([AlwaysUp()], weights=[1.0], calibration='none').fit(X, np.ones(10), X, np.ones(10))
    r = backtest(['IBM'], ['2013-10-07'], DATA, signals=SignalStage(ens, SignalRules(strategy='ensemble', min_tier='A')), flat_by='15:30')
    assert r.models == {'2013-10-07': ''}  # nothing fitted, no earlier day needed
    trips = round_trips(r)
    assert len(trips) > 3 and (trips['side'] == 'long').all() and (trips['tier'] == 'A').all()
    t = pd.to_datetime(r.fills['ts'], utc=True).tz_convert('America/New_York')
    late = r.fills[(t.hour * 60 + t.minute) >= 15 * 60 + 30]
    assert len(late) == 1 and late['side'][0] == -1  # after 15:30 only the flatten sells what is open
    assert r.positions['qty'][-1] == 0 and trips['exit_reason'].iloc[-1] == 'flatten'

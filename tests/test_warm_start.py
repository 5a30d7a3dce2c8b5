"""Warm starts (issue 16, part 4): a run over a window [start, end) first replays the day before `start` to rebuild
its state, so its alerts, NBBO, bars, quote bars and indicators equal the full-day run's, restricted to the window.

The restriction, precisely: the full-day run's outputs stamped in [start, end) that it had released by the time its
input reached `end` (produced while processing inputs stamped before `end`). A bar stamped at its open that is still
forming at `end`, or an hour's indicator row closed only by a later bar, is not final at `end`, so neither run emits it
in the window; one already released is in both. A bar that opened before `start` is not the window's (its stamp is
before `start`), even though the warm run built it.

The reference is one full-day run per day with both symbols, its input cut at every window's `end` so that each
output's release time is known; each window is then run on its own with `WarmReplay`, as `velox run --start --end`
runs. Windows are drawn at random (the seed is printed; set VELOX_WARM_SEED to replay one) over two days, in
pre-market and after-hours, where quotes are minutes apart, and in the regular session.
"""
import os
from pathlib import Path
import numpy as np
import pytest
from velox.core import NS, clock_ns, clock_text
from velox.detect.params import detect_stage
from velox.feeds.recorded import Catalog
from velox.feeds.replay import Replay, WarmReplay
from velox.market.bars import BarStage
from velox.market.features import FeatureStage
from velox.runtime.runners import run_replay
from velox.stage import Chain

DATA = Path(__file__).resolve().parent.parent / 'replay' / 'data'
CAT = Catalog(DATA)
DAYS, SYMBOLS = ('2013-10-08', '2013-10-10'), ('IBM', 'BAC')
KINDS = ('nbbo', 'alert', 'bar', 'quote_bar', 'indicator')
SEED = int(os.environ.get('VELOX_WARM_SEED', '16004'))
PERIODS = {'pre-market': ('04:00', '09:30'), 'regular': ('09:30', '16:00'), 'after-hours': ('16:00', '20:00')}


def stage():
    "NBBO + dark-pool detectors, 1-minute trade and quote bars, indicators on 1m/5m/1h (an EMA: no finite look-back)."
    return Chain(detect_stage(), BarStage('1m', quotes=True), FeatureStage(('1m', '5m', '1h')))


def draw_windows(rng, day) -> list:
    """Two windows per period of `day`, 1 to 25 minutes long: one from a random second (bars straddle its edges), one
    on whole minutes (bars end exactly at its end, as in `velox run --start 10:00 --end 10:30`)."""
    out = []
    for period, (a, b) in PERIODS.items():
        lo, hi = clock_ns(day, a), clock_ns(day, b)
        for unit in (1, 60):
            length = int(rng.integers(60 // unit, 25 * 60 // unit + 1)) * unit * NS
            start = lo + int(rng.integers(0, (hi - lo - length) // (unit * NS))) * unit * NS
            out.append((period, start, start + length))
    return out


RNG = np.random.default_rng(SEED)
WINDOWS = {day: draw_windows(RNG, day) for day in DAYS}


def sources(day):
    return [s for sym in SYMBOLS for s in CAT.find(sym, day)]


def full_day(day, cuts) -> dict:
    """The full-day run, each replay window split at `cuts` (window ends): {kind: (outputs, released)}, `released`
    being the upper cut of the input slice that produced each row (inf for what the final flush emits)."""
    st, cuts = stage(), np.array(sorted(set(cuts)), 'i8')
    upper = np.r_[cuts.astype('f8'), np.inf]
    got = {k: [] for k in KINDS}
    def keep(items, rel):
        for k, b in items:
            if k in got and len(b): got[k].append((b, np.full(len(b), rel)))
    for window in Replay(sources(day)).windows(ordered=False):
        items = [(src.kind, b) for src, b in window]
        seg = [np.searchsorted(cuts, b['ts'], 'right') for _, b in items]
        for s in np.unique(np.concatenate(seg)):
            keep(st.process_window([(k, b[g == s]) for (k, b), g in zip(items, seg)]), upper[s])
    keep(st.flush(), np.inf)
    return {k: (np.concatenate([b for b, _ in v]), np.concatenate([r for _, r in v])) if v else (None, None)
            for k, v in got.items()}


@pytest.fixture(scope='module', params=DAYS)
def day_run(request):
    day = request.param
    print(f"\nwarm-start windows, seed {SEED} (VELOX_WARM_SEED), {day}: " +
          ', '.join(f"{p} {'–'.join(clock_text([a, b]))}" for p, a, b in WINDOWS[day]))
    return day, full_day(day, [e for _, _, e in WINDOWS[day]])


def per_symbol(b):
    "Each symbol's rows in the order the stage emitted them (the order a stage guarantees per symbol)."
    return b[np.lexsort((np.arange(len(b)), b['symbol']))]


def assert_same(got, want, what):
    assert len(got) == len(want), f"{what}: {len(got)} rows, the full-day run has {len(want)}"
    got, want = per_symbol(got), per_symbol(want)
    for f in want.dtype.names:  # field by field, so NaN (an indicator before its look-back fills) equals NaN
        np.testing.assert_array_equal(got[f], want[f], err_msg=f"{what}: field {f}")


def restricted(full, kind, lo, hi):
    "The full-day run's `kind` restricted to [lo, hi): stamped inside it and released by inputs before `hi`."
    b, rel = full[kind]
    if b is None: return None
    return b[(b['ts'] >= lo) & (b['ts'] < hi) & (rel <= hi)]


@pytest.mark.parametrize('i', range(6))
def test_a_warm_window_equals_the_full_day_restricted_to_it(day_run, i):
    day, full = day_run
    period, lo, hi = WINDOWS[day][i]
    replay = WarmReplay(sources(day), start=lo, end=hi)
    res = run_replay(stage(), replay)
    where = f"{day} {period} {'–'.join(clock_text([lo, hi]))} (seed {SEED})"
    for kind in KINDS:
        want = restricted(full, kind, lo, hi)
        got = res.outputs.get(kind)
        if want is None or not len(want): assert got is None or not len(got), f"{where}: {kind} the full day has not"; continue
        assert got is not None, f"{where}: no {kind}, the full-day run has {len(want)}"
        assert_same(got, want, f"{where}: {kind}")
    in_window = sum(int(((s.load()['ts'] >= lo) & (s.load()['ts'] < hi)).sum()) for s in replay.sources)
    assert res.events == in_window and res.warm == sum(int((s.load()['ts'] < lo).sum()) for s in replay.sources)


def test_the_windows_cover_sparse_periods_and_the_reference_has_every_kind(day_run):
    "The property is not vacuous: sparse windows exist and the full-day run has every kind of output."
    day, full = day_run
    gaps = []
    for period, lo, hi in WINDOWS[day]:
        if period == 'regular': continue
        q = np.concatenate([s.load()['ts'] for s in sources(day) if s.kind == 'quote'])
        q = np.sort(q[(q >= lo) & (q < hi)])
        gaps.append(np.diff(q).max() if len(q) > 1 else hi - lo)
    assert max(gaps) >= 60 * NS, 'some pre-market or after-hours window has quotes a minute or more apart'
    for kind in KINDS:
        if kind != 'alert': assert full[kind][0] is not None and len(full[kind][0]), f"{day}: the full-day run has no {kind}"


def test_a_cold_window_would_differ_so_the_warm_start_matters(day_run):
    "Started cold (the events before `start` not replayed), bars and indicators start from nothing: they differ."
    day, full = day_run
    def same(got, want):
        if want is None or not len(want): return got is None or not len(got)
        if got is None or len(got) != len(want): return False
        got, want = per_symbol(got), per_symbol(want)
        return all(np.array_equal(got[f], want[f], equal_nan=want[f].dtype.kind == 'f') for f in want.dtype.names)
    differs = []
    for period, lo, hi in WINDOWS[day]:
        cold = run_replay(stage(), Replay(sources(day), start=lo, end=hi)).outputs
        differs += [(period, k) for k in KINDS if not same(cold.get(k), restricted(full, k, lo, hi))]
    assert {p for p, _ in differs} == set(PERIODS), f"{day}: a cold start changed only {differs} (seed {SEED})"


@pytest.mark.kafka
def test_a_window_run_through_kafka_starts_warm_and_equals_the_in_process_window(kafka_bootstrap, tmp_path):
    """`velox run --bus kafka://… --start --end` publishes the warm-up too; the worker releases it by the watermark in
    event time, and only the window's rows are kept and stored: the same NBBO and alerts as the in-process window."""
    from velox.core import Config
    from velox.runtime.job import run
    got = {}
    for name, bus in (('memory', 'memory://'), ('kafka', f'kafka://{kafka_bootstrap}?session_timeout_ms=6000&heartbeat_interval_ms=1000')):
        cfg = Config.load(env={}, data_dir=str(DATA), out_dir=str(tmp_path / name), bus=bus)
        summ, res = run(cfg, list(SYMBOLS), DAYS[0], start='10:00', end='10:20', progress=False)
        got[name] = (summ, res)
    (ms, mem), (ks, kaf) = got['memory'], got['kafka']
    assert ms.warm > 0 and ks.warm == ms.warm and kaf.events == mem.events
    assert len(mem['alert']) > 10
    for k in ('nbbo', 'alert'):
        a, b = (x[k][np.lexsort((x[k]['seq'] if 'seq' in x[k].dtype.names else x[k]['ts'], x[k]['ts'], x[k]['symbol']))] for x in (mem, kaf))
        assert len(a) == len(b) and a.tobytes() == b.tobytes(), k
    assert ks.stored == ms.stored  # only the window's rows reached the store

"""Scale in the suite, small: a synthetic session (24 symbols x 16 minutes) streamed per symbol group and event-time
window gives complete, equal outputs whether the symbols go through one group or are split over two (as two workers
split them), equal to run_frame over all of it held at once; and the peak memory of the stream does not grow with
the length of the period (each length in its own process). On a real broker, 200 synthetic symbols run by one
`velox worker detect` and by two in one group put run_frame's alerts out, every event processed once."""
import json, subprocess, sys
from pathlib import Path
import pytest
from velox.core import NS, clock_ns
from velox.feeds.parquet import ParquetCatalog, ParquetSource
from velox.feeds.recorded import Catalog
from velox.feeds.replay import ArraySource
from velox.feeds.synth import synth_catalog
from velox.runtime.runners import run_frame

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'bench'))
import bench_scale  # noqa: E402  (the bench's streaming loop is what is tested here)

N, START, END = 24, '10:00', '10:16'


@pytest.fixture(scope='module')
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp('scale') / 'synth'
    cat = ParquetCatalog(root, row_group_rows=8192)
    synth_catalog(Catalog(ROOT / 'replay' / 'data'), cat, N, seed=5, window=(START, END), jitter_s=30, progress=False,
                  pool=[('IBM', '2013-10-08'), ('BAC', '2013-10-08')])
    day = cat.days()[0]
    return cat, day, clock_ns(day, START) - 31 * NS, clock_ns(day, END) + 31 * NS


def keys(b):
    return {tuple('nan' if isinstance(v, float) and v != v else v for v in r) for r in b.tolist()} if b is not None else set()


def test_one_group_and_two_groups_give_the_outputs_of_one_run_over_everything(session):
    cat, day, lo, hi = session
    syms = cat.symbols()
    n1, one, _ = bench_scale.stream(cat, syms, lo, hi, N, 120, keep=('alert', 'indicator'), day=day)
    n2, two, _ = bench_scale.stream(cat, syms, lo, hi, N // 2, 120, keep=('alert', 'indicator'), day=day)
    srcs = [ArraySource(k, s, ParquetSource(cat, k, s, day).load()) for s in syms for k in ('quote', 'trade')]
    ref = run_frame(bench_scale.stage(), srcs, collect=('alert', 'indicator'))
    assert n1 == n2 == ref.events == cat.count('quote') + cat.count('trade')
    for kind in ('alert', 'indicator'):
        want = keys(ref.outputs.get(kind))
        assert want, f"no {kind} rows: the comparison would be empty"
        assert keys(one.rows(kind)) == want and keys(two.rows(kind)) == want, kind


PROBE = """
import json, sys
sys.path.insert(0, {bench!r})
import numpy as np, bench_scale
from velox.feeds.parquet import ParquetCatalog
cat = ParquetCatalog({root!r})
bench_scale.stream(cat, cat.symbols(), {lo}, {lo} + 60 * 10**9, 6, 60, day={day!r})  # warm up: imports, JIT, pools
base = bench_scale.rss_mb()[1]
n, out, _ = bench_scale.stream(cat, cat.symbols(), {lo}, {hi}, 6, 60, day={day!r})
print(json.dumps(dict(events=n, peak=bench_scale.rss_mb()[1], base=base)))
"""


def test_peak_memory_does_not_grow_with_the_length_of_the_period(session):
    cat, day, lo, hi = session
    mid = lo + (hi - lo) // 2
    runs = []
    for end in (mid, hi):
        code = PROBE.format(bench=str(ROOT / 'bench'), root=str(cat.root), lo=lo, hi=end, day=day)
        r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-3000:]
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    short, long = runs
    extra = long['events'] - short['events']
    held = extra * 117  # bytes the extra quotes and trades alone would take held as numpy rows (a quote row is 117 B)
    assert extra > 100_000, runs
    assert long['peak'] - short['peak'] < 0.25 * held / 2**20, (runs, held / 2**20)


def test_one_worker_and_two_workers_on_a_broker_put_run_frames_alerts_out(tmp_path):
    """200 synthetic symbols x 2 minutes published as Arrow batches to a real broker (tansu, started by the project's
    own script) and run by one `velox worker detect` process, then by two in one group: every event is processed once,
    both workers get symbols, and the alerts on alerts.darkpool equal run_frame's over the same events held at once."""
    import bench_bus
    from velox.feeds.synth import synth_sources
    srcs = synth_sources(Catalog(ROOT / 'replay' / 'data'), 200, seed=3, window=('10:00', '10:02'), jitter_s=30,
                         pool=[('IBM', '2013-10-08'), ('BAC', '2013-10-08')])
    n = sum(len(s.data) for s in srcs)
    want = bench_bus.expected_keys(srcs)
    assert len(want) > 100, len(want)
    for workers in (1, 2):
        r = bench_bus.run_workers(srcs, workers, 'arrow', want, max_records=500)  # stops with the difference if unequal
        assert r['events'] == sum(r['per_worker']) == n, (workers, r)
        assert r['busy'] == workers, (workers, r['per_worker'])

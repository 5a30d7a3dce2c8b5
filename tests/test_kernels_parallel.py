"""The parallel CPU kernels of velox.market.kernels (numba prange over segments) give the serial kernels' values to the bit
on real trades, also when two Python threads call them at once, under numba's default threading layer and under
workqueue (which aborts the process on concurrent entry unless velox keeps it to one caller at a time)."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The threading layer is chosen once per process, and a workqueue abort would take pytest down: each check runs in a
# fresh interpreter. NUMBA_NUM_THREADS=4 so the parallel driver runs with several threads even on a 1-core machine.
SCRIPT = textwrap.dedent('''
    import sys, threading
    import numba
    import numpy as np
    import velox.market.kernels as K
    from velox.feeds.recorded import Catalog
    from velox.events import PRICE_SCALE

    data, mode = sys.argv[1], sys.argv[2]
    K.PARALLEL_MIN_VALUES = 0  # every call with two segments or more goes parallel
    K.KERNEL_THREADS = 4  # opt in (the default is one core)

    # real trades of four symbols on two feeds, plus one day of BAC cut into pieces of uneven length, with empty and
    # one-print segments in between: 0 to 33,381 values per segment
    cat = Catalog(data)
    pick = {('BTCUSDT', '2024-08-08'), ('ETHUSDT', '2024-08-08'), ('IBM', '2013-10-08'), ('BAC', '2013-10-08')}
    trades = {s.symbol: s.load() for s in cat.sources() if s.kind == 'trade' and (s.symbol, s.day) in pick}
    assert sorted(trades) == ['BAC', 'BTCUSDT', 'ETHUSDT', 'IBM'], sorted(trades)
    rng = np.random.default_rng(7)
    bac = trades.pop('BAC')
    cuts = np.sort(rng.choice(len(bac), 60, replace=False))
    segs = [bac[:0], trades['BTCUSDT'], trades['ETHUSDT'][:1], trades['ETHUSDT'], bac[:0], bac[:0], trades['IBM'],
            trades['IBM'][5:6], *np.split(bac, cuts), bac[:1], bac[:0]]
    px = np.concatenate([t['price'] / PRICE_SCALE for t in segs])
    sz = np.concatenate([t['size'] for t in segs]).astype(np.float64)
    lens = np.array([len(t) for t in segs])
    offs = np.r_[0, np.cumsum(lens)]
    assert (lens == 0).sum() >= 4 and (lens == 1).sum() >= 3 and lens.max() > 10 * np.median(lens[lens > 1])

    calls = {
        'rolling_sum': lambda: K.rolling_sum(px, offs, 20),
        'rolling_mean': lambda: K.rolling_mean(px, offs, 300),
        'sma': lambda: K.sma(px, offs, 10),
        'rolling_mean_std': lambda: K.rolling_mean_std(px, offs, 20, 1),
        'rolling_std ddof=0 w=3': lambda: K.rolling_std(px, offs, 3, 0),
        'rolling_max': lambda: K.rolling_max(px, offs, 15),
        'rolling_min': lambda: K.rolling_min(px, offs, 300),
        'ewm_mean': lambda: K.ewm_mean(px, offs, 0.1),
        'ewm_std': lambda: K.ewm_std(px, offs, 0.1),
        'ema': lambda: K.ema(px, offs, 12),
        'macd': lambda: K.macd(px, offs),
        'rsi': lambda: K.rsi(px, offs, 14),
        'bollinger': lambda: K.bollinger(px, offs, 20, 2),
        'zscore': lambda: K.zscore(px, offs, 30),
        'momentum': lambda: K.momentum(px, offs, 5),
        'vwap_session': lambda: K.vwap_session(px, sz, offs),
        'vwap_rolling': lambda: K.vwap_rolling(px, sz, offs, 50),
    }
    as_tuple = lambda r: r if isinstance(r, tuple) else (r,)

    def one_core():
        "Every kernel with numba held to one thread (this thread): the serial driver."
        before = numba.get_num_threads()
        numba.set_num_threads(1)
        try: return {name: as_tuple(f()) for name, f in calls.items()}
        finally: numba.set_num_threads(before)

    def same(name, got, want):
        for g, w in zip(as_tuple(got), want, strict=True):
            assert g.shape == px.shape and np.isfinite(w).any(), name  # the comparison is not vacuous
            np.testing.assert_array_equal(g, w, err_msg=name)  # NaNs in the same places, every other value identical

    serial = one_core()
    assert not any(K._CPU[seg][1].signatures for seg in K._SEGS), 'one thread must keep to the serial driver'
    assert numba.get_num_threads() > 1
    if mode == 'equal':
        for name, f in calls.items(): same(name, f(), serial[name])
    else:  # two Python threads, released together, each calling every kernel again and again
        go, errors = threading.Barrier(2), []
        def work():
            try:
                go.wait()
                for _ in range(5):
                    for name, f in calls.items(): same(name, f(), serial[name])
            except BaseException as e: errors.append(e)
        ts = [threading.Thread(target=work) for _ in range(2)]
        for t in ts: t.start()
        for t in ts: t.join()
        assert not errors, errors
    assert all(K._CPU[seg][1].signatures for seg in K._SEGS), 'every parallel driver ran'
    print(f'{mode}: {len(calls)} kernels on {len(px)} values in {len(segs)} segments, '
          f'{numba.get_num_threads()} threads, layer {numba.threading_layer()}')
''')


def run(mode:str, layer:str):
    env = {**os.environ, 'NUMBA_NUM_THREADS': '4'}
    env.pop('NUMBA_THREADING_LAYER', None)
    if layer != 'default': env['NUMBA_THREADING_LAYER'] = layer
    r = subprocess.run([sys.executable, '-c', SCRIPT, str(ROOT / 'replay' / 'data'), mode],
                       env=env, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, f'rc {r.returncode}\n' + r.stdout[-2000:] + r.stderr[-4000:]
    return r.stdout


@pytest.mark.parametrize('layer', ['default', 'workqueue'])
def test_parallel_kernels_equal_the_serial_kernels_bit_for_bit_on_real_trades_with_empty_and_one_print_segments(layer):
    out = run('equal', layer)
    assert 'equal: 17 kernels on' in out and (layer == 'default' or f'layer {layer}' in out), out


@pytest.mark.parametrize('layer', ['default', 'workqueue'])
def test_parallel_kernels_called_from_two_threads_at_once_give_the_serial_values_and_never_abort(layer):
    out = run('threads', layer)
    assert 'threads: 17 kernels on' in out and (layer == 'default' or f'layer {layer}' in out), out


def test_one_core_unless_asked_and_a_bad_setting_is_named():
    "By default a kernel call stays on one core (the parallel driver never compiles); VELOX_KERNEL_THREADS opts in."
    code = ("import numpy as np, velox.market.kernels as K\n"
            "x = np.cumsum(np.random.default_rng(1).normal(size=200_000)) + 1e3\n"
            "K.rolling_mean(x, np.array([0, 50_000, 200_000]), 20)\n"
            "print(K.KERNEL_THREADS, bool(K._CPU[K._rolling_sum][1].signatures))")
    env = {k: v for k, v in os.environ.items() if k != 'VELOX_KERNEL_THREADS'} | {'NUMBA_NUM_THREADS': '4'}
    out = lambda e: subprocess.run([sys.executable, '-c', code], env=e, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out(env).stdout.split() == ['1', 'False']
    assert out(env | {'VELOX_KERNEL_THREADS': '2'}).stdout.split() == ['2', 'True']
    bad = out(env | {'VELOX_KERNEL_THREADS': 'many'})
    assert bad.returncode != 0 and "VELOX_KERNEL_THREADS='many': expected a whole number" in bad.stderr

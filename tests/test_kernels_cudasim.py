"The CUDA kernels of velox.market.kernels, run by numba's CUDA simulator, give the CPU kernels' values on real data."
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# NUMBA_ENABLE_CUDASIM must be set before numba is imported, so the check runs in a fresh interpreter.
SCRIPT = textwrap.dedent('''
    import importlib.util, sys
    import numpy as np
    from numba import cuda
    import velox.market.kernels as K
    from velox.market.kernels_cuda import gpu_available
    from velox.feeds.recorded import Catalog
    from velox.events import PRICE_SCALE

    assert cuda.is_available()  # the simulator's device
    if importlib.util.find_spec('cupy') is None:
        assert not gpu_available()  # no cupy: 'auto' must stay on the CPU
        assert type(K.rolling_mean(np.arange(4.), None, 2)) is np.ndarray

    # three real trade series from different feeds and symbols, N prints each, as three segments
    cat = Catalog(sys.argv[1])
    trades = [s for s in cat.sources() if s.kind == 'trade']
    picked, seen = [], set()
    for s in sorted(trades, key=lambda s: (s.fmt != 'binance', s.symbol, s.day)):
        if s.symbol not in seen and (len(picked) < 2 or s.fmt != picked[0].fmt): picked.append(s); seen.add(s.symbol)
        if len(picked) == 3: break
    assert len(picked) == 3, picked
    N = int(sys.argv[2])
    segs = [s.load()[:N] for s in picked]
    px = np.concatenate([t['price'] / PRICE_SCALE for t in segs])
    sz = np.concatenate([t['size'] for t in segs])
    offs = np.r_[0, np.cumsum([len(t) for t in segs])]

    calls = {
        'rolling_sum': lambda b: K.rolling_sum(px, offs, 20, backend=b),
        'rolling_mean': lambda b: K.rolling_mean(px, offs, 20, backend=b),
        'rolling_mean_std': lambda b: K.rolling_mean_std(px, offs, 20, 1, backend=b),
        'rolling_std ddof=0 w=3': lambda b: K.rolling_std(px, offs, 3, 0, backend=b),
        'rolling_min': lambda b: K.rolling_min(px, offs, 15, backend=b),
        'rolling_max': lambda b: K.rolling_max(px, offs, 15, backend=b),
        'ewm_mean': lambda b: K.ewm_mean(px, offs, 0.1, backend=b),
        'ewm_std': lambda b: K.ewm_std(px, offs, 0.1, backend=b),
        'ema': lambda b: K.ema(px, offs, 12, backend=b),
        'sma': lambda b: K.sma(px, offs, 10, backend=b),
        'rsi': lambda b: K.rsi(px, offs, 14, backend=b),
        'macd': lambda b: K.macd(px, offs, backend=b),
        'bollinger': lambda b: K.bollinger(px, offs, 20, 2, backend=b),
        'vwap_session': lambda b: K.vwap_session(px, sz, offs, backend=b),
        'vwap_rolling': lambda b: K.vwap_rolling(px, sz, offs, 50, backend=b),
        'momentum': lambda b: K.momentum(px, offs, 5, backend=b),
        'zscore': lambda b: K.zscore(px, offs, 30, backend=b),
    }
    for name, f in calls.items():
        cpu, gpu = f('cpu'), f('cuda')
        cpu, gpu = (cpu,) if not isinstance(cpu, tuple) else cpu, (gpu,) if not isinstance(gpu, tuple) else gpu
        assert len(cpu) == len(gpu), name
        for c, g in zip(cpu, gpu):
            assert type(g) is np.ndarray and g.shape == px.shape, (name, type(g), g.shape)
            assert np.isfinite(c).any(), name  # the comparison is not vacuous
            np.testing.assert_array_equal(g, c, err_msg=name)  # same source, same IEEE arithmetic: identical
    print('compared', len(calls), 'kernels on', len(px), 'events in', len(offs) - 1, 'segments')
''')


def test_cuda_kernels_in_the_simulator_equal_the_cpu_kernels_on_real_trades():
    env = {**os.environ, 'NUMBA_ENABLE_CUDASIM': '1'}
    r = subprocess.run([sys.executable, '-c', SCRIPT, str(ROOT / 'replay' / 'data'), '250'],
                       env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert 'compared 17 kernels on 750 events in 3 segments' in r.stdout

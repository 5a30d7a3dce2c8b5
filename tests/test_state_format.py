"""Saved state is data, never code (issue 14): `velox.stage.dump_state` / `load_state`.

Properties on real data: every kind of stage, snapshotted in the middle of a real replay (whole, or symbol by symbol
as a worker hands partitions over) and restored into a fresh stage, reads back as the same state — the same types at
every node, the same values, the same sharing — and carries on to exactly the outputs of a run that never stopped.
Model files keep their versions. And what is not velox saved state — pickles (which would run code), crafted payloads
naming unregistered types or object arrays, truncated or corrupted bytes — is refused with a one-line StateError,
never half-read, never executed.
"""
import math
import os
import pickle
import shutil
import struct
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from velox.core import NS, clock_ns
from velox.feeds.recorded import Catalog, load_binance
from velox.feeds.replay import ArraySource, Replay
from velox.runtime.runners import Collector
from velox.stage import (STATE_MAGIC, STATE_VERSION, Chain, StateError, dump_state, load_state, migrate_snapshot,
                         register_state)
from reference_trading import DATA, DAY, nbbo_window, scripted_signals, sources

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / 'tests' / 'fixtures' / 'pre_layers'
SYMBOLS = ('IBM', 'BAC')
T0, T1 = clock_ns(DAY, '10:00', 't'), clock_ns(DAY, '11:00', 't')


# -- what "the same state" means: exact types, values and sharing, node by node --------------------------------------
def same(a, b, pairs=None, path='state'):
    "Assert `b` is `a` rebuilt: same type at every node, same values (NaN too), and objects shared in `a` shared in `b`."
    pairs = {} if pairs is None else pairs
    assert type(a) is type(b), f'{path}: {type(a).__name__} became {type(b).__name__}'
    if isinstance(a, (type(None), bool, int, float, str, bytes)):  # values (Python interns attribute names its own way)
        assert struct.pack('<d', a) == struct.pack('<d', b) if type(a) is float else a == b, f'{path}: {a!r} != {b!r}'
        return
    if id(a) in pairs:  # met before: must be the object met before on the other side too
        assert pairs[id(a)] is b, f'{path}: an object shared in the original is not shared after reading'
        return
    pairs[id(a)] = b
    if isinstance(a, np.ndarray):
        assert (a.dtype, a.shape, a.flags.f_contiguous, a.flags.c_contiguous) == (b.dtype, b.shape, b.flags.f_contiguous,
                                                                                  b.flags.c_contiguous), path
        assert a.tobytes() == b.tobytes() and b.flags.writeable and b.flags.owndata, path
    elif isinstance(a, np.generic): assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), path
    elif isinstance(a, dict):
        assert list(a) == list(b), f'{path}: keys {list(a)[:5]} != {list(b)[:5]}'
        for (ka, va), (kb, vb) in zip(a.items(), b.items()):
            same(ka, kb, pairs, f'{path} key'); same(va, vb, pairs, f'{path}[{ka!r}]')
    elif isinstance(a, (set, frozenset)):
        assert a == b, path
    elif isinstance(a, (list, tuple, deque)):
        assert len(a) == len(b) and getattr(a, 'maxlen', None) == getattr(b, 'maxlen', None), path
        for i, (x, y) in enumerate(zip(a, b)): same(x, y, pairs, f'{path}[{i}]')
    else:  # a registered object
        same(vars(a), vars(b), pairs, f'{path}.{type(a).__name__}')


def leaves(stage):
    return [x for s in stage.stages for x in leaves(s)] if isinstance(stage, Chain) else [stage]


def symbols_held(stage):
    return sorted({s for x in leaves(stage) if not x.global_state for s in x.state})


def resumed(make, wins, cut, per_symbol):
    """Outputs of `make()` over `wins`, handed over at window `cut` to a fresh `make()` that restores its snapshot
    (whole, or one symbol at a time, as workers hand partitions over); the restored state must be the state saved."""
    st, out = make(), Collector()
    for i, w in enumerate(wins):
        if i == cut:
            fresh = make()
            if per_symbol:
                for s in symbols_held(st): fresh.restore(st.snapshot([s]))
            else: fresh.restore(st.snapshot())
            for a, b in zip(leaves(st), leaves(fresh), strict=True):
                if not per_symbol or a.global_state: same(a.state, b.state)
                else:  # each symbol saved on its own: sharing is kept within a symbol's state
                    assert sorted(a.state) == sorted(b.state)
                    for s in a.state: same(a.state[s], b.state[s], path=f'state[{s!r}]')
            st = fresh
        out.add(st.process_window(w))
    out.add(st.flush())
    return out.result()


def uninterrupted(make, wins):
    st, out = make(), Collector()
    for w in wins: out.add(st.process_window(w))
    out.add(st.flush())
    return out.result()


def timeless(outputs):
    "Outputs without what differs from run to run by design: the measured inference time of a prediction."
    out = {}
    for k, b in outputs.items():
        if 'infer_us' in (b.dtype.names or ()): b = b.copy(); b['infer_us'] = 0
        out[k] = b
    return out


def check_restore_and_continue(make, wins, cuts, per_symbol, expect):
    "At every cut: the restored state is the state saved, and what follows is byte for byte the uninterrupted run."
    whole = timeless(uninterrupted(make, wins))
    for k in expect: assert len(whole.get(k, ())), f'the window must produce {k} for the check to mean something'
    for cut in cuts:
        got = timeless(resumed(make, wins, cut, per_symbol))
        assert sorted(got) == sorted(whole), cut
        for k in whole: assert got[k].dtype == whole[k].dtype and got[k].tobytes() == whole[k].tobytes(), (cut, k)


def windows(srcs, chunk_rows=4096, ordered=False):
    return [[(s.kind, b) for s, b in w] for w in Replay(srcs, chunk_rows=chunk_rows).windows(ordered=ordered)]


@pytest.fixture(scope='module')
def market():
    "IBM and BAC quotes and trades, 10:00-11:00 New York on 2013-10-08."
    srcs = [s for sym in SYMBOLS for s in Catalog(DATA).find(sym, DAY)]
    return [ArraySource(s.kind, s.symbol, (lambda b: b[(b['ts'] >= T0) & (b['ts'] < T1)])(s.load())) for s in srcs]


@pytest.fixture(scope='module')
def registry(tmp_path_factory):
    "The fixture registry of the layers issue (lr, gbt, lstm, two combiners), migrated once from its pickles."
    from velox.trade.registry import ModelRegistry
    reg = ModelRegistry(shutil.copytree(FIXTURE / 'registry', tmp_path_factory.mktemp('state') / 'registry'))
    assert len(reg.migrate()) == 5
    return reg


# -- every stage: restore-and-continue equals uninterrupted -------------------------------------------------------------
@pytest.mark.parametrize('per_symbol', [False, True], ids=['whole', 'symbol-by-symbol'])
def test_detect_chain_restored_mid_replay_continues_exactly(market, per_symbol):
    from velox.detect.params import detect_stage
    wins = windows(market)
    check_restore_and_continue(detect_stage, wins, (len(wins) // 3, 2 * len(wins) // 3), per_symbol, ('nbbo', 'alert'))


@pytest.mark.parametrize('per_symbol', [False, True], ids=['whole', 'symbol-by-symbol'])
def test_accumulation_with_baselines_restored_mid_replay_continues_exactly(market, per_symbol):
    from velox.detect.params import accumulation_stage
    base = str(next((FIXTURE / 'params').glob('baselines-*.json')))
    wins = windows(market)
    check_restore_and_continue(lambda: accumulation_stage({'baselines': base}), wins, (len(wins) // 2,), per_symbol, ('accumulation',))


def test_features_restored_mid_day_continue_exactly():
    "Indicators of every timeframe (RollingStat, EWM, RSI, MACD, Bollinger, VWAP objects in state) over a whole day."
    from velox.market.features import FeatureStage
    trades = [s for sym in SYMBOLS for s in Catalog(DATA).find(sym, DAY, kinds=('trade',))]
    wins = windows(trades, chunk_rows=20_000)
    check_restore_and_continue(FeatureStage, wins, (len(wins) // 2,), True, ('indicator',))


def test_bars_and_smc_patterns_restored_mid_day_continue_exactly():
    from velox.detect.smc import SMCStage
    from velox.market.bars import BarStage
    trades = [s for sym in SYMBOLS for s in Catalog(DATA).find(sym, DAY, kinds=('trade',))]
    wins = windows(trades, chunk_rows=20_000)
    check_restore_and_continue(lambda: Chain(BarStage('1m'), SMCStage('1m')), wins, (len(wins) // 3, 2 * len(wins) // 3),
                               True, ('bar', 'pattern'))


def test_an_l2_book_restored_mid_capture_continues_exactly():
    from velox.market.book import BookStage
    book = load_binance(ROOT / 'replay' / 'data' / 'binance' / 'btcusdt_20240808_spot.gz')['book']
    wins = windows([ArraySource('book', 'BTCUSDT', book)], chunk_rows=2048)
    check_restore_and_continue(BookStage, wins, (len(wins) // 2,), False, ('nbbo',))


def test_execution_with_performance_restored_mid_replay_continues_exactly():
    "Two accounts, DAY orders with latency, stops and targets: orders in flight and positions held at the cut."
    from velox.trade.broker import PaperBroker
    from velox.trade.execution import ExecutionStage
    from velox.trade.performance import PerformanceStage
    from velox.trade.risk import Account, Limits, Strategy
    lo, hi = T0, T0 + 2 * 3600 * NS
    sig = [scripted_signals('IBM', lo, hi, every_s=300, offset_s=7), scripted_signals('BAC', lo, hi, every_s=420, offset_s=3, size=1000),
           scripted_signals('IBM', lo, hi, every_s=900, offset_s=11, strategy='swing', pattern=(-1, 1), size=50)]
    accts = [Account('alice', (Strategy('momo', Limits(max_orders_per_min=5)), Strategy('swing'))), Account('bob', (Strategy('momo'),))]
    make = lambda: Chain(ExecutionStage(accts, PaperBroker(slippage_ticks=1, fee_per_share=0.005, min_fee=1.0), latency_ms=3,
                                        stop_bps=15, target_bps=25, tif='DAY'), PerformanceStage(window_s=600, every_s=60))
    wins = windows(sources(nbbo_window(), sig), chunk_rows=4096, ordered=True)
    check_restore_and_continue(make, wins, (len(wins) // 3, len(wins) // 2), False, ('order', 'fill', 'position', 'performance'))


def test_the_whole_trading_graph_restored_mid_replay_continues_exactly(market, registry):
    "Detect, features, predict.lr, predict.gbt, ensemble and paper execution, as `velox run --models` chains them."
    from velox.runtime.stages import trading_stage
    execution = {'accounts': [{'name': 'paper', 'strategies': [{'name': 'ensemble', 'limits': {'max_position': 300}}]}]}
    make = lambda: trading_stage(registry.root, execution=execution, ensemble={'min_tier': 'D'})
    wins = windows(market, chunk_rows=8192, ordered=True)
    check_restore_and_continue(make, wins, (len(wins) // 2,), False, ('alert', 'indicator', 'prediction', 'signal', 'order', 'fill'))


def test_an_lstm_prediction_stage_restored_mid_stream_continues_exactly(registry):
    "The sequence model keeps each symbol's last rows in state: a restored stage predicts from them as if never stopped."
    from velox.market.features import FeatureStage
    from velox.runtime.runners import run_frame
    from velox.trade.predict import PredictionStage
    ind = run_frame(FeatureStage(), [s for sym in SYMBOLS for s in Catalog(DATA).find(sym, DAY, kinds=('trade',))])['indicator']
    wins = windows([ArraySource('indicator', s, ind[ind['symbol'] == s]) for s in SYMBOLS], chunk_rows=300)
    check_restore_and_continue(lambda: PredictionStage(registry, 'lstm'), wins, (len(wins) // 3,), True, ('prediction', 'model_metric'))


# -- model files --------------------------------------------------------------------------------------------------------
def test_every_model_class_saves_as_data_and_reads_back_with_its_version_and_predictions(registry, tmp_path):
    from velox.trade.lstm import windows as seq_windows
    from velox.trade.models import Model
    X = np.load(FIXTURE / 'X.npy')
    for name in registry.names():
        v = registry.versions(name)[-1]['version']
        m = registry.load(name, v)
        p = m.save(tmp_path / f'{name}.model')
        assert p.read_bytes()[:5] == STATE_MAGIC + bytes([STATE_VERSION])
        back = Model.load(p)
        assert type(back) is type(m) and back.version == m.version == f'{m.name}-{v}', name
        same(m.params(), back.params())
        x = (seq_windows(X, m.lookback, np.load(FIXTURE / 'X_symbols.npy')) if name == 'lstm' else
             np.stack([registry.load(n, registry.promoted(n)).predict_proba(X) for n in m.models], 1) if name.startswith('ens') else X)
        assert np.array_equal(back.predict_proba(x), m.predict_proba(x)), name


# -- the format on its own: plain data round trips, sharing and cycles kept ---------------------------------------------
@register_state
class Pod:
    "A state type of this test module (registered as test_state_format.Pod: not velox's, so by module and name)."
    def __init__(self, **kw): self.__dict__.update(kw)


def random_value(rng, depth, pool):
    "A random value of every kind the format takes, sometimes one made before (shared), nested up to `depth`."
    if pool and rng.random() < 0.1: return pool[rng.integers(len(pool))]
    k = rng.integers(19 if depth > 0 else 11)
    scalars = [lambda: None, lambda: bool(rng.integers(2)), lambda: int(rng.integers(-2**63, 2**63 - 1, dtype=np.int64)),
               lambda: int(rng.integers(2**62)) ** 3 * (-1) ** int(rng.integers(2)), lambda: float(rng.normal() * 10.0 ** rng.integers(-300, 300)),
               lambda: rng.choice([math.nan, math.inf, -math.inf, -0.0]).item(),
               lambda: ''.join(rng.choice(list('aé€😀\x00 '), rng.integers(0, 8))), lambda: bytes(rng.integers(0, 256, rng.integers(0, 9), dtype=np.uint8)),
               lambda: rng.normal(size=()).astype(rng.choice(['f4', 'f8', 'i2', 'u8', 'c16']))[()],
               lambda: np.str_('x' * int(rng.integers(4))), lambda: np.datetime64(int(rng.integers(2**40)), 'ns')]
    if k < 11: v = scalars[k]()
    else:
        sub = lambda n: [random_value(rng, depth - 1, pool) for _ in range(n)]
        key = lambda: (str(rng.integers(1000)), int(rng.integers(10))) if rng.random() < 0.5 else str(rng.integers(10**6))
        n = int(rng.integers(0, 5))
        v = [lambda: sub(n), lambda: tuple(sub(n)), lambda: {key(): x for x in sub(n)}, lambda: {key() for _ in range(n)},
             lambda: frozenset(key() for _ in range(n)), lambda: deque(sub(n), maxlen=None if rng.random() < 0.5 else n + 2),
             lambda: array(rng, n), lambda: Pod(**{f'f{i}': x for i, x in enumerate(sub(n))})][k - 11]()
    if not isinstance(v, (type(None), bool, int, float)): pool.append(v)
    return v


def array(rng, n):
    kinds = ['<i8', '>i4', 'f4', '?', 'U5', 'S3', 'M8[ns]', 'c8', [('ts', '<i8'), ('symbol', '<U12'), ('px', '<f8', (2,))]]
    dt = np.dtype(kinds[rng.integers(len(kinds))])
    a = np.zeros((n, 3), dt) if rng.random() < 0.3 else np.zeros(n * 2, dt)
    a.view('u1')[...] = rng.integers(0, 256, a.nbytes, dtype=np.uint8).reshape(a.view('u1').shape) if a.nbytes else 0
    if a.dtype.kind == 'U': a[...] = 'ab€'
    return np.asfortranarray(a) if a.ndim == 2 and rng.random() < 0.5 else a


def test_random_nested_data_round_trips_exactly_with_its_sharing():
    rng = np.random.default_rng(14)
    for _ in range(300):
        pool = []
        v = [random_value(rng, 4, pool) for _ in range(3)]
        same(v, load_state(dump_state(v)))


def test_an_object_that_holds_itself_comes_back_holding_itself():
    box, pod = [], Pod()
    box.append(box); pod.me, pod.box = pod, box
    back = load_state(dump_state({'pod': pod, 'box': box}))
    assert back['pod'].me is back['pod'] and back['pod'].box is back['box'] and back['box'][0] is back['box']


def test_reading_a_registered_object_runs_none_of_its_code():
    class Tripwire:
        calls = []
        def __new__(cls, *a): Tripwire.calls.append('new'); return super().__new__(cls)
        def __init__(self): Tripwire.calls.append('init')
        def __setattr__(self, k, v): Tripwire.calls.append('setattr'); super().__setattr__(k, v)
        def __setstate__(self, s): Tripwire.calls.append('setstate')
    register_state(Tripwire, 'test.Tripwire')
    t = Tripwire.__new__(Tripwire); t.__dict__['x'] = np.arange(3)
    data = dump_state(t)
    Tripwire.calls.clear()
    back = load_state(data)
    assert Tripwire.calls == [] and type(back) is Tripwire and back.x.tolist() == [0, 1, 2]


# -- what is refused ----------------------------------------------------------------------------------------------------
class Boom:
    "Unpickling this runs a shell command that leaves a file behind: the test fails if the file appears."
    def __init__(self, flag): self.flag = flag
    def __reduce__(self): return (os.system, (f'touch {self.flag}',))


def test_pickles_are_refused_everywhere_state_is_read_and_never_run(tmp_path):
    from velox.core import ConfigError
    from velox.detect.params import detect_stage
    from velox.infra.hot import MemoryHot
    from velox.runtime.checkpoints import Checkpoints
    from velox.trade.models import Model
    from velox.trade.registry import ModelRegistry
    flag = tmp_path / 'ran'
    evil = [pickle.dumps(Boom(flag), protocol=p) for p in (2, 4, 5)]
    for data in evil:
        with pytest.raises(StateError, match='is a pickle') as e: load_state(data)
        assert '\n' not in str(e.value)  # one line
        with pytest.raises(StateError, match='migrate_snapshot'): detect_stage().restore(data)
        hot = MemoryHot(); hot.put_snapshot('ckpt:detect:nbbo+darkpool:IBM', data)
        with pytest.raises(StateError, match='velox hot migrate-checkpoints'): Checkpoints(hot, 'detect', 'nbbo+darkpool').load('IBM')
        (tmp_path / 'm.model').write_bytes(data)
        with pytest.raises(StateError, match='velox models migrate'): Model.load(tmp_path / 'm.model')
    reg = ModelRegistry(tmp_path / 'reg')
    (reg.root / 'lr').mkdir(parents=True)
    (reg.root / 'lr' / 'abc.json').write_text('{"version": "abc"}'); (reg.root / 'lr' / 'abc.pkl').write_bytes(evil[0])
    with pytest.raises(ConfigError, match='velox models migrate --registry'): reg.load('lr', 'abc')
    (reg.root / 'lr' / 'abc.model').write_bytes(evil[1])
    with pytest.raises(ConfigError, match='cannot load the model .*is a pickle'): reg.load('lr', 'abc')
    assert not flag.exists()
    with pytest.raises(StateError, match='not velox saved state'): load_state(b"cos\nsystem\n(S'true'\ntR.")  # protocol 0
    assert not flag.exists()


def crafted(*parts) -> bytes:
    "Saved-state bytes put together by hand: what an attacker with write access to a store could write."
    return STATE_MAGIC + bytes([STATE_VERSION]) + b''.join(parts)


def text(tag, s): raw = s.encode(); return tag + struct.pack('<I', len(raw)) + raw


def test_a_type_name_nobody_registered_is_refused_and_named():
    for name in ('os.system', 'builtins.eval', 'velox.stage.Stage', 'subprocess.Popen', 'Stage'):
        with pytest.raises(StateError, match=f"names type '{name}', which is not a registered state type"):
            load_state(crafted(b'o', text(b's', name), struct.pack('<I', 1), text(b's', 'args'), text(b's', 'echo')))
    # a dict that says it is something is just a dict: the format never looks a type up from data
    fake = {'__class__': 'os.system', '__reduce__': ['os.system', 'true'], 'py/object': 'os.system'}
    back = load_state(dump_state(fake))
    assert type(back) is dict and back == fake


def test_object_arrays_are_refused_both_ways():
    with pytest.raises(StateError, match='Python objects are not data'): dump_state({'a': np.array([print], object)})
    with pytest.raises(StateError, match='Python objects are not data'): dump_state(np.zeros(2, [('a', 'i8'), ('b', 'O')]))
    for descr in ('"|O"', '[["a","<i8"],["b","|O"]]'):
        with pytest.raises(StateError, match='Python objects are not data, refusing it'):
            load_state(crafted(b'a', struct.pack('<I', len(descr)), descr.encode(), bytes([0, 1]), struct.pack('<qq', 1, 8), b'\0' * 8))


def test_what_is_neither_plain_data_nor_registered_cannot_be_saved():
    class Stranger: pass
    for v in ({'x': Stranger()}, [lambda: 0], {'f': open}, (1, complex(1, 2)), np.ma.masked_array([1]), bytearray(b'x')):
        with pytest.raises(StateError, match='neither plain data nor a registered state type'): dump_state(v)


def test_every_prefix_of_a_real_snapshot_and_random_corruptions_fail_cleanly(market):
    "Cut anywhere or with bytes flipped, a snapshot either reads (a flip inside a number) or fails with a StateError."
    from velox.detect.params import detect_stage
    st = detect_stage()
    for w in windows(market)[:6]: st.process_window(w)
    data = st.snapshot()
    inner = load_state(data)[1]  # the dark-pool stage's own snapshot: arrays, dicts, tuples
    for blob in (data, inner):
        for n in range(len(blob)):
            with pytest.raises(StateError): load_state(blob[:n])
    rng = np.random.default_rng(0)
    read = 0
    for _ in range(3000):
        b = bytearray(inner)
        for i in rng.integers(5, len(b), rng.integers(1, 4)): b[i] = rng.integers(256)
        try: load_state(bytes(b)); read += 1
        except StateError: pass
    assert 0 < read < 3000
    with pytest.raises(StateError, match='bytes after its end'): load_state(inner + b'N')
    with pytest.raises(StateError, match='unknown tag'): load_state(crafted(b'X'))
    with pytest.raises(StateError, match='reference 7 to an object not read yet'): load_state(crafted(b'l', struct.pack('<I', 1), b'r', struct.pack('<I', 7)))
    with pytest.raises(StateError, match='nested too deeply'): load_state(crafted(b'l\x01\0\0\0' * 100_000 + b'N'))
    with pytest.raises(StateError, match='unhashable'): load_state(crafted(b'd', struct.pack('<I', 1), b'l\0\0\0\0', b'N'))


def test_the_header_says_the_format_and_its_version():
    data = dump_state({'a': 1})
    assert data[:5] == b'VXST\x01'
    with pytest.raises(StateError, match='format version 02: this velox reads version 1'): load_state(b'VXST\x02' + data[5:])
    with pytest.raises(StateError, match='not velox saved state'): load_state(b'{"a": 1}')
    with pytest.raises(StateError, match='not velox saved state'): load_state(b'')


def test_two_velox_classes_cannot_claim_one_name():
    from velox.trade.orders import Order, Position
    with pytest.raises(StateError, match="state type 'Order': already registered for velox.trade.orders.Order"):
        register_state(Position, 'Order')
    assert register_state(Order) is Order  # the same class again (a reload): fine


def test_a_legacy_snapshot_is_converted_only_on_purpose():
    "`migrate_snapshot` is the operator's tool: it converts a pickled Chain snapshot stage by stage; new data passes through."
    from velox.detect.params import detect_stage
    old = (FIXTURE / 'checkpoints' / 'execution.bin').read_bytes()
    new = migrate_snapshot(old)
    assert new[:5] == STATE_MAGIC + bytes([STATE_VERSION]) and all(p[:4] == STATE_MAGIC for p in load_state(new))
    assert migrate_snapshot(new) == new
    assert load_state(detect_stage().snapshot()) == [dump_state({}), dump_state({})]

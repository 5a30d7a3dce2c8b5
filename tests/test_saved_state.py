"""Saved state written by the code before the layers issue (tests/fixtures/pre_layers, see make.py there): pickles, which
velox refuses to load since saved state became data only (issue 14); converted once by the operator's migration
(`migrate_snapshot`, `velox hot migrate-checkpoints`, `velox models migrate`), it restores and carries on exactly."""
import shutil
from pathlib import Path

import numpy as np
import pytest

from velox.core import NS, day_start_ns
from velox.feeds.replay import Replay
from velox.runtime.runners import Collector
from velox.stage import Chain, StateError, migrate_snapshot
from velox.trade.broker import PaperBroker
from velox.trade.execution import ExecutionStage, ExecutionState
from velox.trade.performance import PerformanceStage
from velox.trade.risk import Account, Strategy
from reference_trading import DAY, nbbo_window, scripted_signals, sources

CHECKPOINTS = Path(__file__).resolve().parent / 'fixtures' / 'pre_layers' / 'checkpoints'
T0 = day_start_ns(DAY)
LO, HI = T0 + 10 * 3600 * NS, T0 + 12 * 3600 * NS


def execution_chain():
    "The stage of make.py, section 3: two accounts, a paper broker with slippage and fees, DAY orders with stops and targets."
    accts = [Account('alice', (Strategy('momo'), Strategy('swing'))), Account('bob', (Strategy('momo'),))]
    return Chain(ExecutionStage(accts, PaperBroker(slippage_ticks=1, fee_per_share=0.005, min_fee=1.0), latency_ms=3,
                                stop_bps=15, target_bps=25, tif='DAY'), PerformanceStage())


def execution_windows():
    sig = [scripted_signals('IBM', LO, HI, every_s=300, offset_s=7), scripted_signals('BAC', LO, HI, every_s=420, offset_s=3, size=1000),
           scripted_signals('IBM', LO, HI, every_s=900, offset_s=11, strategy='swing', pattern=(-1, 1), size=50)]
    return [[(s.kind, b) for s, b in w] for w in Replay(sources(nbbo_window(), sig), chunk_rows=4096).windows()]


def by_id(b):
    "A batch in a canonical order: sorted by its id column (the last), then by time."
    ids = b[b.dtype.names[-1]]
    return b[np.lexsort((b['ts'], ids))]


def test_an_execution_snapshot_written_before_the_layers_issue_restores_and_continues_exactly():
    wins = execution_windows()
    assert len(wins) == 26  # as when the fixture was written (execution.json)
    full = Collector()
    whole = execution_chain()
    for w in wins: full.add(whole.process_window(w))
    full.add(whole.flush())
    full = full.result()

    old = (CHECKPOINTS / 'execution.bin').read_bytes()
    with pytest.raises(StateError, match='is a pickle .*migrate_snapshot'): execution_chain().restore(old)
    resumed = execution_chain()
    resumed.restore(migrate_snapshot(old))
    assert isinstance(resumed.stages[0].state, ExecutionState)
    after = Collector()
    for w in wins[13:]: after.add(resumed.process_window(w))
    after.add(resumed.flush())
    after = after.result()

    kinds = {p.name[len('execution_before_'):-len('.npy')] for p in CHECKPOINTS.glob('execution_before_*.npy')}
    assert kinds == {'order', 'fill', 'position', 'performance'} and set(full) == kinds
    for k in sorted(kinds):
        before = np.load(CHECKPOINTS / f'execution_before_{k}.npy', allow_pickle=False)
        assert len(before) and len(after.get(k, ())), k  # the cut falls in the middle of every kind
        joined = np.concatenate([before, after[k]])
        assert joined.dtype == full[k].dtype and len(joined) == len(full[k]), k
        assert by_id(joined).tobytes() == by_id(full[k]).tobytes(), k


def test_an_execution_snapshot_in_the_new_format_restores_to_the_same_state():
    wins = execution_windows()
    a = execution_chain()
    for w in wins[:13]: a.process_window(w)
    b = execution_chain()
    b.restore(a.snapshot())
    out_a, out_b = Collector(), Collector()
    for w in wins[13:]: out_a.add(a.process_window(w)); out_b.add(b.process_window(w))
    out_a.add(a.flush()); out_b.add(b.flush())
    ra, rb = out_a.result(), out_b.result()
    assert set(ra) == set(rb) and all(ra[k].tobytes() == rb[k].tobytes() for k in ra)


def test_detect_worker_checkpoints_written_before_the_layers_issue_restore_and_finish_the_day():
    """make.py, section 2: a detect worker checkpointed IBM and BAC a third of the way through a 20-minute window and
    its outputs until then were saved. A worker of today, on the same bus, restores those snapshots, skips what they
    hold and finishes: the outputs before plus its own are the whole window's, nothing lost, nothing different."""
    import json
    from velox.detect.params import detect_stage
    from velox.feeds.recorded import Catalog
    from velox.infra.bus import MemoryBus, publish, publish_eos
    from velox.infra.hot import MemoryHot
    from velox.runtime.runners import run_frame
    from velox.runtime.stages import DETECT_INPUTS, DETECT_OUTPUTS
    from velox.runtime.checkpoints import Checkpoints, migrate_checkpoints
    from velox.runtime.worker import RunOptions, Worker, WorkerSettings
    from reference_trading import DATA
    meta = json.loads((CHECKPOINTS / 'detect.json').read_text())
    assert meta['group'] == 'detect' and meta['rows_per_frame'] == 256
    lo, hi = meta['start_ns'], meta['end_ns']
    srcs = [s for sym in meta['symbols'] for s in Catalog(DATA).find(sym, meta['day'])]
    data = [(s.kind, (lambda b: b[(b['ts'] >= lo) & (b['ts'] < hi)])(s.load())) for s in srcs]
    bus, hot = MemoryBus(), MemoryHot()
    topic_of = {v: k for k, v in DETECT_INPUTS.items()}
    for kind, b in data: publish(bus, topic_of[kind], kind, b, rows_per_frame=meta['rows_per_frame'])
    for t in DETECT_INPUTS: publish_eos(bus, t, meta['symbols'])
    for key in meta['keys']: hot.put_snapshot(key, (CHECKPOINTS / f"{key.replace(':', '__')}.bin").read_bytes())
    with pytest.raises(StateError, match='velox hot migrate-checkpoints'): Checkpoints(hot, 'detect', 'nbbo+darkpool').load('IBM')
    assert sorted(migrate_checkpoints(hot)) == sorted(meta['keys'])  # the operator's one-off conversion

    old = {'tolerance_bps': 0}  # the detector's default when the checkpoint was written (issue 19 made it 1 bp)
    w = Worker(detect_stage(old), bus, DETECT_INPUTS, DETECT_OUTPUTS, meta['group'], WorkerSettings(collect=('alert', 'nbbo')),
               checkpoints=hot)
    stats = w.run(RunOptions(until_end=True, max_runtime_s=120))
    assert stats.restored == 2 and stats.skipped > 0  # both symbols came from the old snapshots, whose messages were skipped
    assert stats.events == sum(len(b) for _, b in data) - meta['events_at_checkpoint']
    after = w.collected.result()

    full = run_frame(detect_stage(old), {k: np.concatenate([b for kk, b in data if kk == k]) for k in ('quote', 'trade')})
    for kind in ('alert', 'nbbo'):
        before = np.load(CHECKPOINTS / f'detect_before_{kind}.npy', allow_pickle=False)
        if kind == 'alert':  # saved before alerts named their parameter version: the field reads '' (unknown)
            assert 'params' not in before.dtype.names
            now = np.zeros(len(before), full[kind].dtype)
            for f in before.dtype.names: now[f] = before[f]
            before = now
        assert len(before) and len(after[kind]), kind  # the checkpoint falls inside the window for both outputs
        joined = np.concatenate([before, after[kind]])
        if kind == 'alert':  # consumers keep each alert id once (at-least-once delivery)
            joined = joined[np.sort(np.unique(joined['id'], return_index=True)[1])]
        canon = lambda a: a[np.lexsort([a[f] for f in reversed(a.dtype.names) if a.dtype[f].kind != 'f'])]
        assert joined.dtype == full[kind].dtype and len(joined) == len(full[kind]), kind
        a, b = canon(joined), canon(full[kind])
        if kind == 'alert':  # issue 19 lowered the confidence of explained prints (sweeps): the old code's alerts keep theirs
            old_rows = np.isin(a['id'], before['id'])
            assert (a['id'] == b['id']).all() and (a['confidence'][~old_rows] == b['confidence'][~old_rows]).all()
            assert (a['params'][old_rows] == '').all() and (a['params'][~old_rows] == b['params'][~old_rows]).all()
            a, b = a.copy(), b.copy()
            a['confidence'][old_rows], a['params'][old_rows] = b['confidence'][old_rows], b['params'][old_rows]
        assert a.tobytes() == b.tobytes(), kind


REGISTRY = Path(__file__).resolve().parent / 'fixtures' / 'pre_layers' / 'registry'


def test_a_model_registry_written_before_the_layers_issue_loads_with_the_same_versions_and_predictions(tmp_path):
    """lr, gbt, lstm and two combiners (platt, isotonic) pickled under the old module paths: refused until migrated,
    then the same versions, the same predictions, the same PROMOTED."""
    import json
    from velox.core import ConfigError
    from velox.trade.lstm import windows
    from velox.trade.models import indicator_features  # noqa: F401 (the registry's models take these features)
    from velox.trade.registry import ModelRegistry, version_of
    shutil.copytree(REGISTRY, tmp_path / 'registry')
    reg = ModelRegistry(tmp_path / 'registry')
    promoted = {p.parent.name: p.read_text() for p in reg.root.glob('*/PROMOTED')}
    with pytest.raises(ConfigError, match='velox models migrate'): reg.current('lr')
    assert sorted(reg.migrate()) == sorted((p.parent.name, p.stem) for p in REGISTRY.glob('*/*.pkl')) and len(promoted) == 4
    assert not list(reg.root.glob('*/*.pkl')) and {p.parent.name: p.read_text() for p in reg.root.glob('*/PROMOTED')} == promoted
    expected = json.loads((REGISTRY.parent / 'registry_expected.json').read_text())
    X = np.load(REGISTRY.parent / 'X.npy')
    assert sorted(reg.names()) == sorted(expected) and len(expected) == 5
    for name, e in expected.items():
        m = reg.load(name, e['version'])
        assert version_of(m) == e['version'], name  # the content hash, recomputed by the new code, names the same version
        if name == 'lstm': p = m.predict_proba(windows(X, m.lookback, np.load(REGISTRY.parent / 'X_symbols.npy')))
        elif name.startswith('ens'): p = m.predict_proba(np.stack([reg.load(n, reg.promoted(n)).predict_proba(X) for n in m.models], 1))
        else: p = m.predict_proba(X)
        assert np.allclose(p, e['pred'], rtol=0, atol=1e-12), name
    assert reg.current('ensemble')[0] == expected['ensemble']['version']  # PROMOTED still names it

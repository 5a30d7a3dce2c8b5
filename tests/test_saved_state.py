"Saved state written by the code before the layers issue (tests/fixtures/pre_layers, see make.py there) still restores and carries on."
from pathlib import Path

import numpy as np

from velox.core import NS, day_start_ns
from velox.feeds.replay import Replay
from velox.runtime.runners import Collector
from velox.stage import Chain
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

    resumed = execution_chain()
    resumed.restore((CHECKPOINTS / 'execution.bin').read_bytes())
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

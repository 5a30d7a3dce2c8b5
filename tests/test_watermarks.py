"""Watermarks in a real `Worker` (embedded bus, clocks the tests control): the traps of stream processors with
watermarks — an idle input holding everything back, a finished partition pushing the watermark to infinity, a
paused partition taken for idle, an idleness timeout firing late — and late events, counted and routed with their
reason. (`nbs/runtime/01f_watermarks.ipynb` pins the same traps on `Watermarks` alone.)"""
import numpy as np
import pytest
from velox.core import NS
from velox.events import batch
from velox.infra.bus import EOS_HEADERS, MemoryBus, is_control, partition_for, publish
from velox.infra.codecs import decode_message
from velox.infra.topics import topic_spec
from velox.runtime.settings import WorkerSettings
from velox.runtime.watermarks import END, WM_HEADERS, marker
from velox.runtime.worker import Worker
from velox.stage import Stage

T0 = 1381239000 * NS  # 2013-10-08 13:30 UTC: the bus refuses implausible times
NBBO, SIG = 'market.nbbo', 'signals.final'
N = topic_spec(NBBO).partitions


class Tape(Stage):
    "A global stage that holds every row until the watermark passes it (as execution does) and records what it got."
    name, inputs, outputs, windowed, global_state, prompt = 'tape', ('nbbo', 'signal'), (), True, True, True

    def __init__(self): super().__init__(); self.held, self.got = [], []
    def process_window(self, items): self.held += [b for _, b in items if len(b)]; return []
    def advance(self, w): return self._let(w)
    def flush(self, symbols=None): return [] if symbols is not None else self._let(END)
    def _let(self, w):
        if not self.held: return []
        b = np.concatenate(self.held)
        self.got.append(b[b['ts'] < w]); self.held = [b[b['ts'] >= w]]
        return []
    @property
    def released(self): return np.concatenate(self.got)['ts'] if self.got else np.array([], 'i8')


class Clock:
    def __init__(self): self.t = 0.0
    def __call__(self): return self.t


def two_symbols():
    "Two symbols on different partitions of market.nbbo."
    names = iter(f'S{i}' for i in range(1000))
    x = next(names)
    y = next(s for s in names if partition_for(s, N) != partition_for(x, N))
    return x, y


def quotes(sym, secs):
    ts = [T0 + int(s * NS) for s in secs]
    return batch('nbbo', ts=ts, symbol=[sym] * len(ts), bid=[10_000] * len(ts), ask=[10_100] * len(ts), seq=range(len(ts)))


def mark(bus, topic, part, ts, who='pub'): bus.produce(topic, marker(ts, who), headers=WM_HEADERS, partition=part)


def mark_all(bus, topic, ts, who='pub'):
    for p in range(topic_spec(topic).partitions): mark(bus, topic, p, ts, who)


def worker(bus, live=False, clock=None, **kw):
    w = Worker(Tape(), bus, {NBBO: 'nbbo', SIG: 'signal'}, {}, group='wm', settings=WorkerSettings(poll_ms=5, **kw))
    w.wm.replay = not live
    if clock: w.wm.clock = clock
    return w.connect()


def drain(w, steps=6):
    for _ in range(steps): w.step()


def test_an_idle_input_stops_holding_the_watermark_exactly_when_its_timeout_says():
    x, _ = two_symbols()
    bus, clock = MemoryBus(), Clock()
    publish(bus, NBBO, 'nbbo', quotes(x, range(100)))
    mark_all(bus, NBBO, T0 + 100 * NS)  # signals.final: nothing at all, live
    w = worker(bus, live=True, clock=clock, idle_after_s=5.0)
    drain(w)
    assert len(w.stage.released) == 0 and w.stats.watermark_ns is None  # the silent input still holds (for 5 s)
    clock.t += 4.999; drain(w, 2)
    assert len(w.stage.released) == 0
    clock.t += 0.001; w.step()  # exactly 5 s after it was caught up: at the first look, not a probe later
    assert w.stats.watermark_ns == T0 + 100 * NS
    np.testing.assert_array_equal(w.stage.released, quotes(x, range(100))['ts'])


def test_a_finished_partition_does_not_push_the_watermark_to_the_end():
    x, y = two_symbols()
    bus = MemoryBus()
    publish(bus, NBBO, 'nbbo', quotes(x, range(10))); publish(bus, NBBO, 'nbbo', quotes(y, range(5)))
    mark_all(bus, NBBO, T0 + 5 * NS); mark_all(bus, SIG, T0 + 5 * NS)
    bus.produce(NBBO, b'', headers=EOS_HEADERS, partition=partition_for(x, N))  # x's partition ended; y's is caught up
    w = worker(bus)
    drain(w)
    assert w.stats.watermark_ns == T0 + 5 * NS  # held at y's marker, not END
    publish(bus, NBBO, 'nbbo', quotes(y, range(5, 8)))  # y goes on: not late
    mark_all(bus, NBBO, T0 + 8 * NS); mark_all(bus, SIG, T0 + 8 * NS)
    drain(w)
    assert w.stats.late == 0 and w.stats.watermark_ns == T0 + 8 * NS
    assert sorted(w.stage.released.tolist()) == sorted(np.r_[quotes(x, range(8))['ts'], quotes(y, range(8))['ts']].tolist())


def test_a_paused_partition_is_not_idle_however_long_it_is_silent():
    x, _ = two_symbols()
    bus, clock = MemoryBus(), Clock()
    px = partition_for(x, N)
    for p in range(N):
        if p != px: mark(bus, NBBO, p, T0 + 50 * NS)
    mark_all(bus, SIG, T0 + 50 * NS)
    mark(bus, NBBO, px, T0 + 10 * NS)
    publish(bus, NBBO, 'nbbo', quotes(x, range(11, 31)))  # 20 rows the merge must hold (x's signals have not spoken) ...
    mark(bus, NBBO, px, T0 + 40 * NS)
    w = worker(bus, live=True, clock=clock, idle_after_s=1.0, max_records=1, max_buffered_rows=5)
    drain(w, 40)
    assert (NBBO, px) in w.owned.backpressured  # ... so backpressure paused x's partition before its last marker
    clock.t += 60; drain(w)
    assert w.stats.watermark_ns == T0 + 10 * NS  # silent for a minute, but not idle: nothing runs past it
    assert len(w.stage.released) == 0


@pytest.mark.parametrize('policy', ['route', 'process'])
def test_an_event_behind_the_watermark_is_counted_and_routed_or_processed_never_dropped(policy):
    x, _ = two_symbols()
    bus = MemoryBus()
    publish(bus, NBBO, 'nbbo', quotes(x, range(10)))
    mark_all(bus, NBBO, T0 + 10 * NS); mark_all(bus, SIG, T0 + 10 * NS)
    w = worker(bus, late=policy)
    drain(w)
    assert w.stats.watermark_ns == T0 + 10 * NS
    late = quotes(x, [3.5]); late['seq'] = 99
    publish(bus, NBBO, 'nbbo', late)
    drain(w)
    assert w.stats.late == 1
    c = bus.consumer(['late.' + NBBO], 'check'); routed = c.poll(); c.close()
    if policy == 'route':
        assert len(routed) == 1 and b'behind the watermark' in routed[0].headers['velox-late']
        assert decode_message(routed[0].value)[1]['ts'].tolist() == late['ts'].tolist()
        assert late['ts'][0] not in w.stage.released and not any(len(b) for b in w.stage.held)
    else:
        assert not routed
        w.stage.flush()
        assert late['ts'][0] in w.stage.released  # processed anyway


def test_a_worker_started_warm_rebuilds_state_from_what_it_reads_and_emits_only_from_its_start():
    """`--emit-from`: the group reads from the session's start (here everything on the bus), rebuilds the NBBO and the
    detectors' memory, and writes only the alerts and NBBO stamped from its start: the full run's, restricted."""
    from velox.core import clock_ns
    from velox.detect.params import detect_stage
    from velox.feeds.recorded import Catalog
    from velox.feeds.replay import Replay
    from velox.runtime.runners import run_replay
    from velox.runtime.settings import RunOptions
    from velox.runtime.stages import DETECT_INPUTS, DETECT_OUTPUTS, publish_replay
    from reference_trading import DATA
    day = '2013-10-08'
    srcs = [s for sym in ('IBM', 'BAC') for s in Catalog(DATA).find(sym, day)]
    lo, start, hi = (clock_ns(day, t) for t in ('10:00', '10:12', '10:20'))
    full = run_replay(detect_stage(), Replay(srcs, start=lo, end=hi), collect=('alert', 'nbbo')).outputs
    bus = MemoryBus(); publish_replay(bus, Replay(srcs, start=lo, end=hi))
    w = Worker(detect_stage(), bus, DETECT_INPUTS, DETECT_OUTPUTS, 'warm', WorkerSettings(emit_from=start, collect=('alert', 'nbbo')))
    w.run(RunOptions(until_end=True, max_runtime_s=120))
    got = w.collected.result()
    assert len(got['alert']) > 5
    for k in ('alert', 'nbbo'):
        want = full[k][full[k]['ts'] >= start]
        key = lambda a, k=k: a[np.lexsort((a['seq'] if k == 'nbbo' else a['trade_seq'], a['ts'], a['symbol']))]
        assert key(got[k]).tobytes() == key(want).tobytes(), k
    c = bus.consumer(['alerts.darkpool'], 'check'); out = [m for m in c.poll(max_records=10**6) if not is_control(m)]; c.close()
    assert min(int(decode_message(m.value)[1]['ts'].min()) for m in out) >= start  # nothing before the start went out

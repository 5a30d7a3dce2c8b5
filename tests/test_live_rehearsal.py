"""A live rehearsal through a real broker: a replay paced minute by minute under a clock the test controls, read by
the execution worker on its default settings (live: idleness by time). BAC goes silent for seven minutes of event
time mid-session; the operator's command topic gets two commands and never a watermark marker. Each minute's
inputs must be released (the worker's watermark past them) before the next minute is published: a design that holds
everything until the end of the stream fails at the first minute. A signal injected twelve minutes late appears in
`late.signals.final` with its reason. At the end, the orders, fills, positions and risk events equal `run_frame`
over the same on-time data, and the event-to-release latency is printed."""
import threading, time
import numpy as np
import pytest
from velox.core import NS
from velox.events import batch
from velox.infra.bus import publish, publish_eos
from velox.infra.codecs import decode_message
from velox.infra.kafka_bus import KafkaBus
from velox.infra.services import start_broker
from velox.runtime.runners import run_frame
from velox.runtime.settings import RunOptions, WorkerSettings
from velox.runtime.stages import execution_stage
from velox.runtime.watermarks import MarkerPacer
from velox.runtime.worker import Worker
from velox.feeds.replay import ArraySource
from bus_util import read_topic
from reference_trading import nbbo_window, scripted_signals, sources
from test_trading_kafka import LO, OUT, PARAMS, assert_same, canon, dedupe

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
MIN = 60 * NS
END_ = LO + 20 * MIN
SILENT = (LO + 6 * MIN, LO + 13 * MIN)  # BAC says nothing, quotes or signals
INPUTS = {'market.nbbo': 'nbbo', 'signals.final': 'signal', 'risk.commands': 'risk'}


class Clock:
    "The worker's idleness clock, moved by the test."
    def __init__(self): self.t, self.lock = 0.0, threading.Lock()
    def __call__(self):
        with self.lock: return self.t
    def tick(self, s):
        with self.lock: self.t += s


def quiet(b, sym_col='symbol'):
    "Without BAC's rows in the silent stretch."
    m = (b[sym_col] == 'BAC') & (b['ts'] >= SILENT[0]) & (b['ts'] < SILENT[1])
    return b[~m & (b['ts'] >= LO) & (b['ts'] < END_)]


def data():
    nb = {s: quiet(b) for s, b in nbbo_window(end_h=10 + 20 / 60).items()}
    sig = [quiet(scripted_signals('IBM', LO, END_, every_s=120, offset_s=7)),
           quiet(scripted_signals('BAC', LO, END_, every_s=180, offset_s=3, size=1000))]
    cmd = lambda t, action: batch('risk', ts=[t], symbol=[''], account=['alice'], rule=['kill_switch'], action=[action])
    cmds = np.concatenate([cmd(LO + 14 * MIN + 5 * NS, 'flatten'), cmd(LO + 17 * MIN + 5 * NS, 'resume')])
    return nb, sig, cmds


def test_a_paced_live_replay_releases_minute_by_minute_routes_late_events_and_equals_the_in_process_run(tmp_path):
    nb, sig, cmds = data()
    want = run_frame(execution_stage(PARAMS), sources(nb, sig) + [ArraySource('risk', '', cmds)], collect=tuple(OUT))
    want = {k: canon(want[k]) for k in OUT}
    assert len(want['fill']) > 5 and (want['risk']['rule'] == 'kill_switch').any()
    late = scripted_signals('IBM', LO + 3 * MIN, LO + 4 * MIN, every_s=60, offset_s=1)[:1]
    late['id'] = ['late-one']
    clock, lags = Clock(), []
    with start_broker() as broker:
        bus = KafkaBus(broker.dsn.split('://')[1], session_timeout_ms=6000, heartbeat_interval_ms=1000)
        w = Worker(execution_stage(PARAMS), bus, INPUTS, OUT, group='rehearsal',
                   settings=WorkerSettings(late='route', poll_ms=50))  # live defaults otherwise: idle after 5 s of silence
        w.wm.clock = clock
        t = threading.Thread(target=w.run, args=(RunOptions(max_runtime_s=600),), daemon=True); t.start()
        pacer = MarkerPacer(bus, ['market.nbbo', 'signals.final'], name='rehearsal', every_ns=1)  # the operator's topic: none
        parts = [('market.nbbo', 'nbbo', b) for b in nb.values()] + [('signals.final', 'signal', b) for b in sig] + \
                [('risk.commands', 'risk', cmds)]
        for lo in range(LO, END_, MIN):
            for topic, kind, b in parts:
                m = (b['ts'] >= lo) & (b['ts'] < lo + MIN)
                if m.any(): publish(bus, topic, kind, b[m])
            if lo == LO + 15 * MIN: publish(bus, 'signals.final', 'signal', late)  # 12 minutes behind
            pacer.after(lo + MIN); bus.flush()
            t0, deadline = time.monotonic(), time.monotonic() + 60
            while (w.stats.watermark_ns or 0) < lo + MIN:  # the bound: released before the next minute comes
                assert t.is_alive() and time.monotonic() < deadline, \
                    f"minute {(lo - LO) // MIN}: watermark {w.stats.watermark_ns} never reached {lo + MIN}: {w.stats}"
                clock.tick(0.5); time.sleep(0.05)  # 10x: half a second of the worker's clock every 50 ms
            lags.append(time.monotonic() - t0)
        for topic in INPUTS: publish_eos(bus, topic, sorted(nb) if topic != 'risk.commands' else [])
        bus.flush()
        deadline = time.monotonic() + 120
        while not w.ends.all_ended(w.owned.assigned) or any(not m.closed for m in w.merges.values()):
            assert time.monotonic() < deadline, 'the ends never came through'
            time.sleep(0.1)
        w.stop(); t.join(60)
        assert w.stats.state == 'stopped' and w.stats.late == 1
        routed = read_topic(bus, 'late.signals.final')
        assert len(routed) == 1 and b'behind the watermark' in routed[0].headers['velox-late']
        assert decode_message(routed[0].value)[1]['id'].tolist() == ['late-one']
        got = {k: canon(dedupe(np.concatenate([decode_message(m.value)[1] for m in read_topic(bus, topic)]))) for k, topic in OUT.items()}
        for k in OUT: assert_same(got[k], want[k], k)
        bus.close()
    p50, p99 = np.percentile(lags, [50, 99])
    print(f"\nminute published -> released (wall, 10x clock): p50 {p50 * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} ms over {len(lags)} minutes")

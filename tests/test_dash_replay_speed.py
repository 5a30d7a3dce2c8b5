"""Changing the replay speed through the desk's replay control while a replay runs: the new pace takes effect at once,
and what reaches the desk is exactly what an uninterrupted replay at max speed delivers."""
import time
from pathlib import Path
import numpy as np
import pytest
from velox.core import NS
from velox.face.dashapp import build_desk, catalog_table
from velox.face.replay_panel import SPEEDS
from velox.core import clock_ns

pytestmark = pytest.mark.slow
DATA = Path(__file__).resolve().parent.parent / 'replay' / 'data'
WINDOW_S = 600


def _day():
    "The first recorded (symbol, day) with both quotes and trades."
    t = catalog_table(str(DATA))
    t = t[t['format'] == 'lean_tick']
    both = t.groupby(['symbol', 'date'])['kind'].agg(set)
    return next((s, d) for (s, d), kinds in both.items() if {'quote', 'trade'} <= kinds)


def _desk(symbol, day, speed):
    "A desk whose replay control replays 10 minutes from 10:00; every batch fed to the desk is recorded."
    t0 = clock_ns(day, '10:00', 'start')
    desk = build_desk(str(DATA), [symbol], day, speed, smc=False, end=t0 + WINDOW_S * NS)
    fed = []
    def record(kind, b): fed.append((kind, b.copy())); desk.feed(kind, b)
    desk.driver.on_output = record
    desk['replay'].start_at.value = '10:00'
    return desk, fed, t0


def _by_kind(fed):
    kinds = sorted({k for k, _ in fed})
    return {k: np.concatenate([b for kk, b in fed if kk == k]) for k in kinds}


def test_switching_1x_to_10x_to_max_mid_replay_takes_effect_and_delivers_the_same_events():
    symbol, day = _day()
    ref_desk, ref_fed, _ = _desk(symbol, day, 'max')
    ref_desk['replay'].start()
    assert ref_desk.driver.wait(120) and ref_desk.driver.replay.state == 'finished'
    ref = _by_kind(ref_fed)
    assert {'nbbo', 'print', 'bar', 'alert'} <= set(ref) and ref_desk.driver.replay.done > 1000

    desk, fed, t0 = _desk(symbol, day, '1x')
    panel, driver = desk['replay'], desk.driver
    panel.start()
    first = None
    while first is None: first, w = driver.replay.event_time, time.monotonic(); time.sleep(0.01)
    time.sleep(1.5)
    at_1x, w = (driver.replay.event_time - first) / NS, time.monotonic() - w
    assert at_1x <= w + 0.5, f'{at_1x:.1f} s of events in {w:.1f} s at 1x'
    panel.speed.active = list(SPEEDS).index('10x')  # the control's speed buttons
    assert driver.speed == '10x'
    e0, w = driver.replay.event_time, time.monotonic()
    time.sleep(1.5)
    at_10x, w = (driver.replay.event_time - e0) / NS, time.monotonic() - w
    assert 2 * w < at_10x <= 10 * w + 1.5, f'{at_10x:.1f} s of events in {w:.1f} s at 10x'  # faster than 1x, never ahead of 10x
    assert driver.running and driver.replay.event_time < t0 + WINDOW_S * NS
    panel.speed.active = list(SPEEDS).index('max')
    w0 = time.monotonic()
    assert driver.wait(60), 'the replay did not speed up to max'
    print(f"\n{symbol} {day}: {at_1x:.2f} s of events in 1.5 s at 1x, {at_10x:.2f} s at 10x, "
          f"the remaining {(t0 + WINDOW_S * NS - e0) / NS - at_10x:.0f} s at max in {time.monotonic() - w0:.2f} s")
    assert time.monotonic() - w0 < 30 and driver.replay.state == 'finished'
    assert driver.replay.done == ref_desk.driver.replay.done

    got = _by_kind(fed)
    assert set(got) == set(ref)
    for k in ref:
        assert len(got[k]) == len(ref[k]), (k, len(got[k]), len(ref[k]))
        assert got[k].tobytes() == ref[k].tobytes(), k  # same events, same order (NaN indicators included)

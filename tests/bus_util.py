"Helpers shared by the tests that read topics on a real broker."
import time, uuid
import pytest
from velox.infra.bus import is_control


def read_topic(bus, topic, idle_polls=4, markers=False):
    "Every message on `topic` (a fresh consumer group), until `idle_polls` polls in a row return nothing."
    out, idle, t0 = [], 0, time.monotonic()
    with bus.consumer([topic], f'check-{uuid.uuid4().hex[:6]}') as c:
        while idle < idle_polls:
            got = c.poll(timeout_ms=1000, max_records=10_000)
            joined = bool(c.assignment()) or time.monotonic() - t0 > 60  # idle polls count once the group is joined
            idle = 0 if got or not joined else idle + 1
            out += got
    return out if markers else [m for m in out if not is_control(m)]


def fresh_topic(name):
    "A topic name of its own per test: the session's broker outlives each test."
    return f'test.{name}.{uuid.uuid4().hex[:8]}'


def wait_for(what, pred, timeout=120, every=0.25):
    "`pred()` once it is truthy (polled every `every` s); the test fails naming `what` after `timeout` s."
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got: return got
        if time.monotonic() > deadline: pytest.fail(f'timed out waiting for {what}')
        time.sleep(every)

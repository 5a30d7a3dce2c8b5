"""The `l3` stage on the bus: the real ESM4 market-by-order sample (tests/fixtures/vendor, NautilusTrader test data,
LGPL-3.0, originally from Databento; see its README) published to `market.mbo`, run by `stage_worker('l3', ...)` as
`velox worker l3` does, gives on `market.book` and `market.nbbo` exactly what the notebook runner gives."""
import uuid

import numpy as np
import pytest

from velox.core import ConfigError
from velox.feeds.databento import load_dbn
from velox.feeds.replay import ArraySource
from velox.infra.bus import MemoryBus, is_control, publish, publish_eos
from velox.infra.codecs import decode_message
from velox.infra.topics import KIND_TOPICS, TOPICS
from velox.market.l3 import l3_stage
from velox.runtime.runners import run_frame
from velox.runtime.stages import STAGES, stage_worker
from velox.runtime.worker import RunOptions

from vendor_files import MBO_ESM4 as MBO


def on_topic(bus, topic):
    c = bus.consumer([topic], f'check-{uuid.uuid4().hex[:6]}')
    got = [decode_message(m.value)[1] for m in c.poll(max_records=10**6) if not is_control(m)]
    c.close()
    return np.concatenate(got)


def test_the_l3_worker_on_a_memory_bus_equals_the_notebook_runner():
    assert KIND_TOPICS['mbo'] == 'market.mbo' and 'market.mbo' in TOPICS and 'l3' in STAGES
    mbo = load_dbn(MBO)['mbo']
    bus = MemoryBus()
    publish(bus, 'market.mbo', 'mbo', mbo, rows_per_frame=1000)  # many messages: the book carries across them
    publish_eos(bus, 'market.mbo', ['ESM4'])
    stats = stage_worker('l3', bus, params={'venue': 'GLBX'}, options=RunOptions(until_end=True, max_runtime_s=120))
    assert stats['state'] == 'stopped'
    ref = run_frame(l3_stage(venue='GLBX'), [ArraySource('mbo', 'ESM4', mbo)])
    assert len(ref['nbbo']) > 100 and len(ref['book']) > 1000
    assert on_topic(bus, 'market.nbbo').tolist() == ref['nbbo'].tolist()
    assert on_topic(bus, 'market.book').tolist() == ref['book'].tolist()


def test_l3_parameters_are_checked():
    with pytest.raises(ConfigError, match=r"l3 parameters: unknown \['tik'\]"):
        stage_worker('l3', MemoryBus(), params={'tik': 25_000_000})

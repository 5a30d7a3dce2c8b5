"""The wire codecs on a real day: JSON written by velox reads back (a poll at a time) as the recorded rows; the JSON
form equals `events.to_dicts` (the seed form the JSON Schemas document); Arrow messages read back exactly; retired
VXF1 frames still read; every data message says its kind, schema version and codec in headers, and every control
record says so in `velox-control`."""
import json
from pathlib import Path
import numpy as np
import orjson
import pytest
from velox.events import to_dicts
from velox.feeds.recorded import Catalog
from velox.infra.bus import MemoryBus, is_control, publish, publish_eos
from velox.infra.codecs import CodecError, decode_message, decode_messages, encode_arrow, encode_frame, encode_json

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def day():
    return {s.kind: s.load()[:20_000] for s in Catalog(ROOT / 'replay' / 'data').find('BAC', '2013-10-08')}


def test_json_poll_decodes_to_the_recorded_rows_and_is_the_seed_form(day):
    for kind, b in day.items():
        msgs = encode_json(kind, b)
        assert [orjson.loads(m) for m in msgs[:300]] == to_dicts(b[:300], kind)
        got = decode_messages(msgs)
        assert all(type(g) is tuple and g[0] == kind for g in got)
        assert np.concatenate([g[1] for g in got]).tobytes() == b.tobytes()


def test_one_bad_json_message_in_a_poll_is_refused_alone_and_named(day):
    tr = day['trade'][:50]
    msgs = encode_json('trade', tr)
    bad = json.loads(msgs[20]); bad['size'] = -3
    msgs[20] = json.dumps(bad).encode()
    got = decode_messages(msgs)
    assert isinstance(got[20], CodecError) and "JSON trade message, field 'size'" in str(got[20])
    assert np.concatenate([g[1] for i, g in enumerate(got) if i != 20]).tobytes() == np.delete(tr, 20).tobytes()


def test_arrow_and_retired_frames_read_back_exactly(day):
    for kind, b in day.items():
        assert decode_message(encode_arrow(kind, b))[1].tobytes() == b.tobytes()
        assert decode_message(encode_frame(kind, b[:500]))[1].tobytes() == b[:500].tobytes()  # read for one release


@pytest.mark.parametrize('codec', ['arrow', 'json'])
def test_every_message_says_what_it_is_in_headers(day, codec):
    bus = MemoryBus()
    publish(bus, 'market.trades', 'trade', day['trade'][:100], codec=codec)
    publish_eos(bus, 'market.trades', ['BAC'])
    msgs = bus.consumer('market.trades', 'g').poll(0, 10_000)
    data, control = [m for m in msgs if not is_control(m)], [m for m in msgs if is_control(m)]
    assert {(m.headers['velox-kind'], m.headers['velox-schema'], m.headers['velox-codec']) for m in data} == {(b'trade', b'1', codec.encode())}
    assert len(control) == 1 + 6 and all(m.headers['velox-control'] == b'eos' and m.value == b'' for m in control)
    assert np.concatenate([decode_message(m.value)[1] for m in data]).tobytes() == day['trade'][:100].tobytes()

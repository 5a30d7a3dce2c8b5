"""The committed JSON Schemas (velox/schemas/<kind>.json) are the generated ones, and what velox writes is valid against
them; the Arrow schemas round trip real data of every recorded kind."""
import json
from pathlib import Path
import numpy as np
import jsonschema
import pytest
from velox.events import DTYPES, to_dicts
from velox.feeds.arrow import from_arrow, json_schema, schema, to_arrow
from velox.feeds.recorded import Catalog

FOLDER = Path(__file__).parents[1]/'velox/schemas'
REGEN = "regenerate: python -c \"from velox.feeds.arrow import write_json_schemas; write_json_schemas('velox/schemas')\""

def test_committed_schemas_are_the_generated_ones():
    have = {p.stem for p in FOLDER.glob('*.json')}
    assert have == set(DTYPES), f"schema files {sorted(have ^ set(DTYPES))} differ from events.DTYPES; {REGEN}"
    for k in DTYPES:
        assert json.loads((FOLDER/f'{k}.json').read_text()) == json_schema(k), f"velox/schemas/{k}.json is stale; {REGEN}"

@pytest.fixture(scope='module')
def recorded():
    root = Path(__file__).parents[1]/'replay/data'
    return {s.kind: s.load() for s in Catalog(root).find('BAC', '2013-10-08')}

def test_velox_json_is_valid_against_its_schema(recorded):
    for kind, b in recorded.items():
        v = jsonschema.Draft202012Validator(json.loads((FOLDER/f'{kind}.json').read_text()), format_checker=jsonschema.FormatChecker())
        for d in to_dicts(b[::max(1, len(b) // 500)], kind): v.validate(d)

def test_arrow_round_trip_real_day(recorded):
    for kind, b in recorded.items():
        rb = to_arrow(kind, b)
        assert rb.schema.equals(schema(kind), check_metadata=True)
        got_kind, got = from_arrow(rb)
        assert got_kind == kind and got.dtype == DTYPES[kind] and got.tobytes() == b.tobytes()
        # an outside reader's view: dollars from the field metadata alone equal the velox prices
        for f in rb.schema:
            if (f.metadata or {}).get(b'velox.type') == b'price':
                dollars = rb.column(f.name).to_numpy() * float(f.metadata[b'velox.scale'])
                np.testing.assert_allclose(dollars, b[f.name] / 1e8, rtol=0, atol=1e-12)

"""The vendor samples the tests read (tests/fixtures/vendor; NautilusTrader test data, LGPL-3.0, from Databento and
Tardis: see its README), named once."""
from pathlib import Path

VENDOR = Path(__file__).parent / 'fixtures' / 'vendor'
DATABENTO, TARDIS = VENDOR / 'databento', VENDOR / 'tardis'
ES_TRADES = DATABENTO / 'futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst'  # ESU4 trades, four minutes
ES_MBP1 = DATABENTO / 'futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst'  # ESU4 top of book + trades, same window
ES_OHLCV = DATABENTO / 'futures_ohlcv-1m_2024-07-01T23-40_2024-07-02T00-10.dbn.zst'  # the vendor's 1-minute bars
ES_DEFS = DATABENTO / 'futures_definition.dbn.zst'  # ESU4 and NQU4 definitions (tick, multiplier)
MBO_ESH4 = DATABENTO / 'esh4-glbx-mdp3-20231224.mbo.dbn.zst'  # one snapshot
MBO_ESM4 = DATABENTO / 'orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst'  # a snapshot, then 2 s of events


def es_registry():
    "An instrument registry filled from the vendor's ESU4/NQU4 definitions."
    from velox.feeds.databento import read_dbn
    from velox.market.instruments import Instruments
    reg = Instruments()
    read_dbn(ES_DEFS, reg)
    return reg

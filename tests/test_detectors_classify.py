"""Lee-Ready trade classification on real days against a plain-loop reference (pandas merge_asof for the quotes)."""
from pathlib import Path
import numpy as np
import pytest
from velox.market.signing import lee_ready, QuoteMemory
from velox.feeds.recorded import Catalog
from velox.market.nbbo import consolidated_nbbo
from reference_detectors import classified_trades

DATA = Path(__file__).resolve().parent.parent / 'replay' / 'data'
CAT = Catalog(DATA)


@pytest.mark.parametrize('sym,day,lag_ms', [('IBM', '2013-10-08', 0), ('BAC', '2013-10-08', 0), ('IBM', '2013-10-10', 50),
                                            ('BAC', '2013-10-11', 1000)])
def test_lee_ready_equals_a_plain_loop_reference_on_a_real_day(sym, day, lag_ms):
    q, t = CAT.find(sym, day)
    nb, _ = consolidated_nbbo(q.load())
    side, st = lee_ready(t.load(), nb, quote_lag_ms=lag_ms)
    ref = classified_trades(t.path, q.path, lag_ms)
    assert side.tolist() == ref['side'].tolist()
    assert 0.3 < (side == 1).mean() < 0.7
    assert st['counts']['tick'] == int(((ref['bid'] == 0) | (ref['ask'] == 0) | (ref['bid'] > ref['ask'])
                                        | (2 * ref['price'] == ref['bid'] + ref['ask'])).sum())


def test_quote_memory_in_windows_gives_the_whole_day_sides_whatever_the_cuts():
    q, t = CAT.find('IBM', '2013-10-08')
    nb, tr = consolidated_nbbo(q.load())[0], t.load()
    whole, _ = lee_ready(tr, nb, quote_lag_ms=20)
    rng = np.random.default_rng(5)
    cuts = np.sort(rng.choice(np.unique(np.r_[nb['ts'], tr['ts']]), 40, replace=False))
    mem, st, got, lo = QuoteMemory(20), {}, [], np.iinfo('i8').min
    for hi in [*cuts.tolist(), np.iinfo('i8').max]:
        w_nb, w_tr = nb[(nb['ts'] >= lo) & (nb['ts'] < hi)], tr[(tr['ts'] >= lo) & (tr['ts'] < hi)]
        mem.remember(st, w_nb)
        if len(w_tr): got.append(mem.classify(st, w_tr)[0])
        if len(w_nb) or len(w_tr): mem.forget(st, int(max(w_nb['ts'].max() if len(w_nb) else lo, w_tr['ts'].max() if len(w_tr) else lo)))
        lo = hi
    assert np.concatenate(got).tolist() == whole.tolist()

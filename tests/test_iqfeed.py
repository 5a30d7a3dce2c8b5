"""The live IQFeed client (`velox.runtime.live`, over the protocol of `velox.feeds.iqfeed`) against a local TCP server (127.0.0.1, in the test) that serves protocol lines built from
real recorded data: IBM and BAC trades and NBBO updates of 2013-10-08 (Lean files) on Level 1, Binance BTCUSDT
depth levels on Level 2. What the client publishes must equal the recorded ticks."""
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from velox.infra.bus import MemoryBus
from velox.infra.codecs import decode_message
from velox.core import NS, NY, ns_to_local
from velox.events import TRADE_CONDITIONS
from velox.feeds.recorded import load_binance, load_lean_ticks
from velox.feeds.iqfeed import UPDATE_FIELDS, l1_handshake
from velox.infra.topics import KIND_TOPICS
from velox.runtime.live import DLQ_TOPIC, IQFeedClient, IQFeedSettings

DATA = Path(__file__).resolve().parent.parent / 'replay' / 'data'
DAY = '20131008'


# --- building IQFeed text from recorded data (the test's own encoder, written from the protocol) -------------
def window(sym, start='09:30:00', end='09:35:00'):
    "Recorded trades and quotes of `sym` between two New York times."
    import pandas as pd
    lo, hi = (pd.Timestamp(f'2013-10-08 {t}', tz=NY).value for t in (start, end))
    out = {}
    for kind in ('trade', 'quote'):
        b = load_lean_ticks(DATA / f'lean/equity/usa/tick/{sym.lower()}/{DAY}_{kind}.zip')
        out[kind] = b[(b['ts'] >= lo) & (b['ts'] < hi)]
    return out


# IQFeed numbers market centers and trade conditions; the test invents its own tables and gives them to the client
def tables(recorded):
    venues = sorted({v for r in recorded for k in r.values() for v in k['venue'].tolist()})
    market_centers = {i + 1: v for i, v in enumerate(venues)}
    conditions = {0x40 + bit: name for bit, name in enumerate(TRADE_CONDITIONS)}
    return market_centers, conditions


def iq_time(ts):
    return ns_to_local(int(ts)).strftime('%H:%M:%S.%f')


def q_message(sym, fields):
    return ','.join(['Q', sym] + [fields.get(f, '') for f in UPDATE_FIELDS]) + ','


def encode_l1(recorded, market_centers):
    "Q lines (and a T line whenever the second changes), in event-time order, quotes before trades at one time."
    mc_of = {v: k for k, v in market_centers.items()}
    events = sorted(((int(r['ts']), kind == 'trade', i, sym, r) for sym, rec in recorded.items()
                     for kind in ('quote', 'trade') for i, r in enumerate(rec[kind])), key=lambda e: e[:3])
    lines, last_sec, tick_id = [], None, 1000
    for ts, is_trade, _, sym, r in events:
        if ts // NS != last_sec:
            last_sec = ts // NS
            lines.append('T,' + ns_to_local(ts).strftime('%Y%m%d %H:%M:%S'))
        if is_trade:
            tick_id += 1
            cond = ''.join(f'{0x40 + b:02X}' for b in range(32) if int(r['cond']) >> b & 1)
            lines.append(q_message(sym, {
                'Most Recent Trade': f"{int(r['price']) / 1e8:.4f}", 'Most Recent Trade Size': str(int(r['size'])),
                'Most Recent Trade Time': iq_time(ts), 'Most Recent Trade Date': '10/08/2013',
                'Most Recent Trade Market Center': str(mc_of[r['venue']]), 'Most Recent Trade Conditions': cond,
                'TickID': str(tick_id), 'Message Contents': 'C'}))
        else:
            side = 'Bid' if r['bid'] or r['bid_size'] else 'Ask'
            px, sz = (r['bid'], r['bid_size']) if side == 'Bid' else (r['ask'], r['ask_size'])
            lines.append(q_message(sym, {side: f'{int(px) / 1e8:.4f}', f'{side} Size': str(int(sz)),
                                         f'{side} Time': iq_time(ts), f'{side} Market Center': str(mc_of[r['venue']]),
                                         'Message Contents': 'b' if side == 'Bid' else 'a'}))
    return lines


# --- a scripted IQFeed server on 127.0.0.1 ------------------------------------------------------------------
class FakeIQFeed:
    """Accepts connections one after another; connection i runs `scripts[i](conn, received)`. Every command the
    client sends on a connection is recorded in `commands[i]`. Stops by itself after `timeout` seconds."""

    def __init__(self, scripts, timeout=20.0, port=0):
        self.scripts, self.commands, self.done = scripts, [], threading.Event()
        self.release = threading.Event()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(('127.0.0.1', port))
        self.sock.listen()
        self.sock.settimeout(timeout)
        self.port = self.sock.getsockname()[1]
        self.deadline = time.monotonic() + timeout
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            for script in self.scripts:
                conn, _ = self.sock.accept()
                conn.settimeout(0.05)
                received = []
                self.commands.append(received)
                reader = threading.Thread(target=self._collect, args=(conn, received), daemon=True)
                reader.start()
                try: script(self, conn, received)
                finally:
                    try: conn.shutdown(socket.SHUT_RDWR)
                    except OSError: pass
                    conn.close()
                    reader.join(2)
        except OSError:
            pass
        finally:
            self.sock.close()

    def _collect(self, conn, received):
        buf = b''
        while time.monotonic() < self.deadline:
            try: data = conn.recv(4096)
            except socket.timeout: continue
            except OSError: return
            if not data: return
            buf += data
            *lines, buf = buf.split(b'\r\n')
            received += [x.decode() for x in lines]

    def wait_commands(self, received, n):
        while len(received) < n and time.monotonic() < self.deadline: time.sleep(0.005)
        assert len(received) >= n, f"client sent {received}, expected {n} commands"

    @staticmethod
    def send(conn, lines):
        conn.sendall(''.join(x + '\r\n' for x in lines).encode('latin-1'))

    def hold(self):
        "Keep the connection open until the test is done with it."
        self.done.set()
        self.release.wait(max(0.0, self.deadline - time.monotonic()))


def run_client(client, server, settle=0.3):
    "Run `client` in a thread until the server has sent everything (plus `settle` s), then stop it."
    out = {}
    t = threading.Thread(target=lambda: out.update(client.run(max_runtime_s=30)), daemon=True)
    t.start()
    assert server.done.wait(25), 'server script did not finish'
    time.sleep(settle)
    client.stop()
    t.join(10)
    server.release.set()
    assert not t.is_alive()
    return out


def consumed(bus, topic):
    msgs = bus.consumer(topic, 'test').poll(0, 1_000_000)
    return np.concatenate([decode_message(m.value)[1] for m in msgs]) if msgs else None


FIELDNAMES = 'S,CURRENT UPDATE FIELDNAMES,Symbol,' + ','.join(UPDATE_FIELDS)


def test_l1_round_trip_of_real_ticks_through_a_dropped_connection_a_malformed_line_and_an_unknown_symbol():
    recorded = {s: window(s) for s in ('IBM', 'BAC')}
    assert all(len(r['trade']) > 100 and len(r['quote']) > 300 for r in recorded.values())
    mc, conds = tables(recorded.values())
    lines = encode_l1(recorded, mc)
    cut = len(lines) // 2
    bad_price = next(x for x in lines if x.startswith('Q,IBM,') and x.endswith(',C,')).split(',')
    bad_price[2] = '18x.00'  # 'Most Recent Trade' is not a number
    malformed = [','.join(bad_price), 'HELLO WORLD']

    def first(srv, conn, received):
        srv.wait_commands(received, 5)  # protocol, fields, wIBM, wBAC, wXYZ
        srv.send(conn, ['S,CURRENT PROTOCOL,6.2', FIELDNAMES, 'n,XYZ'])
        srv.send(conn, lines[:cut - 10] + malformed[:1] + lines[cut - 10:cut] + malformed[1:])
        conn.sendall(lines[cut][:25].encode())  # the connection drops in the middle of a line
        time.sleep(0.1)

    def second(srv, conn, received):
        srv.wait_commands(received, 4)
        srv.send(conn, ['S,CURRENT PROTOCOL,6.2', FIELDNAMES] + lines[cut:])
        srv.hold()

    server = FakeIQFeed([first, second])
    bus = MemoryBus()
    settings = IQFeedSettings(l1_port=server.port, window_ms=20, dlq=True, backoff_base=0.05, backoff_cap=0.2)
    client = IQFeedClient(bus, 'IBM,BAC,XYZ', settings, market_centers=mc, trade_conditions=conds)
    stats = run_client(client, server)

    # handshake, then watches; after the reconnect the same again, without the symbol the server did not know
    assert server.commands[0] == l1_handshake() + ['wIBM', 'wBAC', 'wXYZ']
    assert server.commands[1] == l1_handshake() + ['wIBM', 'wBAC']
    assert stats['reconnects'] == 1 and stats['dropped_partial_lines'] == 1
    assert stats['unknown_symbols'] == ['XYZ'] and stats['protocol'] == '6.2'
    assert stats['malformed'] == 2

    trades, quotes = consumed(bus, KIND_TOPICS['trade']), consumed(bus, KIND_TOPICS['quote'])
    for sym, rec in recorded.items():
        got_t, got_q = trades[trades['symbol'] == sym], quotes[quotes['symbol'] == sym]
        want_t, want_q = rec['trade'], rec['quote']
        # every recorded tick, once, in order, with exact prices, sizes, venues, conditions and times
        for f in ('ts', 'symbol', 'price', 'size', 'venue', 'cond'):
            np.testing.assert_array_equal(got_t[f], want_t[f], err_msg=f'{sym} trade {f}')
        for f in ('ts', 'symbol', 'bid', 'bid_size', 'ask', 'ask_size', 'venue'):
            np.testing.assert_array_equal(got_q[f], want_q[f], err_msg=f'{sym} quote {f}')
        np.testing.assert_array_equal(got_t['seq'], np.arange(len(want_t)))
    assert stats['published'] == {'trade': sum(len(r['trade']) for r in recorded.values()),
                                   'quote': sum(len(r['quote']) for r in recorded.values())}

    # the malformed lines went to the dead-letter topic untouched, with the reason
    dead = sorted(bus.consumer(DLQ_TOPIC, 'test').poll(0, 100), key=lambda m: m.value)  # two partitions: any order
    assert [m.value.decode() for m in dead] == sorted(malformed)
    assert dead[0].key is None and b"unknown message type 'HELLO WORLD'" in dead[0].headers['velox-error']
    assert dead[1].key == 'IBM' and b"price '18x.00'" in dead[1].headers['velox-error']


def test_latency_is_wall_receive_time_minus_event_time():
    recorded = {'IBM': window('IBM', '10:00:00', '10:00:20')}
    mc, conds = tables(recorded.values())
    lines = encode_l1(recorded, mc)
    wall = int(recorded['IBM']['trade']['ts'].max()) + 250 * 10**6  # the "wall clock" stands still

    def script(srv, conn, received):
        srv.wait_commands(received, 3)
        srv.send(conn, lines)
        srv.hold()

    server = FakeIQFeed([script])
    client = IQFeedClient(MemoryBus(), ['IBM'], IQFeedSettings(l1_port=server.port, window_ms=20),
                          market_centers=mc, trade_conditions=conds, wall_clock=lambda: wall)
    lat = run_client(client, server)['latency']
    ts = np.concatenate([recorded['IBM'][k]['ts'] for k in ('trade', 'quote')])
    assert lat['count'] == len(ts)  # one measurement per update message
    assert lat['max_ms'] == pytest.approx((wall - ts.min()) / 1e6)
    assert lat['p50_ms'] == pytest.approx(np.percentile((wall - ts) / 1e6, 50))


def test_client_retries_with_backoff_until_the_server_is_up():
    probe = socket.socket()
    probe.bind(('127.0.0.1', 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens on `port` now
    recorded = {'BAC': window('BAC', '11:00:00', '11:01:00')}
    assert len(recorded['BAC']['trade']) > 10
    mc, conds = tables(recorded.values())
    lines = encode_l1(recorded, mc)
    bus = MemoryBus()
    settings = IQFeedSettings(l1_port=port, window_ms=20, backoff_base=0.05, backoff_cap=0.1)
    client = IQFeedClient(bus, ['BAC'], settings, market_centers=mc, trade_conditions=conds)
    t = threading.Thread(target=client.run, kwargs={'max_runtime_s': 20}, daemon=True)
    t.start()
    time.sleep(0.4)  # several refused attempts

    def script(srv, conn, received):
        srv.wait_commands(received, 3)
        srv.send(conn, lines)
        srv.hold()

    server = FakeIQFeed([script], port=port)
    assert server.done.wait(15)
    time.sleep(0.3)
    client.stop()
    t.join(10)
    server.release.set()
    assert client.connects == 1 and client.reconnects == 0
    np.testing.assert_array_equal(consumed(bus, KIND_TOPICS['trade'])['price'], recorded['BAC']['trade']['price'])
    np.testing.assert_array_equal(consumed(bus, KIND_TOPICS['quote'])['ts'], recorded['BAC']['quote']['ts'])


def test_l2_price_levels_round_trip_real_binance_depth():
    book = load_binance(DATA / 'binance/btcusdt_20240808_spot.gz')['book'][:3000]

    def level_line(r):
        t = ns_to_local(int(r['ts']))
        side = 'B' if r['side'] == 1 else 'S'
        px = f"{int(r['price']) / 1e8:.8f}"
        stamp = f"{t.strftime('%H:%M:%S.%f')},{t.strftime('%Y-%m-%d')}"
        if r['size'] == 0: return f"9,BTCUSDT,{side},{px},{stamp}"
        return f"8,BTCUSDT,{side},{px},{float(r['size'])!r},1,8,{stamp}"

    def l1(srv, conn, received):
        srv.wait_commands(received, 3)
        srv.hold()

    def l2(srv, conn, received):
        srv.wait_commands(received, 2)  # protocol, wBTCUSDT
        srv.send(conn, [level_line(r) for r in book])
        srv.hold()

    s1, s2 = FakeIQFeed([l1]), FakeIQFeed([l2])
    bus = MemoryBus()
    client = IQFeedClient(bus, ['BTCUSDT'], IQFeedSettings(l1_port=s1.port, l2_port=s2.port, window_ms=20))
    t = threading.Thread(target=client.run, kwargs={'max_runtime_s': 20}, daemon=True)
    t.start()
    assert s2.done.wait(15)
    time.sleep(0.3)
    client.stop()
    t.join(10)
    s1.release.set(); s2.release.set()
    assert s2.commands[0] == ['S,SET PROTOCOL,6.2', 'wBTCUSDT']
    got = consumed(bus, KIND_TOPICS['book'])
    assert len(got) == len(book)
    np.testing.assert_array_equal(got['ts'], book['ts'] // 1000 * 1000)  # IQFeed times carry microseconds
    for f in ('side', 'price', 'size'):
        np.testing.assert_array_equal(got[f], book[f], err_msg=f)


@pytest.mark.kafka
def test_velox_feed_iqfeed_command_publishes_to_kafka(kafka_bootstrap):
    from velox.infra.kafka_bus import KafkaBus
    from velox.face.cli import main
    # served under a symbol of its own, so other tests' IBM rows on the shared broker cannot mix in
    rec = window('IBM', '12:00:00', '12:00:10')
    for b in rec.values(): b['symbol'] = 'IQTEST'
    recorded = {'IQTEST': rec}
    mc, _ = tables(recorded.values())
    lines = encode_l1(recorded, mc)

    def script(srv, conn, received):
        srv.wait_commands(received, 3)
        srv.send(conn, lines)
        srv.hold()

    server = FakeIQFeed([script])
    import json
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / 'mc.json').write_text(json.dumps(mc))
        threading.Timer(10, server.release.set).start()
        main(['feed', 'iqfeed', '--host', '127.0.0.1', '--l1-port', str(server.port), '--symbols', 'IQTEST',
              '--market-centers', str(Path(d) / 'mc.json'), '--bus', f'kafka://{kafka_bootstrap}',
              '--out-dir', d, '--max-runtime', '3'])
    server.release.set()
    bus = KafkaBus(kafka_bootstrap, session_timeout_ms=6000, heartbeat_interval_ms=1000)
    want = rec['trade']
    got, deadline = [], time.monotonic() + 20
    with bus.consumer([KIND_TOPICS['trade']], 'iqfeed-cli-test') as c:
        while sum(len(b) for b in got) < len(want) and time.monotonic() < deadline:
            got += [b[b['symbol'] == 'IQTEST'] for b in (decode_message(m.value)[1] for m in c.poll(timeout_ms=500))]
    bus.close()
    got = np.concatenate(got)
    np.testing.assert_array_equal(got['price'], want['price'])
    np.testing.assert_array_equal(got['ts'], want['ts'])

"""Notifications against local servers on 127.0.0.1 started in the tests: an HTTP server standing in for a webhook
receiver and for the Telegram Bot API, and an SMTP server (aiosmtpd)."""
import email
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from velox.core import VeloxError
from velox.events import batch
from velox.infra.notify import (Delivery, DeliveryError, EmailOutput, Notification, Notifier, SmtpServer, TelegramOutput,
                                WebhookOutput, load_notifier)

TOKEN = '7081234567:AAHk3-Zq_secretBotToken_9xY'


class Recorder:
    "A local HTTP server answering each POST with the next scripted status (then 200); records every request."
    def __init__(self, statuses=(), echo_path=False):
        self.statuses, self.requests, self.echo_path = list(statuses), [], echo_path
        rec = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
                rec.requests.append({'path': self.path, 'json': json.loads(body), 'headers': dict(self.headers)})
                code = rec.statuses.pop(0) if rec.statuses else 200
                self.send_response(code)
                self.send_header('Content-Type', 'application/json')
                self.end_headers()
                # like a careless proxy, echo the request path (with the bot token) in error bodies
                self.wfile.write(json.dumps({'ok': code == 200, 'path': self.path if rec.echo_path else ''}).encode())

            def log_message(self, *a): pass

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), H)
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}'
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http():
    servers = []
    def make(*a, **kw):
        servers.append(Recorder(*a, **kw))
        return servers[-1]
    yield make
    for s in servers: s.close()


class Clock:
    def __init__(self): self.t = 1000.0
    def __call__(self): return self.t


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


ALERTS = batch('alert', ts=[1381239000_065_000_000 + i * 10**9 for i in range(6)], symbol=['IBM', 'BAC'] * 3,
               kind=['dark_print'] * 6, price=[18189000000, 1410000000] * 3, size=[5000, 20000] * 3,
               venue=['D'] * 6, confidence=[0.91, 0.40, 0.75, 0.69, 0.99, 0.7], id=[f'alert-{i}' for i in range(6)])


def test_webhook_delivers_json_and_retries_500s_with_backoff_until_success(http):
    srv = http([500, 502, 503])
    waits = []
    out = WebhookOutput('ops', srv.url + '/hook', delivery=Delivery(attempts=5, backoff_base=0.1, backoff_cap=1.0), sleep=waits.append)
    n = Notification.from_row('alert', ALERTS[0])
    out.send(n)
    assert len(srv.requests) == 4 and len(waits) == 3  # three failures, three waits, then delivered
    assert all(0 <= w <= c for w, c in zip(waits, (0.1, 0.2, 0.4)))  # jittered exponential backoff
    body = srv.requests[-1]['json']
    assert srv.requests[-1]['path'] == '/hook' and srv.requests[-1]['headers']['Content-Type'] == 'application/json'
    assert body['id'] == 'alert-0' and body['symbol'] == 'IBM' and body['confidence'] == pytest.approx(0.91)
    assert body['timestamp'] == '2013-10-08T13:30:00.065000000Z'


def test_webhook_gives_up_after_attempts_and_does_not_retry_client_errors(http):
    srv = http([500] * 10)
    out = WebhookOutput('ops', srv.url, delivery=Delivery(attempts=3), sleep=lambda s: None)
    with pytest.raises(DeliveryError, match='HTTP 500'): out.send(Notification('test', 'x'))
    assert len(srv.requests) == 3
    srv2 = http([400])
    with pytest.raises(DeliveryError, match='HTTP 400'):
        WebhookOutput('ops', srv2.url, sleep=lambda s: None).send(Notification('test', 'x'))
    assert len(srv2.requests) == 1


def test_telegram_compatible_api_gets_chat_id_and_text_at_bot_token_send_message(http):
    srv = http([429])  # too many requests: retried
    out = TelegramOutput('desk', TOKEN, chat_id=-1001234, base_url=srv.url, sleep=lambda s: None)
    n = Notification.risk_breach('daily_loss', 'PnL -5,200 below -5,000', symbol='IBM')
    out.send(n)
    assert [r['path'] for r in srv.requests] == [f'/bot{TOKEN}/sendMessage'] * 2
    assert srv.requests[-1]['json'] == {'chat_id': -1001234, 'text': n.message()}
    assert n.message().startswith('[RISK] risk limit daily_loss breached (IBM)')


def test_the_bot_token_never_reaches_logs_errors_or_reprs(http, caplog, monkeypatch, tmp_path):
    monkeypatch.setenv('VELOX_TG_TOKEN', TOKEN)
    srv = http([500, 500, 401, 401], echo_path=True)  # error bodies contain the token
    cfg = tmp_path / 'notify.yaml'
    cfg.write_text(f'outputs:\n  desk: {{type: telegram, chat_id: 7, base_url: "{srv.url}", token_env: VELOX_TG_TOKEN}}\n')
    nt = load_notifier(cfg, sleep=lambda s: None)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger('urllib3').setLevel(logging.DEBUG)
        res = nt.notify(Notification('test', 'hello'))
        with pytest.raises(DeliveryError) as e: nt.outputs['desk'].send(Notification('test', 'again'))
    assert res == {'desk': 'failed'}
    assert srv.requests and TOKEN in srv.requests[0]['path']  # the server did get it...
    assert 'HTTP 401' in caplog.text and 'HTTP 500' in caplog.text
    for text in (caplog.text, str(e.value), repr(nt.outputs['desk']), repr(nt.counts)):
        assert TOKEN not in text  # ...nothing else shows it
    assert 'bot***/sendMessage' in caplog.text


def test_notifier_dedupes_by_event_id_within_the_ttl(http):
    srv = http()
    clock = Clock()
    nt = Notifier([WebhookOutput('ops', srv.url, delivery=Delivery(burst=100), clock=clock)], dedupe_ttl_s=600, clock=clock)
    n = Notification.from_row('alert', ALERTS[0])
    assert nt.notify(n) == {'ops': 'sent'}
    assert nt.notify(Notification.from_row('alert', ALERTS[:1].copy()[0])) == {'ops': 'duplicate'}  # same id
    clock.t += 599
    assert nt.notify(n) == {'ops': 'duplicate'}
    clock.t += 2  # the TTL has passed
    assert nt.notify(n) == {'ops': 'sent'}
    assert len(srv.requests) == 2 and nt.counts['ops']['duplicate'] == 2


def test_token_bucket_limits_each_output_by_count(http):
    srv_a, srv_b = http(), http()
    clock = Clock()
    a = WebhookOutput('a', srv_a.url, delivery=Delivery(burst=3, rate_per_min=2), clock=clock)  # one token every 30 s
    b = WebhookOutput('b', srv_b.url, delivery=Delivery(burst=10, rate_per_min=60), clock=clock)
    nt = Notifier([a, b], clock=clock)
    res = [nt.notify(Notification('test', f'msg {i}')) for i in range(5)]
    assert [r['a'] for r in res] == ['sent'] * 3 + ['rate_limited'] * 2
    assert [r['b'] for r in res] == ['sent'] * 5  # each output has its own bucket
    clock.t += 30
    assert nt.notify(Notification('test', 'msg 5'))['a'] == 'sent'
    assert nt.notify(Notification('test', 'msg 6'))['a'] == 'rate_limited'
    assert (len(srv_a.requests), len(srv_b.requests)) == (4, 7)


def test_notifier_as_alert_sink_filters_by_confidence_and_tier(http):
    srv = http()
    nt = Notifier([WebhookOutput('ops', srv.url, delivery=Delivery(burst=100))], min_confidence=0.7)
    nt.write('alert', ALERTS)
    nt.write('nbbo', np.zeros(3))  # not a kind it notifies about
    assert len(srv.requests) == 0  # write only queues
    nt.flush()
    want = [f'alert-{i}' for i, c in enumerate(ALERTS['confidence']) if c >= 0.7]
    assert [r['json']['id'] for r in srv.requests] == want and nt.filtered == len(ALERTS) - len(want)
    sig = np.array([('IBM', 'A', 1), ('IBM', 'C', 2), ('BAC', 'B', 3)], [('symbol', 'U12'), ('tier', 'U1'), ('ts', 'i8')])
    nt2 = Notifier([WebhookOutput('ops', srv.url, delivery=Delivery(burst=100))], min_tier='B', kinds=('signal',))
    nt2.write('signal', sig)
    nt2.flush()
    assert [r['json']['tier'] for r in srv.requests[len(want):]] == ['A', 'B']


aiosmtpd = pytest.importorskip('aiosmtpd', reason='pip install aiosmtpd (dev requirement)')


class SMTPRecorder:
    "aiosmtpd handler: refuses the first `busy` messages with 451 (try again later), then accepts."
    def __init__(self, busy=0): self.busy, self.messages, self.tries = busy, [], 0

    async def handle_DATA(self, server, session, envelope):
        self.tries += 1
        if self.busy:
            self.busy -= 1
            return '451 4.3.0 busy, try again later'
        self.messages.append(envelope)
        return '250 OK'


@pytest.fixture
def smtp():
    from aiosmtpd.controller import Controller
    ctrls = []
    def make(busy=0):
        h = SMTPRecorder(busy)
        c = Controller(h, hostname='127.0.0.1', port=free_port())
        c.start()
        ctrls.append(c)
        return h, c.port
    yield make
    for c in ctrls: c.stop()


def test_email_via_smtp_retries_a_busy_server_then_delivers(smtp):
    handler, port = smtp(busy=2)
    waits = []
    out = EmailOutput('oncall', SmtpServer('127.0.0.1', port), sender='velox@desk.test', to=['ops@desk.test', 'risk@desk.test'],
                      delivery=Delivery(timeout=5), sleep=waits.append)
    n = Notification.worker_failure('detect-2', ConnectionRefusedError('redis down'))
    out.send(n)
    assert handler.tries == 3 and len(waits) == 2 and len(handler.messages) == 1
    env = handler.messages[0]
    assert env.mail_from == 'velox@desk.test' and env.rcpt_tos == ['ops@desk.test', 'risk@desk.test']
    msg = email.message_from_bytes(env.content)
    assert msg['Subject'] == '[velox worker] worker detect-2 failed'
    assert 'ConnectionRefusedError: redis down' in msg.get_payload()


def test_email_refused_permanently_is_not_retried(smtp):
    class Refuse(SMTPRecorder):
        async def handle_DATA(self, server, session, envelope):
            self.tries += 1
            return '554 5.7.1 rejected'
    from aiosmtpd.controller import Controller
    h = Refuse()
    c = Controller(h, hostname='127.0.0.1', port=free_port())
    c.start()
    try:
        with pytest.raises(DeliveryError, match='SMTP 554'):
            EmailOutput('oncall', SmtpServer('127.0.0.1', c.port), to='ops@desk.test', sleep=lambda s: None).send(Notification('test', 'x'))
        assert h.tries == 1
    finally:
        c.stop()


def test_velox_notify_test_command_sends_through_every_configured_output(http, smtp, tmp_path, monkeypatch, capsys):
    from velox.face.cli import main
    hook, tg = http(), http()
    handler, port = smtp()
    monkeypatch.setenv('VELOX_TG_TOKEN', TOKEN)
    cfg = tmp_path / 'notify.yaml'
    cfg.write_text(f"""notify:
  min_confidence: 0.7
  outputs:
    ops-hook: {{type: webhook, url: "{hook.url}/velox"}}
    desk-chat: {{type: telegram, chat_id: "-100", base_url: "{tg.url}", token_env: VELOX_TG_TOKEN}}
    oncall: {{type: email, host: 127.0.0.1, port: {port}, sender: velox@desk.test, to: [ops@desk.test]}}
""")
    main(['notify', 'test', '--config', str(cfg), '--text', 'hello operators'])
    out = capsys.readouterr().out
    assert [line.split() for line in out.strip().splitlines()] == [['ops-hook', 'sent'], ['desk-chat', 'sent'], ['oncall', 'sent']]
    assert hook.requests[0]['json']['title'] == 'hello operators' and hook.requests[0]['json']['kind'] == 'test'
    assert tg.requests[0]['json']['text'].startswith('[TEST] hello operators')
    assert email.message_from_bytes(handler.messages[0].content)['Subject'] == '[velox test] hello operators'
    assert TOKEN not in out


def test_velox_notify_test_fails_when_an_output_does_not_take_it(http, tmp_path, capsys):
    from velox.face.cli import main
    srv = http([500] * 20)
    cfg = tmp_path / 'notify.yaml'
    cfg.write_text(f'outputs:\n  ops: {{type: webhook, url: "{srv.url}", attempts: 2, backoff_base: 0.01}}\n')
    with pytest.raises(SystemExit) as e: main(['notify', 'test', '--config', str(cfg)])
    assert e.value.code == 2 and 'not delivered by: ops' in capsys.readouterr().err
    with pytest.raises(VeloxError, match='secrets come from the environment'):
        load_notifier({'outputs': {'x': {'type': 'email', 'host': 'h', 'to': 'a@b', 'password': 'p'}}})

"""`velox dash`: this machine only by default; served further it needs a token or a basic-auth password, and a request
without one gets 401 — the page, and the websocket the page's document lives on."""
import asyncio, base64, os, socket, subprocess, sys, time, urllib.error, urllib.request
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
TOKEN, PASSWORD = 'tok-planted-9c2e41', 'pw-planted-5a7b03'


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _get(url, headers=None):
    "(status, body, headers) of a GET, following redirects."
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=60) as r: return r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e: return e.code, e.read().decode(), e.headers


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    "A `velox dash` with a token (from the environment) and basic auth for alice, in a subprocess; (url, its output file)."
    tmp = tmp_path_factory.mktemp('dash')
    port, log = _free_port(), tmp / 'dash.log'
    env = {**{k: v for k, v in os.environ.items() if not k.startswith('VELOX_')}, 'VELOX_DASH_TOKEN': TOKEN, 'VELOX_DASH_PASSWORD': PASSWORD}
    with open(log, 'w') as f:
        p = subprocess.Popen([sys.executable, '-m', 'velox.face.cli', 'dash', '--data-dir', str(ROOT / 'replay' / 'data'),
                              '--out-dir', str(tmp), '--port', str(port), '--basic-auth', 'alice'],
                             stdout=f, stderr=subprocess.STDOUT, cwd=tmp, env=env)
    url, deadline = f'http://127.0.0.1:{port}', time.monotonic() + 120
    while True:  # wait for it to listen (not a timed assertion: the deadline only stops a hung start)
        try: socket.create_connection(('127.0.0.1', port), timeout=1).close(); break
        except OSError:
            if p.poll() is not None or time.monotonic() > deadline:
                p.kill(); raise AssertionError(f"velox dash did not come up: {log.read_text()[-2000:]}") from None
            time.sleep(0.2)
    yield url, log
    p.terminate()
    try: p.wait(10)
    except subprocess.TimeoutExpired: p.kill()


def test_dash_listens_on_this_machine_only_by_default():
    from velox.face.cli import parser
    assert parser('dash').parse_args(['dash']).host == '127.0.0.1'


def test_dash_on_another_address_without_a_token_or_password_is_refused_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith('VELOX_')}
    r = subprocess.run([sys.executable, '-m', 'velox.face.cli', 'dash', '--host', '0.0.0.0', '--out-dir', str(tmp_path),
                        '--data-dir', str(ROOT / 'replay' / 'data')], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and 'Traceback' not in r.stderr and r.stderr.count('\n') == 1, r.stderr
    assert '--host 0.0.0.0: anyone who can reach this machine could open the desk' in r.stderr
    assert '--token TOKEN' in r.stderr and '--basic-auth USER' in r.stderr and '--no-auth' in r.stderr


def test_a_request_without_the_token_or_password_gets_401(served):
    url, _ = served
    for headers, q in (({}, ''), ({}, '?token=tok-wrong-000000'), ({'Authorization': 'Bearer tok-wrong-000000'}, ''),
                       ({'Authorization': 'Basic ' + base64.b64encode(b'alice:wrong').decode()}, ''),
                       ({'Authorization': 'Basic ' + base64.b64encode(f'bob:{PASSWORD}'.encode()).decode()}, '')):
        status, body, h = _get(f'{url}/{q}', headers)
        assert status == 401 and 'Bokeh' not in body, (headers, q, status)
        assert h.get('WWW-Authenticate') == 'Basic realm="velox desk", charset="UTF-8"'  # the browser asks for the password


def test_the_token_or_the_password_opens_the_desk(served):
    url, _ = served
    for headers, q in (({}, f'?token={TOKEN}'), ({'Authorization': f'Bearer {TOKEN}'}, ''),
                       ({'Authorization': 'Basic ' + base64.b64encode(f'alice:{PASSWORD}'.encode()).decode()}, '')):
        status, body, h = _get(f'{url}/{q}', headers)
        assert status == 200 and 'velox desk' in body and 'Bokeh' in body, (headers, q, status)
        assert 'velox_desk=' in h.get('Set-Cookie', '') and 'HttpOnly' in h.get('Set-Cookie', '')


def _ws_first_message(url, cookie=None):
    "The first message a Bokeh websocket gets (its ACK once the session opens), or None if the server closes it."
    from bokeh.util.token import generate_jwt_token, generate_session_id
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect
    async def go():
        headers = {'Origin': url, **({'Cookie': f'velox_desk={cookie}'} if cookie else {})}
        c = await websocket_connect(HTTPRequest(url.replace('http', 'ws') + '/ws', headers=headers),
                                    subprotocols=['bokeh', generate_jwt_token(generate_session_id(), signed=False)])
        return await asyncio.wait_for(c.read_message(), 60)
    return asyncio.run(go())


def test_the_websocket_opens_a_session_only_with_the_cookie_a_good_request_earned(served):
    url, _ = served
    assert _ws_first_message(url) is None  # no cookie: closed before the session opens
    assert _ws_first_message(url, cookie='0' * 64) is None
    _, _, h = _get(f'{url}/?token={TOKEN}')
    cookie = h.get('Set-Cookie').split('velox_desk=')[1].split(';')[0]
    assert '"msgtype": "ACK"' in _ws_first_message(url, cookie)


def test_the_served_desk_never_prints_its_secrets(served):
    url, log = served
    _get(f'{url}/?token={TOKEN}'); _get(f'{url}/?token=tok-wrong-000000')
    text = log.read_text()
    assert f'velox desk at {url}/ (open it with ?token=<your token> or sign in as alice)' in text
    assert TOKEN not in text and PASSWORD not in text

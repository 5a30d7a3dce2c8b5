"Shared by the browser tests: Debian's chromium, its headless flags, where screenshots go, a JupyterLab server."
import contextlib, json, os, secrets, socket, subprocess, sys, time, urllib.request
from pathlib import Path
from velox.face.desk_ops import CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get('VELOX_CHROMIUM', '/usr/bin/chromium')
ARGS = list(CHROMIUM_ARGS)
ARTIFACTS = ROOT / '.velox' / 'artifacts' / 'dash'


def _children(pid):
    "Process ids whose parent is `pid` (the server's kernels)."
    out = []
    for d in Path('/proc').iterdir():
        if not d.name.isdigit(): continue
        try: stat = (d / 'stat').read_text()
        except OSError: continue
        if int(stat.rsplit(')', 1)[1].split()[1]) == pid: out.append(int(d.name))
    return out


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@contextlib.contextmanager
def jupyter_lab(root_dir:Path, tmp_path:Path, extra_args=()):
    """A JupyterLab server (from this venv) on a free port serving `root_dir`, with its config, runtime, data and
    settings under `tmp_path`: yields (base url, token, log path); stops the server and its kernels."""
    # lab settings of this server only: render every cell (JupyterLab 4 otherwise renders only the cells in view, and
    # the widgets scrolled past would leave the page), and no news pop-up over the notebook
    settings = tmp_path / 'settings'
    for ext, value in (('notebook-extension/tracker', {'windowingMode': 'none'}),
                       ('apputils-extension/notification', {'fetchNews': 'false'})):
        f = settings / '@jupyterlab' / f'{ext}.jupyterlab-settings'
        f.parent.mkdir(parents=True, exist_ok=True); f.write_text(json.dumps(value))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, 'JUPYTER_CONFIG_DIR': str(tmp_path / 'config'), 'JUPYTER_RUNTIME_DIR': str(tmp_path / 'runtime'),
           'JUPYTERLAB_WORKSPACES_DIR': str(tmp_path / 'workspaces'), 'JUPYTERLAB_SETTINGS_DIR': str(settings),
           'VELOX_LOG_LEVEL': 'WARNING'}
    log = open(tmp_path / 'lab.log', 'w')
    p = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', f'--port={port}', '--ip=127.0.0.1',
                          f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={root_dir}', '--ServerApp.open_browser=False',
                          '--LabApp.expose_app_in_browser=True', '--LabApp.news_url=', '--LabApp.check_for_updates_class='
                          'jupyterlab.NeverCheckForUpdate', *(['--allow-root'] if os.geteuid() == 0 else []), *extra_args],
                         stdout=log, stderr=subprocess.STDOUT, cwd=root_dir.parent, env=env)
    base, deadline = f'http://127.0.0.1:{port}', time.monotonic() + 90
    try:
        while True:
            try: urllib.request.urlopen(f'{base}/api/status?token={token}', timeout=5).read(); break
            except OSError:
                if p.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"jupyter lab did not come up: {(tmp_path / 'lab.log').read_text()[-3000:]}") from None
                time.sleep(0.3)
        yield base, token, tmp_path / 'lab.log'
    finally:
        kernels = _children(p.pid)  # started in sessions of their own: SIGTERM to the server shuts them down, check it did
        p.terminate()
        try: p.wait(20)
        except subprocess.TimeoutExpired: p.kill(); p.wait(5)
        for k in kernels:
            try: os.kill(k, 9)
            except ProcessLookupError: pass
        log.close()

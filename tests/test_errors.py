"""One clear line for every user mistake and every service that does not answer, through the real `velox` command:
exit status 2, no traceback, the message naming the file, line, key or option and what was expected, a bounded
wait for services, and no password anywhere. A bug is different: exit status 1, one line, the traceback in the log."""
import os, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / 'replay' / 'data'
PLANTED = 's3cr3t-planted-7d1f'  # a password that must never appear in any output or file
TIMEOUT_S = 1  # VELOX_CONNECT_TIMEOUT_S in the service runs
# Generous: start-up (imports, the embedded store) plus a few times the configured wait, yet well under the 30 s
# kafka-python waits by default, so a client that ignored the setting would fail this bound.
BOUND_S = 15 + 4 * TIMEOUT_S


def _velox(*args, cwd, env=None):
    "Run the velox CLI in a subprocess with a clean VELOX_* environment; (result, seconds it took)."
    base = {k: v for k, v in os.environ.items() if not k.startswith('VELOX_')}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, '-m', 'velox.face.cli', *args], cwd=cwd, capture_output=True, text=True,
                       env={**base, **(env or {})}, timeout=300)
    return r, time.monotonic() - t0


def _files_with(root: Path, needle: str) -> list:
    return [p for p in root.rglob('*') if p.is_file() and needle.encode() in p.read_bytes()]


def _one_line(r, *needles, code=2):
    "Exit status `code`, no traceback, and one line on stderr holding every needle."
    assert r.returncode == code, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert 'Traceback' not in r.stderr + r.stdout, r.stderr
    assert r.stderr.startswith('velox: ') and r.stderr.count('\n') == 1, r.stderr
    for n in needles: assert n in r.stderr, (n, r.stderr)


RUN = ('run', '--data-dir', str(DATA), '--symbols', 'IBM', '--no-progress', '--no-report')

SERVICES = [  # (flag, DSN, what the line must say)
    ('--bus', 'kafka://127.0.0.1:1', ['kafka://127.0.0.1:1: no broker answered within 1 s',
                                     'check the address, or start one: velox services up']),
    ('--hot', 'redis://127.0.0.1:1/0', ['redis://127.0.0.1:1/0: no Redis server answered within 1 s', 'Connection refused',
                                       'velox services up']),
    ('--store', 'http://default@127.0.0.1:1/db', ['http://default@127.0.0.1:1/db: no ClickHouse server answered within 1 s',
                                                 '(Connection refused)', 'check the address and port']),
]


@pytest.mark.parametrize('flag,dsn,needles', SERVICES, ids=[s[0] for s in SERVICES])
def test_a_service_that_does_not_answer_is_one_line_within_the_configured_wait(tmp_path, flag, dsn, needles):
    r, took = _velox(*RUN, '--out-dir', str(tmp_path / 'out'), flag, dsn, cwd=tmp_path, env={'VELOX_CONNECT_TIMEOUT_S': str(TIMEOUT_S)})
    _one_line(r, *needles)
    assert took < BOUND_S, f"{flag} {dsn}: {took:.1f} s with connect_timeout_s={TIMEOUT_S}"


def test_the_connect_timeout_flag_is_the_wait_the_line_reports(tmp_path):
    r, _ = _velox(*RUN, '--out-dir', str(tmp_path / 'out'), '--bus', 'kafka://127.0.0.1:1', '--connect-timeout', '0.5',
                  cwd=tmp_path)
    _one_line(r, 'kafka://127.0.0.1:1: no broker answered within 0.5 s')


SPEEDS = [('1000', "argument --speed: '1000': expected 0 (as fast as possible) or 0.1 to 100 (times real time)"),
          ('abc', "argument --speed: 'abc': expected 0 (as fast as possible) or 0.1 to 100 (times real time)"),
          ('0.01', "argument --speed: '0.01': expected 0")]


@pytest.mark.parametrize('speed,needle', SPEEDS, ids=[s[0] for s in SPEEDS])
def test_a_speed_out_of_range_or_not_a_number_is_one_line_naming_the_option(tmp_path, speed, needle):
    r, _ = _velox(*RUN, '--out-dir', str(tmp_path / 'out'), '--speed', speed, cwd=tmp_path)
    _one_line(r, needle, '(see velox run --help)')
    assert not (tmp_path / 'out').exists()  # nothing was written


CONFIGS = [  # (id, bytes of the config file, what the line must say besides the file's path)
    ('log_level', b'bus: memory://\nlog_level: verbose\n',
     ["line 2: config key 'log_level' = 'verbose': expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL"]),
    ('not_utf8', b'# velox\ngroup: caf\xe9\n', ['line 2: not UTF-8 text (byte 0xe9); save the config file as UTF-8']),
    ('out_dir_list', b'out_dir: [a, b]\n', ["line 1: config key 'out_dir' = ['a', 'b']: expected a folder path, not a list"]),
    ('unknown_key', b'bus: memory://\ncolour: red\n', ["line 2: unknown key 'colour'; expected one of ["]),
    ('timeout_text', b'connect_timeout_s: soon\n', ["line 1: config key 'connect_timeout_s' = 'soon': expected a number of seconds"]),
    ('not_yaml', b'bus: memory://\nhot: [unclosed\n', ['not valid YAML/JSON']),
    ('secret_key', b'store_password: ' + PLANTED.encode() + b'\n', ["line 1: key 'store_password': secrets come from the environment only"]),
]


@pytest.mark.parametrize('name,text,needles', CONFIGS, ids=[c[0] for c in CONFIGS])
def test_a_bad_config_file_is_one_line_naming_the_file_line_key_and_what_was_expected(tmp_path, name, text, needles):
    cfg = tmp_path / 'velox.yaml'
    cfg.write_bytes(text)
    r, _ = _velox(*RUN, '--config', str(cfg), cwd=tmp_path)  # no --out-dir: the file's own out_dir applies
    _one_line(r, str(cfg), *needles)
    assert PLANTED not in r.stderr + r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ['velox.yaml']  # no `['a', 'b']` folder, no .velox: nothing written


def test_a_missing_config_file_is_one_line(tmp_path):
    r, _ = _velox(*RUN, '--config', str(tmp_path / 'nope.yaml'), cwd=tmp_path)
    _one_line(r, f"{tmp_path / 'nope.yaml'}: config file not found")


def test_a_bad_value_from_the_environment_names_the_variable(tmp_path):
    r, _ = _velox(*RUN, '--out-dir', str(tmp_path / 'out'), cwd=tmp_path, env={'VELOX_LOG_LEVEL': 'verbose'})
    _one_line(r, "$VELOX_LOG_LEVEL: config key 'log_level' = 'verbose': expected one of DEBUG")


PASSWORDS = [  # a password in a DSN is refused before anything connects, and never printed
    (('--bus', f'kafka://alice:{PLANTED}@127.0.0.1:9092'), ["config key 'bus' = 'kafka://alice:***@127.0.0.1:9092'",
                                                           'set $VELOX_KAFKA_PASSWORD (with kafka_sasl_username and kafka_sasl_mechanism)']),
    (('--hot', f'redis://:{PLANTED}@127.0.0.1:6379/0'), ["config key 'hot' = 'redis://:***@127.0.0.1:6379/0'", 'set $VELOX_REDIS_PASSWORD']),
    (('--hot', f'redis://velox:{PLANTED}@127.0.0.1:6379/0'), ["'redis://velox:***@127.0.0.1:6379/0'", 'set $VELOX_REDIS_PASSWORD']),
    (('--store', f'http://default:{PLANTED}@127.0.0.1:8123/db'), ["config key 'store' = 'http://default:***@127.0.0.1:8123/db'",
                                                                  'set $VELOX_STORE_PASSWORD']),
    (('--bus', f'kafka://127.0.0.1:9092?sasl_plain_password={PLANTED}'), ['sasl_plain_password=***', 'VELOX_KAFKA_PASSWORD']),
]


@pytest.mark.parametrize('args,needles', PASSWORDS, ids=['kafka', 'redis', 'redis_user', 'store', 'kafka_query'])
def test_a_password_in_a_dsn_is_refused_before_connecting_and_never_shown(tmp_path, args, needles):
    r, took = _velox(*RUN, '--out-dir', str(tmp_path / 'out'), *args, cwd=tmp_path)
    _one_line(r, 'a password does not belong in a DSN', *needles)
    assert PLANTED not in r.stderr + r.stdout
    assert not (tmp_path / 'out').exists() and _files_with(tmp_path, PLANTED) == []


def test_a_password_in_a_worker_notebook_parameter_is_refused_before_papermill_records_it(tmp_path):
    "papermill saves parameters into the notebook it runs: a DSN with a password never gets that far."
    out = tmp_path / 'detect.ipynb'
    r, _ = _velox('worker', 'detect', '--notebook', str(out), '--out-dir', str(tmp_path / 'o'), '--max-runtime', '1',
                  '--checkpoints', f'redis://:{PLANTED}@127.0.0.1:6379/0', cwd=tmp_path)
    _one_line(r, "worker detect: parameter 'checkpoints' = 'redis://:***@127.0.0.1:6379/0'", 'set $VELOX_REDIS_PASSWORD')
    assert not out.exists() and _files_with(tmp_path, PLANTED) == [] and PLANTED not in r.stderr + r.stdout


@pytest.mark.slow
def test_secrets_from_the_environment_reach_the_worker_but_no_notebook_log_or_message(tmp_path):
    "The worker reads the store password from the environment and connects with it; papermill records none of it."
    out = tmp_path / 'detect.ipynb'
    env = {'VELOX_STORE_PASSWORD': PLANTED, 'VELOX_KAFKA_PASSWORD': PLANTED + 'k', 'VELOX_REDIS_PASSWORD': PLANTED + 'r'}
    r, _ = _velox('worker', 'detect', '--notebook', str(out), '--out-dir', str(tmp_path / 'o'), '--max-runtime', '1',
                  '--sink-store', '--store', 'http://default@127.0.0.1:1/db', cwd=tmp_path, env=env)
    # the store is not there: the notebook stopped on that, and the command says so in one line (exit 2, not a bug)
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
    assert f'velox: error: worker notebook {out}: ServiceError: http://default@127.0.0.1:1/db: no ClickHouse server' in r.stderr
    assert out.exists() and 'ServiceError' in out.read_text()  # the executed notebook, with the failing cell
    assert PLANTED not in r.stderr + r.stdout and _files_with(tmp_path, PLANTED) == []


def test_a_bug_is_one_line_exit_1_and_its_traceback_scrubbed_in_the_error_log(tmp_path, monkeypatch, capsys):
    "Not a user mistake: exit status 1, one line saying so, the traceback in <out_dir>/velox-error.log, no secret in either."
    import velox.runtime.job as job
    from velox.face.cli import main
    monkeypatch.setenv('VELOX_STORE_PASSWORD', PLANTED)  # a secret velox was given...

    def broken_run(*a, **kw): raise RuntimeError(f'planted bug, login {PLANTED} to redis://u:{PLANTED}@h:6379/0')  # ...leaking into a bug
    monkeypatch.setattr(job, 'run', broken_run)
    with pytest.raises(SystemExit) as e: main(['run', '--out-dir', str(tmp_path), '--no-progress', '--no-report'])
    assert e.value.code == 1
    log = tmp_path / 'velox-error.log'
    err = capsys.readouterr().err
    assert err == (f"velox: internal error: RuntimeError: planted bug, login *** to redis://u:***@h:6379/0 "
                   f"(a bug; the traceback is in {log})\n"), err
    text = log.read_text()
    assert 'Traceback (most recent call last)' in text and 'in broken_run' in text and 'in cmd_run' in text, text
    assert f"velox run --out-dir {tmp_path} --no-progress --no-report" in text  # the command line that failed
    assert PLANTED not in text + err

"Session fixtures that start real local services with velox's own code (velox.infra.services)."
import os
import pytest
from velox.infra.bus import MemoryBus
from velox.core import VeloxError

# A password planted in the environment of the whole session (and so of every process it starts): velox reads secrets
# from the environment, and none may reach an output, log, status file, report or executed notebook.
# tests/test_zz_no_secret_anywhere.py searches every file the session wrote for it.
PLANTED_SECRET = 'vx-planted-session-9f3c2e'
for _var in ('VELOX_STORE_PASSWORD', 'VELOX_KAFKA_PASSWORD', 'VELOX_DASH_PASSWORD', 'VELOX_KAFKA_SSL_PASSWORD'):
    os.environ.setdefault(_var, PLANTED_SECRET)

# Kafka consumer-group settings for tests: the local broker takes about half of session_timeout_ms to
# complete a group join, so keep it short.
KAFKA_TEST_KW = dict(session_timeout_ms=6000, heartbeat_interval_ms=1000)


def _start(start, module):
    if os.environ.get('CI'): __import__(module)
    pytest.importorskip(module, reason=f"{module} client not installed: pip install 'velox[services]'")
    try: return start()
    except VeloxError as e:
        # a developer without the programs gets a skip; CI (CI=true) must have them and fails instead
        if 'not installed' in str(e) and not os.environ.get('CI'): pytest.skip(str(e))
        raise


@pytest.fixture(scope='session')
def kafka_bootstrap():
    "'127.0.0.1:PORT' of a tansu broker (in-memory storage) running for the whole test session."
    from velox.infra.services import start_broker
    svc = _start(start_broker, 'kafka')
    yield svc.dsn.split('://', 1)[1]
    svc.stop()


@pytest.fixture(scope='session')
def redis_url():
    "'redis://127.0.0.1:PORT/0' of a redis-server running for the whole test session."
    from velox.infra.services import start_redis
    svc = _start(start_redis, 'redis')
    yield svc.dsn
    svc.stop()


@pytest.fixture
def kafka_bus(kafka_bootstrap):
    "A KafkaBus on the session broker with the short test group timeouts; closed after the test."
    from velox.infra.kafka_bus import KafkaBus
    bus = KafkaBus(kafka_bootstrap, **KAFKA_TEST_KW)
    yield bus
    bus.close()


@pytest.fixture(params=['memory', pytest.param('kafka', marks=pytest.mark.kafka)])
def bus(request):
    "The same test on the embedded MemoryBus and on the session's real broker."
    if request.param == 'memory':
        yield MemoryBus()
    else:
        yield request.getfixturevalue('kafka_bus')

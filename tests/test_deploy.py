"""Static checks of the deployment recipes in deploy/ (no Docker engine or cluster here): the compose file, the
Kubernetes manifests, the systemd units and the example fleet all parse and say what they must; every worker
parameter they pass is one the stage's notebook takes."""
import configparser, re, shlex, shutil, subprocess
from pathlib import Path
import pytest
import yaml
from velox.launcher import FleetSpec, notebook_parameters, parse_schedule
from velox.pipeline import STAGES

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / 'deploy'


def worker_params(args):
    "Names given with `-p NAME VALUE` in a worker command line."
    return [args[i + 1] for i, a in enumerate(args) if a == '-p']


def check_worker_args(stage, args):
    takes = notebook_parameters(ROOT / 'nbs' / 'workers' / f'{stage}.ipynb')
    unknown = [p for p in worker_params(args) if p not in takes]
    assert not unknown, f"{stage}: parameters {unknown} are not in nbs/workers/{stage}.ipynb"


@pytest.fixture(scope='module')
def compose():
    return yaml.safe_load((DEPLOY / 'docker-compose.yml').read_text())


def test_compose_runs_three_kraft_brokers_with_replication_3_and_min_isr_2(compose):
    kafka = {n: s for n, s in compose['services'].items() if n.startswith('kafka')}
    assert len(kafka) == 3
    voters = {s['environment']['KAFKA_CONTROLLER_QUORUM_VOTERS'] for s in kafka.values()}
    assert voters == {'1@kafka1:9093,2@kafka2:9093,3@kafka3:9093'}
    assert len({s['environment']['CLUSTER_ID'] for s in kafka.values()}) == 1
    assert sorted(int(s['environment']['KAFKA_NODE_ID']) for s in kafka.values()) == [1, 2, 3]
    for name, s in kafka.items():
        env = s['environment']
        assert 'controller' in env['KAFKA_PROCESS_ROLES'] and 'broker' in env['KAFKA_PROCESS_ROLES']  # KRaft, no ZooKeeper
        assert int(env['KAFKA_DEFAULT_REPLICATION_FACTOR']) == 3 and int(env['KAFKA_MIN_INSYNC_REPLICAS']) == 2
        assert int(env['KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR']) == 3
        assert int(env['KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR']) == 3 and int(env['KAFKA_TRANSACTION_STATE_LOG_MIN_ISR']) == 2
        assert env['KAFKA_ADVERTISED_LISTENERS'] == f'PLAINTEXT://{name}:9092'
        assert s['healthcheck'] and s['volumes']
    assert not any('zookeeper' in n for n in compose['services'])


def test_compose_has_redis_clickhouse_and_a_worker_per_stage_with_valid_parameters(compose):
    svc = compose['services']
    assert {'redis', 'clickhouse'} <= set(svc)
    workers = {s['environment']['VELOX_STAGE']: s for n, s in svc.items() if n.endswith('-worker')}
    assert set(workers) == {'detect', 'features', 'persist'} and set(workers) <= set(STAGES)
    for stage, s in workers.items():
        assert s['command'][0] == 'deploy/worker.sh' and s['stop_grace_period']
        check_worker_args(stage, s['command'][1:])
        bus = s['command'][s['command'].index('bus') + 1]
        assert re.findall(r'kafka\d:9092', bus) == ['kafka1:9092', 'kafka2:9092', 'kafka3:9092'] and 'replication_factor=3' in bus
        assert {'kafka1', 'kafka2', 'kafka3', 'redis', 'clickhouse'} <= set(s['depends_on'])
    assert 'store' in worker_params(workers['persist']['command'])
    assert 'store' not in worker_params(workers['detect']['command'])  # one writer: the persist stage


def test_compose_config_validates_when_docker_compose_is_available():
    if not shutil.which('docker') or subprocess.run(['docker', 'compose', 'version'], capture_output=True).returncode:
        pytest.skip('docker compose is not installed here (structural checks above)')
    r = subprocess.run(['docker', 'compose', '-f', str(DEPLOY / 'docker-compose.yml'), 'config', '-q'], capture_output=True, text=True,
                       env={'VELOX_STORE_PASSWORD': 'x', 'PATH': '/usr/bin:/bin:/usr/local/bin'})
    assert r.returncode == 0, r.stderr


def k8s_docs():
    return [d for p in sorted((DEPLOY / 'k8s').glob('*.yaml')) for d in yaml.safe_load_all(p.read_text()) if d]


def test_every_k8s_deployment_probes_health_and_ready_and_references_existing_config():
    docs = k8s_docs()
    by_kind = {}
    for d in docs:
        assert {'apiVersion', 'kind', 'metadata'} <= set(d), d
        by_kind.setdefault(d['kind'], {})[d['metadata']['name']] = d
    cms, secrets = by_kind['ConfigMap'], by_kind['Secret']
    deps = by_kind['Deployment']
    assert {d['spec']['template']['spec']['containers'][0]['env'][0]['value'] for d in deps.values()} == {'detect', 'features', 'persist'}
    ns = {d['metadata'].get('namespace') for d in docs if d['kind'] != 'Namespace'}
    assert ns == set(by_kind['Namespace'])
    for name, d in deps.items():
        spec = d['spec']
        assert spec['selector']['matchLabels'].items() <= spec['template']['metadata']['labels'].items(), name
        pod = spec['template']['spec']
        c = pod['containers'][0]
        port = c['ports'][0]['containerPort']
        assert c['livenessProbe']['httpGet'] == {'path': '/health', 'port': port}
        assert c['readinessProbe']['httpGet'] == {'path': '/ready', 'port': port}
        args = c['args']
        assert args[args.index('metrics_port') + 1] == str(port)  # the worker serves the probes on that port
        stage = next(e['value'] for e in c['env'] if e['name'] == 'VELOX_STAGE')
        check_worker_args(stage, args)
        for ref in c.get('envFrom', []):
            if 'configMapRef' in ref: assert ref['configMapRef']['name'] in cms
            if 'secretRef' in ref: assert ref['secretRef']['name'] in secrets
        env_names = set()
        for ref in c.get('envFrom', []):
            src = cms.get(ref.get('configMapRef', {}).get('name')) or secrets.get(ref.get('secretRef', {}).get('name'))
            env_names |= set(src.get('data') or {}) | set(src.get('stringData') or {})
        env_names |= {e['name'] for e in c['env']}
        for var in re.findall(r'\$\((\w+)\)', ' '.join(args)): assert var in env_names, (name, var)
        assert 'VELOX_STORE_PASSWORD' in env_names
        mounts = {m['name'] for m in c['volumeMounts']}
        for v in pod['volumes']:
            assert v['name'] in mounts
            if 'configMap' in v:
                cm = cms[v['configMap']['name']]
                assert all(i['key'] in cm['data'] for i in v['configMap'].get('items', []))
        for path in [args[i + 1] for i, a in enumerate(args) if a == 'params']:  # parameter files come from the ConfigMap
            assert any(path.startswith(m['mountPath']) for m in c['volumeMounts'])
        assert pod['terminationGracePeriodSeconds'] >= 60


def systemd_units():
    units = {}
    for p in sorted((DEPLOY / 'systemd').glob('*.service')):
        cp = configparser.ConfigParser(strict=False, interpolation=None)
        cp.optionxform = str
        cp.read_string(p.read_text())
        units[p.name] = cp
    return units


def test_systemd_units_parse_and_stop_workers_through_their_stop_files():
    units = systemd_units()
    assert {'velox-fleet.service', 'velox-worker@.service'} <= set(units)
    for name, u in units.items():
        assert {'Unit', 'Service', 'Install'} <= set(u.sections()), name
        s = u['Service']
        assert s.get('ExecStart') and s.get('Restart') in ('on-failure', 'always'), name
        assert s.get('KillMode') == 'mixed', f'{name}: SIGTERM must reach only the supervisor / worker.sh, not papermill'
        exe = shlex.split(s['ExecStart'])[0]
        assert exe.startswith('/opt/velox/'), name
    fleet = shlex.split(units['velox-fleet.service']['Service']['ExecStart'])
    assert fleet[1:3] == ['fleet', 'run'] and '--fleet' in fleet
    worker = shlex.split(units['velox-worker@.service']['Service']['ExecStart'])
    assert worker[0].endswith('deploy/worker.sh')
    for stage in ('detect', 'features', 'persist'): check_worker_args(stage, worker[1:])


def test_the_example_fleet_and_schedule_load_and_name_real_notebook_parameters():
    spec = FleetSpec.from_dict(yaml.safe_load((DEPLOY / 'fleet.yaml').read_text()), root=DEPLOY, source='deploy/fleet.yaml')
    assert set(spec.stages) <= set(STAGES)
    for stage, sr in spec.stages.items():
        takes = notebook_parameters(spec.notebook(stage))
        assert set(sr.params) <= set(takes), stage
    assert [j.name for j in parse_schedule(spec.schedule)] == ['baseline']
    assert (DEPLOY / 'worker.sh').stat().st_mode & 0o111 or (DEPLOY / 'Dockerfile').read_text().count('chmod +x deploy/worker.sh')

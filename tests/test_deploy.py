"""Static checks of the deployment recipes in deploy/ (no Docker engine or cluster here): the compose file, the
Kubernetes manifests, the systemd units and the example fleet all parse, run every registered stage (execution as
exactly one member) and say what they must; every worker parameter they pass is one the stage's notebook takes.
deploy/worker.sh itself runs for real, with a stand-in `papermill` that records its command line."""
import configparser, re, shlex, shutil, signal, subprocess, time
from pathlib import Path
import pytest
import yaml
from velox.runtime.fleet import FleetSpec, check_members, notebook_parameters, parse_schedule
from velox.runtime.stages import STAGES, _stage_params

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / 'deploy'
BUS_STYLE = 'kafka://kafka1:9092,kafka2:9092,kafka3:9092?replication_factor=3'


def notebook_of(stage):
    "The worker notebook of `stage`, by the launcher's rule (predict.lr: nbs/workers/predict.ipynb)."
    return FleetSpec(root=str(ROOT)).notebook(stage)


def worker_params(args):
    "Names given with `-p NAME VALUE` in a worker command line."
    return [args[i + 1] for i, a in enumerate(args) if a == '-p']


def param_value(args, name):
    "The value of the last `-p NAME VALUE` (papermill: the last one wins)."
    vals = [args[i + 2] for i, a in enumerate(args) if a == '-p' and args[i + 1] == name]
    return vals[-1] if vals else None


# -- deploy/worker.sh, for real: a stand-in papermill records the command line it was given -----------------------
FAKE_PAPERMILL = '''#!/bin/sh
printf '%s\\0' "$@" > "$VELOX_FAKE_ARGV"
if [ -n "${VELOX_FAKE_WAIT:-}" ]; then   # behave like a worker: run until the stop file appears
  stop=; prev=
  for a in "$@"; do [ "$prev" = stop_file ] && stop=$a; prev=$a; done
  touch "$VELOX_FAKE_WAIT"
  i=0; while [ ! -e "$stop" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
  [ -e "$stop" ] || exit 3
fi
exit 0
'''


@pytest.fixture(scope='module')
def fakebin(tmp_path_factory):
    d = tmp_path_factory.mktemp('fakebin')
    (d / 'papermill').write_text(FAKE_PAPERMILL)
    (d / 'papermill').chmod(0o755)
    return d


def worker_env(fakebin, out, stage, **kw):
    return {'PATH': f'{fakebin}:/usr/bin:/bin', 'VELOX_STAGE': stage, 'VELOX_WORKER_OUT': str(out), 'VELOX_WORKER_NAME': 'w1',
            'VELOX_FAKE_ARGV': str(out / 'argv'), **kw}


def papermill_argv(fakebin, tmp_path, stage, args):
    "What deploy/worker.sh hands papermill for VELOX_STAGE=stage and `args`."
    out = tmp_path / re.sub(r'\W', '_', stage)
    out.mkdir(exist_ok=True)
    r = subprocess.run(['sh', str(DEPLOY / 'worker.sh'), *args], cwd=ROOT, env=worker_env(fakebin, out, stage),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, (stage, r.stderr)
    return (out / 'argv').read_bytes().decode().split('\0')[:-1]


def check_worker_args(stage, argv):
    """`argv` (papermill's command line) runs `stage`'s notebook, passes only parameters it takes, and names the
    stage when the notebook serves several (predict.<model>)."""
    nb = notebook_of(stage)
    assert argv[0] == str(nb.relative_to(ROOT)), (stage, argv[0])
    takes = notebook_parameters(nb)
    unknown = [p for p in worker_params(argv) if p not in takes]
    assert not unknown, f"{stage}: parameters {unknown} are not in {nb.relative_to(ROOT)}"
    if 'stage' in takes: assert param_value(argv, 'stage') == stage, (stage, argv)


def test_worker_sh_runs_each_stages_notebook_and_names_the_stage_of_a_shared_one(fakebin, tmp_path):
    assert subprocess.run(['sh', '-n', str(DEPLOY / 'worker.sh')]).returncode == 0
    for stage in STAGES:
        argv = papermill_argv(fakebin, tmp_path, stage, ['-p', 'bus', 'kafka://b:9092'])
        check_worker_args(stage, argv)
        shared = notebook_of(stage).stem != stage
        assert (param_value(argv, 'stage') == stage) if shared else ('stage' not in worker_params(argv)), stage
        assert param_value(argv, 'bus') == 'kafka://b:9092' and param_value(argv, 'client_id') == 'w1'
        assert param_value(argv, 'stop_file').endswith(f'/stop-{stage}-w1') and argv[1].endswith(f'/{stage}-w1.ipynb')
    assert {s for s in STAGES if notebook_of(s).stem != s} >= {'predict.lr', 'predict.gbt'}


def test_worker_sh_refuses_a_stage_without_a_notebook(fakebin, tmp_path):
    for stage in ('nosuch', 'nosuch.lr'):
        r = subprocess.run(['sh', str(DEPLOY / 'worker.sh')], cwd=ROOT, env=worker_env(fakebin, tmp_path, stage),
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and f"'{stage}'" in r.stderr and not (tmp_path / 'argv').exists()


def test_worker_sh_turns_sigterm_into_the_stop_file(fakebin, tmp_path):
    started = tmp_path / 'started'
    p = subprocess.Popen(['sh', str(DEPLOY / 'worker.sh')], cwd=ROOT,
                         env=worker_env(fakebin, tmp_path, 'predict.gbt', VELOX_FAKE_WAIT=str(started)))
    t0 = time.monotonic()
    while not started.exists() and time.monotonic() - t0 < 20: time.sleep(0.02)
    assert started.exists()
    p.send_signal(signal.SIGTERM)  # to worker.sh only, as docker/kubelet/systemd (KillMode=mixed) do
    assert p.wait(timeout=20) == 0  # the stand-in papermill saw the stop file and exited cleanly
    assert (tmp_path / 'stop-predict.gbt-w1').exists()


# -- docker compose -----------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def compose():
    return yaml.safe_load((DEPLOY / 'docker-compose.yml').read_text())


def compose_workers(compose):
    return {s['environment']['VELOX_STAGE']: s for s in compose['services'].values()
            if isinstance(s.get('environment'), dict) and 'VELOX_STAGE' in s['environment']}


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


def test_compose_has_redis_clickhouse_and_a_worker_per_stage_with_valid_parameters(compose, fakebin, tmp_path):
    svc = compose['services']
    assert {'redis', 'clickhouse'} <= set(svc)
    workers = compose_workers(compose)
    assert set(workers) == set(STAGES)
    assert all(n.endswith('-worker') for n, s in svc.items() if s in workers.values())
    for stage, s in workers.items():
        assert s['command'][0] == 'deploy/worker.sh' and s['stop_grace_period']
        check_worker_args(stage, papermill_argv(fakebin, tmp_path, stage, s['command'][1:]))
        bus = param_value(s['command'], 'bus')
        assert bus == BUS_STYLE and re.findall(r'kafka\d:9092', bus) == ['kafka1:9092', 'kafka2:9092', 'kafka3:9092']
        assert {'kafka1', 'kafka2', 'kafka3', 'redis', 'clickhouse'} <= set(s['depends_on'])
    assert 'store' in worker_params(workers['persist']['command'])
    assert 'store' not in worker_params(workers['detect']['command'])
    for oneshot in ('topics', 'models-train', 'replay'):
        assert svc[oneshot]['restart'] == 'no' and 'oneshot' in svc[oneshot]['profiles']
    assert BUS_STYLE in svc['topics']['command'] and 'create' in svc['topics']['command']


def test_compose_runs_execution_as_exactly_one_member(compose):
    workers = compose_workers(compose)
    for stage, s in workers.items():
        replicas = [s.get('scale'), (s.get('deploy') or {}).get('replicas')]
        top = STAGES[stage].max_members
        if top: assert all(r is None or r <= top for r in replicas), (stage, replicas)
    ex = workers['execution']
    assert STAGES['execution'].max_members == 1
    assert ex.get('container_name'), 'a fixed container_name makes `--scale execution-worker=2` fail'
    assert ex.get('scale', 1) == 1 and (ex.get('deploy') or {}).get('replicas', 1) == 1


def named_mounts(service):
    "{mount path: (volume name, read_only)} of a compose service's named-volume mounts."
    out = {}
    for v in service.get('volumes', []):
        parts = v.split(':')
        if not parts[0].startswith(('.', '/')): out[parts[1]] = (parts[0], parts[2:] == ['ro'])
    return out


def test_compose_shares_the_model_registry_that_models_train_promotes_into(compose):
    svc, workers = compose['services'], compose_workers(compose)
    train = svc['models-train']['command']
    assert train[:3] == ['velox', 'models', 'train'] and '--promote' in train and '--days' in train
    reg = train[train.index('--registry') + 1]
    vol, ro = named_mounts(svc['models-train'])[reg]
    assert not ro and vol in compose['volumes']
    readers = [s for s in STAGES if 'registry' in notebook_parameters(notebook_of(s))]
    assert {'predict.lr', 'predict.gbt', 'ensemble'} <= set(readers)
    for stage in readers:
        path = param_value(workers[stage]['command'], 'registry')
        assert named_mounts(workers[stage]).get(path) == (vol, True), stage  # the same volume, read-only


def build_execution(path):
    "The execution stage the worker would build from parameter file `path` (same code path as stage_worker)."
    return STAGES['execution'].make(_stage_params('execution', str(path)))


def test_compose_execution_parameters_file_exists_and_builds(compose):
    ex = compose_workers(compose)['execution']
    path = param_value(ex['command'], 'params')
    binds = {v.split(':')[1]: v.split(':')[0] for v in ex['volumes'] if v.startswith(('.', '/'))}
    src = (DEPLOY / binds[path]).resolve()  # relative to the compose file's directory
    assert src == DEPLOY / 'execution.yaml'
    build_execution(src)
    p = yaml.safe_load(src.read_text())
    assert p['accounts'] and p['broker'] and 'allowed_lateness_s' not in p  # the stage releases by watermark
    assert 'store' in worker_params(ex['command'])


def test_compose_config_validates_when_docker_compose_is_available():
    if not shutil.which('docker') or subprocess.run(['docker', 'compose', 'version'], capture_output=True).returncode:
        pytest.skip('docker compose is not installed here (structural checks above)')
    r = subprocess.run(['docker', 'compose', '-f', str(DEPLOY / 'docker-compose.yml'), 'config', '-q'], capture_output=True, text=True,
                       env={'VELOX_STORE_PASSWORD': 'x', 'PATH': '/usr/bin:/bin:/usr/local/bin'})
    assert r.returncode == 0, r.stderr


# -- Kubernetes ---------------------------------------------------------------------------------------------------
def k8s_docs():
    return [d for p in sorted((DEPLOY / 'k8s').glob('*.yaml')) for d in yaml.safe_load_all(p.read_text()) if d]


@pytest.fixture(scope='module')
def k8s():
    by_kind = {}
    for d in k8s_docs():
        assert {'apiVersion', 'kind', 'metadata'} <= set(d), d
        by_kind.setdefault(d['kind'], {})[d['metadata']['name']] = d
    return by_kind


def stage_of(dep):
    c = dep['spec']['template']['spec']['containers'][0]
    return next(e['value'] for e in c['env'] if e['name'] == 'VELOX_STAGE')


def test_every_k8s_deployment_probes_health_and_ready_and_references_existing_config(k8s, fakebin, tmp_path):
    cms, secrets, deps = k8s['ConfigMap'], k8s['Secret'], k8s['Deployment']
    assert sorted(stage_of(d) for d in deps.values()) == sorted(STAGES)  # one Deployment per stage
    ns = {d['metadata'].get('namespace') for d in k8s_docs() if d['kind'] != 'Namespace'}
    assert ns == set(k8s['Namespace'])
    for name, d in deps.items():
        spec = d['spec']
        assert spec['selector']['matchLabels'].items() <= spec['template']['metadata']['labels'].items(), name
        pod = spec['template']['spec']
        c = pod['containers'][0]
        port = c['ports'][0]['containerPort']
        assert c['livenessProbe']['httpGet'] == {'path': '/health', 'port': port}
        assert c['readinessProbe']['httpGet'] == {'path': '/ready', 'port': port}
        args = c['args']
        assert param_value(args, 'metrics_port') == str(port)  # the worker serves the probes on that port
        assert c['command'] == ['deploy/worker.sh']
        check_worker_args(stage_of(d), papermill_argv(fakebin, tmp_path, stage_of(d), args))
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
            if 'persistentVolumeClaim' in v: assert v['persistentVolumeClaim']['claimName'] in k8s['PersistentVolumeClaim']
        path = param_value(args, 'params')  # parameter files come from the ConfigMap
        if path:
            m = next(m for m in c['volumeMounts'] if path.startswith(m['mountPath'] + '/'))
            v = next(v for v in pod['volumes'] if v['name'] == m['name'])
            key = path[len(m['mountPath']) + 1:]
            assert key in [i['path'] for i in v['configMap']['items']], (name, path)
        assert pod['terminationGracePeriodSeconds'] >= 60


def test_k8s_runs_execution_as_one_replica_that_never_overlaps(k8s):
    for name, d in k8s['Deployment'].items():
        top = STAGES[stage_of(d)].max_members
        if top: assert d['spec']['replicas'] <= top and d['spec']['strategy']['type'] == 'Recreate', name
    ex = next(d for d in k8s['Deployment'].values() if stage_of(d) == 'execution')
    assert ex['spec']['replicas'] == 1 and ex['spec']['strategy'] == {'type': 'Recreate'}


def mount_of(pod, path):
    "(volume, readOnly) of the volume a container of `pod` mounts at `path`."
    c = pod['containers'][0]
    m = next(m for m in c['volumeMounts'] if m['mountPath'] == path)
    return next(v for v in pod['volumes'] if v['name'] == m['name']), m.get('readOnly', False)


def test_k8s_registry_pvc_is_written_by_the_train_job_and_read_by_predict_and_ensemble(k8s):
    env = k8s['ConfigMap']['velox-params']['data']
    reg = env['VELOX_REGISTRY']
    job = k8s['Job']['velox-models-train']['spec']['template']['spec']
    c = job['containers'][0]
    cmd = c['command'] + c['args']
    assert cmd[:3] == ['velox', 'models', 'train'] and '--promote' in cmd and cmd[cmd.index('--registry') + 1] == '$(VELOX_REGISTRY)'
    vol, ro = mount_of(job, reg)
    claim = vol['persistentVolumeClaim']['claimName']
    assert not ro and claim in k8s['PersistentVolumeClaim']
    assert 'ReadWriteMany' in k8s['PersistentVolumeClaim'][claim]['spec']['accessModes']  # readers on any node
    readers = {stage_of(d): d for d in k8s['Deployment'].values() if 'registry' in notebook_parameters(notebook_of(stage_of(d)))}
    assert {'predict.lr', 'predict.gbt', 'ensemble'} <= set(readers)
    for stage, d in readers.items():
        assert param_value(d['spec']['template']['spec']['containers'][0]['args'], 'registry') == '$(VELOX_REGISTRY)'
        vol, ro = mount_of(d['spec']['template']['spec'], reg)
        assert vol['persistentVolumeClaim']['claimName'] == claim and ro, stage


def test_k8s_execution_parameters_match_deploy_execution_yaml_and_build(k8s, tmp_path):
    cm = k8s['ConfigMap']['velox-params']['data']
    assert yaml.safe_load(cm['execution.yaml']) == yaml.safe_load((DEPLOY / 'execution.yaml').read_text())
    (tmp_path / 'execution.yaml').write_text(cm['execution.yaml'])
    build_execution(tmp_path / 'execution.yaml')


# -- systemd ------------------------------------------------------------------------------------------------------
def systemd_units():
    units = {}
    for p in sorted((DEPLOY / 'systemd').glob('*.service')):
        cp = configparser.ConfigParser(strict=False, interpolation=None)
        cp.optionxform = str
        cp.read_string(p.read_text())
        units[p.name] = cp
    return units


def env_file(path):
    "KEY=VALUE lines of a systemd EnvironmentFile (comments and blank lines skipped)."
    return dict(line.split('=', 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith('#'))


def systemd_escape(s):
    "systemd's escaping of a unit instance name: keep [A-Za-z0-9:_.] (not a leading '.'), '/' -> '-', else \\xNN."
    return ''.join(ch if (ch.isascii() and (ch.isalnum() or ch in ':_.') and not (i == 0 and ch == '.')) else
                   '-' if ch == '/' else f'\\x{ord(ch):02x}' for i, ch in enumerate(s))


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


def test_systemd_worker_unit_runs_every_stage_by_instance_name(fakebin, tmp_path):
    s = systemd_units()['velox-worker@.service']['Service']
    assert 'VELOX_STAGE=%I' in s['Environment'].split()  # %I: the unescaped instance name
    assert '/etc/velox/workers/%I.env' in s['EnvironmentFile']
    exec_start = shlex.split(s['ExecStart'])
    assert exec_start[0].endswith('deploy/worker.sh') and '$VELOX_WORKER_ARGS' in exec_start
    escape = shutil.which('systemd-escape')
    for stage in STAGES:
        assert systemd_escape(stage) == stage, f'{stage}: needs escaping as a unit instance name'
        if escape:
            r = subprocess.run([escape, '--template', 'velox-worker@.service', stage], capture_output=True, text=True)
            assert r.stdout.strip() == f'velox-worker@{stage}.service', r
        own = shlex.split(env_file(DEPLOY / 'systemd' / 'workers' / f'{stage}.env')['VELOX_WORKER_ARGS'])
        args = [a.replace('%I', stage) for a in exec_start[1:]]
        args = [x for a in args for x in (own if a == '$VELOX_WORKER_ARGS' else [a])]
        check_worker_args(stage, papermill_argv(fakebin, tmp_path, stage, args))
        assert param_value(args, 'group') == f'velox-{stage}'
    assert systemd_escape('a/b-c') == 'a-b\\x2dc' and systemd_escape('.x') == '\\x2ex'  # the helper escapes what it must


# -- velox fleet --------------------------------------------------------------------------------------------------
def test_the_example_fleet_runs_the_whole_graph_and_names_real_notebook_parameters():
    spec = FleetSpec.from_dict(yaml.safe_load((DEPLOY / 'fleet.yaml').read_text()), root=DEPLOY, source='deploy/fleet.yaml')
    assert set(spec.stages) == set(STAGES)
    assert spec.stages['execution'].count == 1
    for stage, sr in spec.stages.items():
        check_members(stage, sr.count)
        takes = notebook_parameters(spec.notebook(stage))
        assert set(sr.params) <= set(takes), stage
        if stage in ('predict.lr', 'predict.gbt', 'ensemble'): assert 'registry' in takes and 'registry' not in sr.params
    assert spec.params['registry']  # fleet-wide: every notebook that takes it gets it
    assert Path(spec.stages['execution'].params['params']).name == 'execution.yaml'  # installed from deploy/execution.yaml
    assert [j.name for j in parse_schedule(spec.schedule)] == ['baseline']
    assert (DEPLOY / 'worker.sh').stat().st_mode & 0o111 or (DEPLOY / 'Dockerfile').read_text().count('chmod +x deploy/worker.sh')


def test_readme_gives_the_order_of_operations():
    text = (DEPLOY / 'README.md').read_text()
    steps = text[text.index('Order of operations'):]
    steps = steps[:steps.index('\n## ')]
    at = [steps.find(s) for s in ('start Kafka', 'velox topics create', 'velox models train', 'start the workers', 'replay')]
    assert -1 not in at and at == sorted(at), at
    for stage in STAGES: assert f'`{stage}`' in text, stage



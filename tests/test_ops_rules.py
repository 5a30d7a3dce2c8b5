"""The fleet's Prometheus rules (velox.infra.alerting): the rules file in deploy/ is the one velox writes, promtool accepts
it, its unit tests (deploy/prometheus/velox-rules.test.yml) pass, and every alert links to a runbook that exists."""
import shutil, subprocess
from pathlib import Path
import pytest
import yaml
from velox.infra.alerting import ALERTS, rules_document
from velox.infra.grafana import dashboard

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / 'deploy' / 'prometheus'
needs_promtool = pytest.mark.skipif(not shutil.which('promtool'), reason='needs Debian prometheus (promtool); tests/run.sh installs it')


def test_deploy_rules_file_is_what_velox_writes():
    assert yaml.safe_load((PROM / 'velox-rules.yml').read_text()) == rules_document(), \
        'deploy/prometheus/velox-rules.yml is stale: python -c "from velox.infra.alerting import write_rules; write_rules(\'deploy/prometheus/velox-rules.yml\')"'


@needs_promtool
def test_promtool_checks_the_rules_and_passes_their_unit_tests():
    for args in (['check', 'rules', 'velox-rules.yml'], ['test', 'rules', 'velox-rules.test.yml']):
        r = subprocess.run(['promtool', *args], cwd=PROM, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"promtool {' '.join(args)}:\n{r.stdout}\n{r.stderr}"


def test_every_alert_is_unit_tested_and_has_a_runbook():
    tested = {t.get('alertname') for case in yaml.safe_load((PROM / 'velox-rules.test.yml').read_text())['tests']
              for t in case.get('alert_rule_test', []) if t.get('exp_alerts')}
    for a in ALERTS:
        assert a.name in tested, f'{a.name} is never shown firing in velox-rules.test.yml'
        page = ROOT / 'deploy' / 'runbooks' / a.runbook
        assert page.exists(), f'no runbook {page}'
        text = page.read_text()
        for part in ('## What it means', '## How to confirm', '## What to do'): assert part in text, f'{page.name}: no {part!r}'


def test_deploy_dashboard_is_a_valid_grafana_model_and_what_velox_writes():
    import json
    model = json.loads((ROOT / 'deploy' / 'grafana' / 'dashboards' / 'velox.json').read_text())
    assert model == dashboard(), 'deploy/grafana/dashboards/velox.json is stale: velox.infra.grafana.write_dashboard'
    assert {'uid', 'title', 'panels', 'schemaVersion', 'templating'} <= set(model)
    for p in model['panels']:
        assert {'id', 'type', 'title', 'gridPos'} <= set(p) and {'h', 'w', 'x', 'y'} == set(p['gridPos'])
        if p['type'] != 'row':
            assert p['targets'] and all(t['expr'] and t['refId'] and t['datasource']['type'] == 'prometheus' for t in p['targets'])
    prov = yaml.safe_load((ROOT / 'deploy' / 'grafana' / 'provisioning' / 'datasources' / 'prometheus.yml').read_text())
    assert prov['datasources'][0]['uid'] == model['panels'][1]['datasource']['uid']


LABELS = {'fleet', 'stage', 'member', 'group', 'mode'}  # what the rules and the dashboard group and filter by


def test_deploy_recipes_carry_the_same_prometheus_setup():
    compose = yaml.safe_load((ROOT / 'deploy' / 'docker-compose.yml').read_text())['services']
    assert {'prometheus', 'alertmanager', 'alert-receiver', 'grafana'} <= set(compose)
    for name in ('prometheus', 'alertmanager', 'alert-receiver', 'grafana'):
        for v in compose[name].get('volumes', []):
            src = v.split(':')[0]
            if src.startswith('./'): assert (ROOT / 'deploy' / src).exists(), f'compose {name}: {src} does not exist'
    assert compose['detect-worker']['environment']['VELOX_METRICS_HOST'] == '0.0.0.0'
    for cfg in ('prometheus.yml', 'prometheus-systemd.yml'):
        d = yaml.safe_load((PROM / cfg).read_text())
        assert d['rule_files'] == ['velox-rules.yml'] and d['scrape_configs'][0]['job_name'] == 'velox'
    relabeled = {r['target_label'] for r in yaml.safe_load((PROM / 'prometheus.yml').read_text())['scrape_configs'][0]['relabel_configs']}
    assert LABELS <= relabeled
    docs = {d['kind']: d for d in yaml.safe_load_all((ROOT / 'deploy' / 'k8s' / 'monitoring.yaml').read_text())}
    assert docs['PrometheusRule']['spec'] == rules_document(), 'deploy/k8s/monitoring.yaml: the PrometheusRule is stale'
    assert LABELS | {'job'} <= {r['targetLabel'] for r in docs['PodMonitor']['spec']['podMetricsEndpoints'][0]['relabelings']}
    unit = (ROOT / 'deploy' / 'systemd' / 'velox-alerts.service').read_text()
    assert 'velox.infra.alert_receiver /etc/velox/notify.yaml 9095' in unit and "127.0.0.1:9095" in (PROM / 'prometheus-systemd.yml').read_text()


@needs_promtool
def test_promtool_and_amtool_accept_the_deploy_configs():
    for cmd in (['promtool', 'check', 'config', 'prometheus.yml'], ['promtool', 'check', 'config', 'prometheus-systemd.yml'],
                ['amtool', 'check-config', '../alertmanager/alertmanager.yml']):
        if not shutil.which(cmd[0]): pytest.skip(f'{cmd[0]} is not installed')
        r = subprocess.run(cmd, cwd=PROM, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{' '.join(cmd)}:\n{r.stdout}\n{r.stderr}"


def test_the_compose_notify_config_loads():
    from velox.infra.notify import load_notifier
    assert set(load_notifier(ROOT / 'deploy' / 'alertmanager' / 'notify.yaml', env={}).outputs) == {'ops-hook'}

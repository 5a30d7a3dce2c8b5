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

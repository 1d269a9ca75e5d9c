"""The chart's Grafana dashboards and PrometheusRule: rendered by the real Helm engine, every
PromQL expression parsed by a real PromQL parser (PyPI `promql-parser` 0.11, bindings of the
Rust crate `promql-parser` 0.11), every metric name one the services' code registers, every
alert with a severity and a runbook page that exists. The names are checked against the
running services' /metrics too, with their types, in deploy/local/e2e/test_zz_monitoring_metrics.py.
"""

from __future__ import annotations

import json
import re

import kubernetes_validate
import pytest
import yaml
from helm_python.chart import Chart
from helm_python.errors import HelmRenderError, HelmValuesError

import monitoring as mon

RELEASE, NAMESPACE = "centralita", "contact-center"
BASE = "https://runbooks.example.test/centralita/docs/runbooks"
ON = {"dashboards": {"enabled": True}, "prometheusRule": {"enabled": True, "runbookBaseUrl": BASE}}
PRODUCTION = mon.REPO / "deploy" / "values-production.yaml"
SEVERITIES = {"critical", "warning"}
RUNBOOK_SECTIONS = ["## What it means", "## Confirm it", "## What to do"]


@pytest.fixture(scope="module")
def chart():
    with Chart.load(mon.CHART_DIR) as c:
        yield c


def render(chart, values):
    out = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return [d for path, text in sorted(out.items()) if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]


def of(objects, kind):
    return [o for o in objects if o["kind"] == kind]


@pytest.fixture(scope="module", params=["defaults-on", "production"])
def rendered(request, chart):
    values = ON if request.param == "defaults-on" else yaml.safe_load(PRODUCTION.read_text())
    return request.param, values, render(chart, values)


def the_rule(objects):
    (rule,) = of(objects, "PrometheusRule")
    return rule


def all_queries(objects):
    return mon.rule_queries(the_rule(objects)) + [q for d in mon.chart_dashboards() for q in mon.dashboard_queries(d)]


def test_dashboards_and_alerts_are_off_by_default(chart):
    objects = render(chart, {})
    assert of(objects, "PrometheusRule") == []
    assert [o for o in of(objects, "ConfigMap") if "dashboard" in o["metadata"]["name"]] == []


def test_dashboards_ship_as_configmaps_for_the_grafana_sidecar(rendered):
    _, values, objects = rendered
    files = {p.name: json.loads(p.read_text()) for p in sorted(mon.DASHBOARDS.glob("*.json"))}
    assert set(files) == {"centralita-platform.json", "centralita-acd.json", "centralita-pipelines.json", "centralita-tenants.json"}
    maps = [o for o in of(objects, "ConfigMap") if "-dashboard-" in o["metadata"]["name"]]
    assert len(maps) == len(files)
    label = values["dashboards"].get("sidecarLabel", "grafana_dashboard")
    for cm in maps:
        kubernetes_validate.validate(cm, "1.30", strict=True)
        assert cm["metadata"]["labels"][label] == values["dashboards"].get("sidecarLabelValue", "1")
        assert cm["metadata"].get("annotations", {}) == values["dashboards"].get("annotations", {})
        ((name, text),) = cm["data"].items()
        assert json.loads(text) == files[name], name
    uids = [d["uid"] for d in files.values()]
    assert len(set(uids)) == len(uids)
    for d in files.values():
        panels = [p for p in d["panels"] if p["type"] != "row"]
        assert panels and all(p["targets"] and p["datasource"]["uid"] == "${datasource}" for p in panels), d["uid"]
        assert len({p["id"] for p in d["panels"]}) == len(d["panels"]), d["uid"]


def test_every_alert_has_a_severity_and_its_runbook(rendered):
    _, values, objects = rendered
    rule = the_rule(objects)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert rule["metadata"]["labels"].items() >= values["prometheusRule"].get("labels", {}).items()
    base = values["prometheusRule"]["runbookBaseUrl"]
    alerts = set()
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            name = r["alert"]
            alerts.add(name)
            assert r["labels"]["severity"] in SEVERITIES, name
            assert re.fullmatch(r"[0-9]+[smh]", r["for"]), name
            assert r["annotations"]["summary"] and r["annotations"]["description"], name
            assert r["annotations"]["runbook_url"] == f"{base}/{name}.md", name
            page = mon.RUNBOOKS / f"{name}.md"
            assert page.is_file(), f"{name}: no runbook {page}"
            text = page.read_text()
            assert text.startswith(f"# {name}\n"), page
            for section in RUNBOOK_SECTIONS:
                assert section in text, (page, section)
    # The alerts the platform pages on.
    assert alerts >= {
        "CentralitaServiceDown", "CentralitaServiceNotReady", "CentralitaGrpcServerErrors",
        "CentralitaGrpcLatencyBudgetBurn", "CentralitaOutboxBacklog", "CentralitaRoutingOwnsNoPartitions",
        "CentralitaConsumerStalled", "CentralitaConsumerLag", "CentralitaEventAgeHigh", "CentralitaOffersVoided",
        "CentralitaTenantRateLimited", "CentralitaRateLimiterFallback", "CentralitaTenantServiceLevelBreach",
    }
    # Every runbook page is some alert's.
    pages = {p.stem for p in mon.RUNBOOKS.glob("Centralita*.md")}
    assert pages == alerts


def test_every_expression_parses_with_a_promql_parser(rendered):
    _, _, objects = rendered
    queries = all_queries(objects)
    assert len(queries) > 50
    failures = []
    for q in queries:
        try:
            assert mon.selectors(q.expr), "reads no metric"
        except (ValueError, AssertionError) as e:
            failures.append(f"{q.where}: {e}\n  {q.expr}")
    assert not failures, "\n".join(failures)


def test_every_metric_read_is_registered_by_the_code(rendered):
    _, _, objects = rendered
    known = mon.code_series(mon.registered_in_code())
    assert mon.unknown_metrics(all_queries(objects), known) == []


def test_thresholds_from_values_reach_the_expressions(chart):
    values = yaml.safe_load(PRODUCTION.read_text())
    exprs = {q.where: q.expr for q in mon.rule_queries(the_rule(render(chart, values)))}
    t = values["prometheusRule"]["thresholds"]
    assert f"> {t['grpcServerErrorRatio']}" in exprs["rule centralita.grpc/CentralitaGrpcServerErrors"]
    assert f"> {t['outboxOldestSeconds']} * 1000" in exprs["rule centralita.acd/CentralitaOutboxBacklog"]
    assert f'le="{t["latency"]["thresholdSeconds"]}"' in exprs["rule centralita.grpc/CentralitaGrpcLatencyBudgetBurn"]
    assert all(f'namespace="{NAMESPACE}"' in e for w, e in exprs.items() if "ServiceDown" not in w)


# ---------------------------------------------------------------------------------------
# The check itself catches what it should
# ---------------------------------------------------------------------------------------


def test_a_misspelt_metric_in_an_alert_is_caught(chart):
    """A rule reading a name no service exports (here the outbox age in seconds, which the
    code exports in milliseconds) fails the check, as does a dashboard query."""
    rule = the_rule(render(chart, ON))
    known = mon.code_series(mon.registered_in_code())
    assert mon.unknown_metrics(mon.rule_queries(rule), known) == []
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            r["expr"] = r["expr"].replace("centralita_sessions_outbox_oldest_age_milliseconds", "centralita_sessions_outbox_oldest_age_seconds")
    assert mon.unknown_metrics(mon.rule_queries(rule), known) == [
        "rule centralita.acd/CentralitaOutboxBacklog: centralita_sessions_outbox_oldest_age_seconds"
    ]
    board = mon.chart_dashboards()[0]
    board["panels"][-1]["targets"][0]["expr"] = "rate(centralita_sessions_contacts_creatd_total[$__rate_interval])"
    assert [u.rsplit(": ", 1)[1] for u in mon.unknown_metrics(mon.dashboard_queries(board), known)] == [
        "centralita_sessions_contacts_creatd_total"
    ]


@pytest.mark.parametrize(
    "expr",
    ["sum(rate(centralita_service_ready[5m])", "rate(centralita_service_ready[5x])", "centralita_service_ready > > 1", '{__name__=~"centralita_.*"}'],
    ids=["unclosed", "bad-duration", "bad-operator", "no-metric-name"],
)
def test_an_unparsable_or_unnamed_expression_is_refused(expr):
    with pytest.raises(ValueError):
        mon.selectors(expr)


def test_grafana_variables_become_promql():
    assert (
        mon.grafana_to_promql('rate(x{namespace=~"$namespace",pod=~"${pod}"}[$__rate_interval])')
        == 'rate(x{namespace=~".*",pod=~".*"}[5m])'
    )


# ---------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------


def test_alerts_need_the_runbook_location(chart):
    with pytest.raises(HelmRenderError) as e:
        chart.render({"prometheusRule": {"enabled": True}}, name=RELEASE, namespace=NAMESPACE)
    assert "prometheusRule.runbookBaseUrl" in str(e.value)


@pytest.mark.parametrize(
    "values, where",
    [
        ({"prometheusRule": {"thresholds": {"latency": {"thresholdSeconds": 0.3}}}}, "/prometheusRule/thresholds/latency/thresholdSeconds"),
        ({"prometheusRule": {"thresholds": {"grpcServerErrorRatio": 5}}}, "/prometheusRule/thresholds/grpcServerErrorRatio"),
        ({"prometheusRule": {"runbookBaseUrl": "docs/runbooks"}}, "/prometheusRule/runbookBaseUrl"),
        ({"dashboards": {"enabled": "yes"}}, "/dashboards/enabled"),
    ],
)
def test_wrong_monitoring_values_fail_with_a_schema_error(chart, values, where):
    with pytest.raises(HelmValuesError) as e:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert where in str(e.value), str(e.value)

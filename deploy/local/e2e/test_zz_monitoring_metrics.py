"""Every metric the chart's dashboards and alerts read is exported by the running services.

The chart is rendered with its dashboards and PrometheusRule on (the real Helm engine, as in
charts/tests); every PromQL expression of the rules and of the dashboards' panels and
variables is parsed with `promql-parser` (PyPI 0.11, bindings of the Rust crate
`promql-parser` 0.11) and each vector selector's metric name must be a series the six
services expose on their admin ports' /metrics: a gauge by its name, a counter by
`<family>_total`, a histogram by `<family>_bucket`, `_sum` or `_count`, as the `# TYPE` lines
of the exposition declare (only `up`, which Prometheus makes itself, is exempt). Where the
scrape has samples of a series, every label a selector matches on must be one of theirs.

Named to run after the other end-to-end tests, and it drives one contact through its life
itself (test_zz_domain_metrics.one_contact) and calls a refused and a made-up method, so the
series have samples when it runs alone.
"""
import os
import sys
import uuid

import grpc
import pytest
import yaml

from conftest import REPO, endpoints, http_get, wait_for
from test_zz_domain_metrics import ADMIN_ORDER, one_contact

sys.path.insert(0, str(REPO / "charts" / "tests"))
import monitoring as mon  # noqa: E402


@pytest.fixture(scope="module")
def m(pb):
    from centralita.crm.v1 import crm_pb2
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        c = crm_pb2
        s = sessions_pb2
        sg = sessions_pb2_grpc
        t = pb.tenancy

    return M


def admin_port(service):
    return int(os.environ["CENTRALITA_ADMIN_BASE"]) + ADMIN_ORDER.index(service)


def floor_shows_the_contact(text):
    """Reporting's gauges have a `metrics-…` tenant's queue at 100 % against its 80 % target
    (the contact was answered at once; the tenant manifest's target is 80)."""
    lines = [line for line in text.splitlines() if 'tenant="metrics-' in line and 'queue="support"' in line]
    return any(line.startswith("centralita_reporting_service_level_percent{") and line.endswith(" 100.0") for line in lines) \
        and any(line.startswith("centralita_reporting_service_level_target_percent{") and line.endswith(" 80.0") for line in lines)


@pytest.fixture(scope="module")
def scraped(m, tmp_path_factory):
    """Every service's /metrics after a contact's life, a refused call and a made-up method."""
    one_contact(m, tmp_path_factory.mktemp("monitoring"))
    channel = grpc.insecure_channel(endpoints()["sessions"])
    with pytest.raises(grpc.RpcError) as refused:
        m.sg.ContactServiceStub(channel).GetContact(m.s.GetContactRequest(name="contacts/x"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    made_up = channel.unary_unary(f"/centralita.sessions.v1.ContactService/MadeUp{uuid.uuid4().hex[:6]}")
    with pytest.raises(grpc.RpcError):
        made_up(b"", timeout=5)
    # Reporting's floor gauges are set every 15 s: wait for the pass that has the contact.
    assert wait_for(lambda: floor_shows_the_contact(http_get(admin_port("reporting"), "/metrics")[1]), 45)
    out = {}
    for i, service in enumerate(ADMIN_ORDER):
        status, text = http_get(int(os.environ["CENTRALITA_ADMIN_BASE"]) + i, "/metrics")
        assert status == 200, (service, status)
        out[service] = text
    return out


@pytest.fixture(scope="module")
def queries():
    from helm_python.chart import Chart

    values = {"dashboards": {"enabled": True},
              "prometheusRule": {"enabled": True, "runbookBaseUrl": "https://runbooks.example.test/docs/runbooks"}}
    with Chart.load(mon.CHART_DIR) as chart:
        rendered = chart.render(values, name="centralita", namespace="centralita")
    docs = [d for path, text in rendered.items() if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    qs = mon.rule_queries(rule) + [q for d in mon.chart_dashboards() for q in mon.dashboard_queries(d)]
    assert len(qs) > 50
    return qs


def families(scraped):
    out = {}
    for text in scraped.values():
        out.update(mon.exposed_families(text))
    return out


def sample_labels(scraped):
    """Series name -> the label names its samples carry, over every service's scrape."""
    out = {}
    for text in scraped.values():
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            head = line.split(" # ", 1)[0].rsplit(" ", 1)[0]  # without an exemplar, then the value
            name, _, labels = head.partition("{")
            names = {kv.split("=", 1)[0] for kv in labels.rstrip("}").split(",") if "=" in kv}
            out.setdefault(name, set()).update(names)
    return out


def test_every_metric_of_the_dashboards_and_alerts_is_exported(scraped, queries):
    exported = mon.series_names(families(scraped))
    assert mon.unknown_metrics(queries, exported) == []


def test_the_labels_they_match_on_are_on_the_samples(scraped, queries):
    labels = sample_labels(scraped)
    missing = []
    for q in queries:
        for s in mon.selectors(q.expr):
            have = labels.get(s.name)
            if have is None:  # no sample yet (a counter nothing has counted): its name was checked above
                continue
            missing += [f"{q.where}: {s.name}{{{lab}}}" for lab in s.labels if lab not in have | mon.TARGET_LABELS]
    assert missing == []


def test_the_red_metrics_counted_the_calls(scraped):
    """The gRPC metrics the platform dashboard and the error and latency alerts read have
    samples after real calls: the contact's calls OK, the call without a token
    Unauthenticated, the made-up method under `unknown` (never its own name)."""
    text = scraped["sessions"]
    handled = [line for line in text.splitlines() if line.startswith("centralita_grpc_server_handled_total{")]
    assert any('grpc_method="CreateContact"' in line and 'grpc_code="OK"' in line for line in handled), handled
    assert any('grpc_method="GetContact"' in line and 'grpc_code="Unauthenticated"' in line for line in handled), handled
    assert any('grpc_service="unknown",grpc_method="unknown"' in line for line in handled), handled
    assert "MadeUp" not in text
    assert 'centralita_grpc_server_handling_seconds_bucket{service="sessions",le="0.25",' in text


def test_reporting_shows_the_tenant_queue_against_its_target(scraped):
    """The floor gauges the tenant dashboard and the service-level alert read: the contact's
    tenant has its queue at 100 % against its 80 % target, and its agents by state."""
    text = scraped["reporting"]
    assert floor_shows_the_contact(text), [line for line in text.splitlines() if "centralita_reporting_" in line]
    states = {line.split('state="')[1].split('"')[0] for line in text.splitlines()
              if line.startswith("centralita_reporting_agents{") and 'tenant="metrics-' in line}
    assert states == {"available", "busy", "away", "offline"}


def test_a_name_no_service_exports_is_caught(scraped, queries):
    """The check is not vacuous: the outbox age in seconds (the code exports milliseconds)
    and a counter read without its `_total` are reported."""
    exported = mon.series_names(families(scraped))
    wrong = [mon.Query("rule test/Misspelt", "max(centralita_sessions_outbox_oldest_age_seconds) > 60"),
             mon.Query("dashboard test panel", "rate(centralita_sessions_contacts_created[5m])")]
    assert mon.unknown_metrics(queries + wrong, exported) == [
        "rule test/Misspelt: centralita_sessions_outbox_oldest_age_seconds",
        "dashboard test panel: centralita_sessions_contacts_created",
    ]

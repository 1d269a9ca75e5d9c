"""The PromQL of the chart's dashboards and alerts, and the metric names it reads.

Shared by the offline chart tests (test_monitoring.py: every expression parses, every metric
is one the code registers) and the end-to-end test that compares the names with the running
services' /metrics (deploy/local/e2e/test_zz_monitoring_metrics.py).

Expressions are parsed by `promql-parser` (PyPI, 0.11: Python bindings of the Rust crate
`promql-parser` 0.11 by GreptimeTeam, the PromQL parser of GreptimeDB), not by a regex: a
metric name is a vector selector of the syntax tree.
"""

from __future__ import annotations

import json
import pathlib
import re
from dataclasses import dataclass

import promql_parser

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "centralita"
DASHBOARDS = CHART_DIR / "dashboards"
RUNBOOKS = REPO / "docs" / "runbooks"
# Series Prometheus makes itself for every target; the services cannot export them.
PROMETHEUS_OWN = {"up"}
# Labels Prometheus (through the chart's ServiceMonitor) puts on every scraped series.
TARGET_LABELS = {"namespace", "pod", "job", "instance", "container", "endpoint"}
# Grafana's interval variables become a duration; any other variable a regex of anything.
GRAFANA_INTERVALS = {"__rate_interval", "__interval", "__range"}
LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.+),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$", re.S)


@dataclass(frozen=True)
class Query:
    where: str  # "dashboard <uid> panel <title>" or "rule <group>/<alert>"
    expr: str


@dataclass(frozen=True)
class Selector:
    name: str
    labels: tuple[str, ...]


def grafana_to_promql(expr: str) -> str:
    """A Grafana query with its template variables replaced, so a PromQL parser can read it."""

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        return "5m" if name in GRAFANA_INTERVALS else ".*"

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", sub, expr)


def dashboard_queries(dashboard: dict) -> list[Query]:
    """Every query of a dashboard: each panel's targets (rows' nested panels too) and each
    query variable's `label_values(selector, label)` selector."""
    uid = dashboard["uid"]
    out = []

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dashboard.get("panels", [])):
        for t in p.get("targets", []):
            out.append(Query(f"dashboard {uid} panel {p['title']!r} {t['refId']}", grafana_to_promql(t["expr"])))
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = LABEL_VALUES.match(q)
        assert m, f"dashboard {uid} variable {v['name']}: not a label_values() query: {q}"
        out.append(Query(f"dashboard {uid} variable {v['name']}", grafana_to_promql(m.group("selector"))))
    return out


def chart_dashboards() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))]


def rule_queries(prometheus_rule: dict) -> list[Query]:
    return [
        Query(f"rule {g['name']}/{r.get('alert') or r.get('record')}", r["expr"])
        for g in prometheus_rule["spec"]["groups"]
        for r in g["rules"]
    ]


def selectors(expr: str) -> list[Selector]:
    """The vector selectors of `expr` (raises ValueError when it does not parse). A selector
    without a literal metric name (`{__name__=~"…"}`) is refused: its metrics cannot be checked."""
    tree = promql_parser.parse(expr)
    found: list[Selector] = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            matchers = node.matchers.matchers + [m for ms in node.matchers.or_matchers for m in ms]
            name = node.name or next((m.value for m in matchers if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal), None)
            if not name:
                raise ValueError(f"a selector without a metric name: {node}")
            found.append(Selector(name, tuple(sorted({m.name for m in matchers if m.name != "__name__"}))))
        return True

    promql_parser.walk(tree, visit)
    return found


def exposed_families(exposition: str) -> dict[str, str]:
    """Family name -> type from a Prometheus/OpenMetrics text exposition's `# TYPE` lines."""
    out = {}
    for line in exposition.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[:2] == ["#", "TYPE"]:
            out[parts[2]] = parts[3]
    return out


def series_names(families: dict[str, str]) -> set[str]:
    """The series names a scrape of these families yields: a counter's `_total`, a
    histogram's `_bucket`, `_sum` and `_count`, a gauge's own name."""
    out = set()
    for name, kind in families.items():
        if kind == "counter":
            out.add(name + "_total")
        elif kind == "histogram":
            out |= {name + "_bucket", name + "_sum", name + "_count"}
        elif kind == "summary":
            out |= {name, name + "_sum", name + "_count"}
        else:
            out.add(name)
    return out


def unknown_metrics(queries: list[Query], known: set[str]) -> list[str]:
    """`where: name` for every metric a query reads that is neither in `known` nor Prometheus's own."""
    return [
        f"{q.where}: {s.name}"
        for q in queries
        for s in selectors(q.expr)
        if s.name not in known and s.name not in PROMETHEUS_OWN
    ]


REGISTER = re.compile(r'\.register\(\s*"(centralita_[a-z0-9_]+)"')


def registered_in_code() -> dict[str, list[str]]:
    """Family name -> the source files that register it (`registry.register("<name>", …)` in
    each crate's metrics.rs and the platform's), read from services/*/src."""
    out: dict[str, list[str]] = {}
    for path in sorted((REPO / "services").glob("*/src/**/*.rs")):
        for m in REGISTER.finditer(path.read_text()):
            out.setdefault(m.group(1), []).append(str(path.relative_to(REPO)))
    return out


def code_series(families) -> set[str]:
    """Series names the registered families can yield, whatever their type: the family's own
    name, `_total` (counters), `_bucket`/`_sum`/`_count` (histograms). Types are not in the
    source text: the end-to-end test checks them against the `# TYPE` lines of /metrics."""
    return {f + suffix for f in families for suffix in ("", "_total", "_bucket", "_sum", "_count")}

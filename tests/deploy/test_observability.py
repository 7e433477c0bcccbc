"""deploy/observability/, checked offline: the alert rules file's shape, every PromQL expression of it and of the
Grafana dashboard parses (promql-parser: no wheel ships promtool), every metric they read is one the services
register, and every alert has its runbook section in docs/operations.md. That the metrics are on a running
stack's /metrics: tests/e2e/test_metrics.py."""
import re

import pytest

from libs.runtime.metrics import Metrics
from services.gateway.app import HttpMetrics
from services.gateway.idempotency import IdempotencyStore

from .manifests import PROJECT_ROOT
from .observability import dashboard, exposed, expressions, metric_names, panels, referenced, rules

OPERATIONS = PROJECT_ROOT / "docs" / "operations.md"
# what issue 16 asks the rules to catch, each by the metric it reads
ASKED = {"HarmonConsumerLagGrowing": "harmon_consumer_lag", "HarmonDeadLetters": "harmon_messages_dead_lettered_total",
         "HarmonOutboxStuck": "harmon_outbox_oldest_unsent_seconds",
         "HarmonSagaCompensationRate": "harmon_sagas_ended_total", "HarmonHttp5xxRate": "harmon_http_requests_total"}


def registered() -> set[str]:
    """Every series name the runtime and the gateway register (the saga's as orders asks for it)."""
    metrics = Metrics.create()
    metrics.saga()
    HttpMetrics(metrics)
    IdempotencyStore(None, 1.0, "test", metrics.registry)  # type: ignore[arg-type]
    return exposed(metrics.render().decode())


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#{1,6} (.+)$", markdown, flags=re.M)}


def test_each_rule_is_an_alert_with_a_severity_a_summary_and_a_runbook_section():
    sections = anchors(OPERATIONS.read_text())
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names)), "alert names are unique"
    assert set(ASKED) <= set(names)
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0m")), rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        page, _, anchor = notes["runbook"].partition("#")
        assert page == "docs/operations.md" and anchor == rule["alert"].lower() and anchor in sections, rule["alert"]


def test_each_asked_alert_reads_its_metric():
    by_name = {r["alert"]: r for r in rules()}
    for alert, metric in ASKED.items():
        assert metric in metric_names(by_name[alert]["expr"]), alert


@pytest.mark.parametrize("where,expr", expressions(), ids=[w for w, _ in expressions()])
def test_every_expression_parses_and_selects_harmon_metrics_by_name(where, expr):
    names = metric_names(expr)  # ValueError with the parser's reason when it does not parse
    assert names and all(n.startswith("harmon_") for n in names), (where, names)


def test_every_metric_the_rules_and_the_dashboard_read_is_registered():
    missing = {name: sorted(where) for name, where in referenced().items() if name not in registered()}
    assert not missing, missing


def test_the_dashboard_is_one_grafana_dashboard_on_a_chosen_prometheus():
    d = dashboard()
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int)
    [source] = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
    assert source["query"] == "prometheus"
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    graphs = [p for p in panels() if p["type"] != "row"]
    assert graphs
    for panel in graphs:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == panel["datasource"]["uid"] == f"${{{source['name']}}}"
    # every metric an alert reads has a panel, so the page an alert links to shows it
    shown = {n for p in graphs for t in p["targets"] for n in metric_names(
        t["expr"].replace("$__rate_interval", "5m"))}
    assert {n for r in rules() for n in metric_names(r["expr"])} <= shown

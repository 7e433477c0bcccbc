"""deploy/observability/ read from the files: the Prometheus alert rules and the Grafana dashboard, every PromQL
expression in them, and the metric names those expressions read; and the names a /metrics page exposes, from
its families' types (a counter `x` is read as `x_total`, a histogram `h` as `h_bucket`, `h_sum`, `h_count`)."""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from prometheus_client.parser import text_string_to_metric_families

OBSERVABILITY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
ALERTS = OBSERVABILITY / "alerts.yaml"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"

# Grafana's variables, as Prometheus would see them once Grafana filled them in
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}

SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",),
            "unknown": ("",), "untyped": ("",)}


@cache
def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


@cache
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(container: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every panel, rows' collapsed panels included."""
    out = []
    for panel in (container or dashboard()).get("panels", []):
        out.append(panel)
        out += panels(panel) if panel.get("panels") else []
    return out


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert and every dashboard target, Grafana's variables filled in."""
    found = [(f"alert {rule['alert']}", rule["expr"]) for rule in rules()]
    for panel in panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((f"panel {panel['title']!r} {target['refId']}", expr))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (ValueError when it does not parse)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        selector = node.vector_selector if isinstance(node, promql_parser.MatrixSelector) else node
        if isinstance(selector, promql_parser.VectorSelector):
            if not selector.name:
                raise ValueError(f"a selector without a metric name in {expr!r}")
            names.add(selector.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def referenced() -> dict[str, set[str]]:
    """Metric name → where it is read."""
    out: dict[str, set[str]] = {}
    for where, expr in expressions():
        for name in metric_names(expr):
            out.setdefault(name, set()).add(where)
    return out


def exposed(text: str) -> set[str]:
    """The series names a /metrics page offers, every family's, whether or not it has a sample yet."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
        names |= {sample.name for sample in family.samples}
    return names

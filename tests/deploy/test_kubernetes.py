"""deploy/k8s, checked offline: the example overlay rendered by `kubectl kustomize`, validated by
kubernetes-validate --strict (schemas in the wheel), then what the stack needs of the objects."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from libs.stack.supervisor import SERVICES
from services.gateway.config import Settings as GatewaySettings
from services.gateway.routes.health import add_routes as gateway_health_routes

from .manifests import (
    COMMON_VARIABLES, KUBECTL, OVERLAY, command_of, config_maps, containers, find, health_port, image, objects,
    port_number, render_overlay, variables_read_by, workloads,
)

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: it renders deploy/k8s "
                                                         "(kustomize is built in)")
KUBERNETES_VALIDATE = Path(sys.executable).with_name("kubernetes-validate")
BACKENDS = [s for s in SERVICES if s != "gateway"]
# a back-end service's drain after SIGTERM: handlers in flight (FastStream's graceful_timeout, 10 s,
# libs/runtime/kafka.py), then the outbox and the pool; a few seconds for the rest
BACKEND_DRAIN_S = 10 + 5


@pytest.fixture(scope="module")
def rendered() -> str:
    return render_overlay()


@pytest.fixture(scope="module")
def docs(rendered):
    return objects(rendered)


def by_name(docs) -> dict[str, dict]:
    return {w["metadata"]["name"]: w for w in workloads(docs)}


def effective_env(docs, container: dict) -> dict[str, str]:
    """The image's ENV, then the ConfigMaps loaded with envFrom, then literal env values."""
    env = dict(image().env)
    maps = config_maps(docs)
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def kubectl_minor() -> str:
    out = subprocess.run([KUBECTL, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30)
    version = json.loads(out.stdout)["clientVersion"]
    minor = re.match(r"\d+", version["minor"]).group(0)  # "32+" on some builds
    return f"{version['major']}.{minor}.0"


def test_overlay_validates_strictly_against_the_kubernetes_schemas(rendered, tmp_path):
    if not KUBERNETES_VALIDATE.exists():
        pytest.skip("kubernetes-validate is not installed (pip install -e '.[test]')")
    path = tmp_path / "rendered.yaml"
    path.write_text(rendered)
    done = subprocess.run([str(KUBERNETES_VALIDATE), "--strict", "-k", kubectl_minor(), str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ERROR" not in done.stdout and "WARN" not in done.stdout, done.stdout
    assert done.stdout.count("passed for resource") == len(objects(rendered))


def test_every_service_runs_from_the_one_pinned_image_by_its_command(docs):
    img, found = image(), by_name(docs)
    assert found["gateway"]["kind"] == "StatefulSet"
    assert all(found[s]["kind"] == "Deployment" for s in BACKENDS)
    assert found["migrate"]["kind"] == "Job"
    for name in SERVICES:
        assert command_of(containers(found[name])[0], img) == ["python", "-m", f"services.{name}"], name
    assert command_of(containers(found["migrate"])[0], img) == ["harmon", "migrate"]
    images = {c["image"] for w in found.values() for c in containers(w)}
    assert len(images) == 1, images
    tag = images.pop().rsplit(":", 1)
    assert len(tag) == 2 and tag[1] != "latest" and re.fullmatch(r"[\w.-]+", tag[1]), tag


def test_every_harmon_variable_is_a_setting_its_process_reads(docs):
    img = image()
    for key_set in config_maps(docs).values():
        unknown = set(key_set) - COMMON_VARIABLES
        assert not unknown, f"every pod loads the ConfigMap: {sorted(unknown)} are not common settings"
    for name, workload in by_name(docs).items():
        for container in containers(workload):
            reads = variables_read_by(command_of(container, img))
            assert reads is not None, name
            given = {e["name"] for e in container.get("env", []) if e["name"].startswith("HARMON_")}
            assert not given - reads, f"{name} is given {sorted(given - reads)}, which it does not read"


def test_secrets_are_referenced_never_included(docs):
    assert not find(docs, "Secret"), "Secrets are the operator's (docs/operations.md), not in the manifests"
    for name, workload in by_name(docs).items():
        for container in containers(workload):
            for e in container.get("env", []):
                if re.search(r"DATABASE_URL|SECRET", e["name"]):
                    assert "secretKeyRef" in e.get("valueFrom", {}), f"{name}: {e['name']} is not from a Secret"
    migrate = {e["name"] for e in containers(by_name(docs)["migrate"])[0]["env"]}
    assert {f"HARMON_{s.upper()}_DATABASE_URL" for s in SERVICES} <= migrate


def test_pods_run_non_root_on_a_read_only_root_with_requests_and_limits(docs):
    uid = int(image().user.split(":")[0])
    for name, workload in by_name(docs).items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == uid
        assert pod["automountServiceAccountToken"] is False
        tmp = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        for c in containers(workload):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert any(m["mountPath"] == "/tmp" and m["name"] in tmp for m in c["volumeMounts"]), name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, kind)


def test_probes_ask_the_paths_and_port_each_service_serves(docs):
    app = web.Application()
    gateway_health_routes(app)
    served = {r.canonical for r in app.router.resources()}
    assert {"/healthz", "/readyz"} <= served  # the back-ends' HealthServer serves the same two
    for name in SERVICES:
        container = containers(by_name(docs)[name])[0]
        port = health_port(effective_env(docs, container), name)
        assert {p["containerPort"] for p in container["ports"]} == {port}, name
        expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
        for probe, path in expected.items():
            get = container[probe]["httpGet"]
            assert get["path"] == path and port_number(container, get["port"]) == port, (name, probe, get)


def test_sigterm_gets_the_time_to_drain_after_pre_stop(docs):
    gateway_drain = GatewaySettings.model_fields["checkout_timeout_s"].default + 5  # main.py's shutdown_timeout
    for name in SERVICES:
        workload = by_name(docs)[name]
        container = containers(workload)[0]
        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep", pre_stop
        needed = int(pre_stop[1]) + (gateway_drain if name == "gateway" else BACKEND_DRAIN_S)
        assert workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= needed, name


def test_gateway_pods_are_named_instances_behind_a_service(docs):
    gateway = by_name(docs)["gateway"]
    env = {e["name"]: e for e in containers(gateway)[0]["env"]}
    assert env["HARMON_INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    governing = find(docs, "Service", gateway["spec"]["serviceName"])
    assert governing and governing[0]["spec"]["clusterIP"] == "None"
    api = find(docs, "Service", "gateway")[0]
    assert api["spec"]["selector"].items() <= labels.items() and api["spec"]["ports"][0]["targetPort"] == "http"


def test_disruption_budgets_and_autoscalers_within_the_partitions(docs):
    partitions = {int(data["HARMON_PARTITIONS"]) for data in config_maps(docs).values() if "HARMON_PARTITIONS" in data}
    assert len(partitions) == 1
    for name in SERVICES:
        labels = by_name(docs)[name]["spec"]["template"]["metadata"]["labels"]
        budgets = [p for p in find(docs, "PodDisruptionBudget")
                   if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(budgets) == 1, name
    for name in BACKENDS:
        hpa = [h for h in find(docs, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == name]
        assert len(hpa) == 1 and hpa[0]["spec"]["scaleTargetRef"]["kind"] == "Deployment", name
        assert 2 <= hpa[0]["spec"]["minReplicas"] <= hpa[0]["spec"]["maxReplicas"] <= min(partitions), name
        assert "replicas" not in by_name(docs)[name]["spec"], f"{name}: the autoscaler owns the replica count"


def _selects(selector: dict, labels: dict) -> bool:
    return selector.get("matchLabels", {}).items() <= labels.items() and not selector.get("matchExpressions")


def test_network_policy_lets_only_the_gateway_take_outside_traffic_and_monitoring_the_health_ports(docs):
    policies = find(docs, "NetworkPolicy")
    assert any(p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"]
               and not p["spec"].get("ingress") for p in policies), "a default deny of all ingress"
    for name, workload in by_name(docs).items():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        rules = [r for p in policies if _selects(p["spec"]["podSelector"], labels) for r in p["spec"].get("ingress", [])]
        open_rules = [r for r in rules if not r.get("from")]
        if name == "gateway":
            assert open_rules and all(port["port"] == "http" for r in open_rules for port in r["ports"])
        else:
            assert not open_rules, f"{name} takes traffic from anywhere"
        for rule in rules:
            if rule.get("from"):
                assert rule["from"] == [{"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": "monitoring"}}}], (name, rule)
                assert [p["port"] for p in rule["ports"]] == ["http"], (name, rule)
        if name == "migrate":
            assert not rules, "nothing connects to the migrate Job"


def test_metrics_of_every_service_are_reachable_for_scraping(docs):
    metrics = find(docs, "Service", "metrics")[0]
    assert metrics["spec"]["clusterIP"] == "None" and metrics["spec"]["ports"][0]["targetPort"] == "http"
    for name in SERVICES:
        workload = by_name(docs)[name]
        template = workload["spec"]["template"]
        assert _selects({"matchLabels": metrics["spec"]["selector"]}, template["metadata"]["labels"]), name
        port = health_port(effective_env(docs, containers(workload)[0]), name)
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port), name


def test_overlay_is_the_base_plus_a_namespace_and_an_image_tag():
    text = (OVERLAY / "kustomization.yaml").read_text()
    assert "../../base" in text and "namespace:" in text and "newTag:" in text

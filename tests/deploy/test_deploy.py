"""deploy/: the image recipe, the compose file, the Kubernetes base and the dashboard."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import orjson
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.31"
SCRIPTS = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def compose_config() -> dict[str, Any]:
    result = subprocess.run(
        ["docker-compose", "-f", str(DEPLOY / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def k8s_documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [
        doc
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((K8S / name).read_text())
    ]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    """Two stages on a slim base; the final one runs as a numeric non-root user, no compilers."""
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    assert len(stages) >= 2
    assert all("-slim" in stage.split()[0] for stage in stages)
    final = stages[-1]
    user = re.findall(r"^USER (\S+)", final, flags=re.MULTILINE)
    assert user
    assert user[-1].split(":")[0] not in ("0", "root")
    assert not re.search(r"gcc|build-essential|apt-get install", final)
    assert "from=build" in final
    command = re.search(r"^CMD \[(.*)\]", final, flags=re.MULTILINE)
    assert command is not None
    assert orjson.loads(f"[{command[1]}]")[0] in SCRIPTS


def test_compose_file_validates_and_wires_the_system() -> None:
    """docker-compose config accepts it; KRaft Kafka, topic, migrations first, checks, restarts."""
    services = compose_config()["services"]
    assert set(services) >= {
        "postgres",
        "kafka",
        "kafka-init",
        "migrate",
        "redirect",
        "api",
        "forwarder",
    }
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft: no ZooKeeper
    topic = services["kafka-init"]["command"]
    partitions = topic[topic.index("--partitions") + 1]
    for name in ("migrate", "redirect", "api", "forwarder"):
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["command"][0] in SCRIPTS
        assert service["environment"]["CLICK_TOPIC_PARTITIONS"] == partitions
        assert topic[topic.index("--topic") + 1] == service["environment"]["CLICK_TOPIC"]
    assert services["migrate"]["command"] == ["shortlink", "migrate"]
    for name in ("redirect", "api", "forwarder"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
        assert services[name]["restart"] == "unless-stopped"
    for name in ("postgres", "kafka", "redirect", "api", "forwarder"):
        assert services[name]["healthcheck"]["test"]


def test_kubernetes_base_validates_against_the_schemas() -> None:
    """Every resource of the kustomization validates strictly (unknown fields fail)."""
    documents = k8s_documents()
    for doc in documents:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    broken = yaml.safe_load((K8S / "api.yaml").read_text().split("---")[0])
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kubernetes_base_has_what_operations_need() -> None:
    """Redirect: /readyz, HPA on CPU; every Deployment a PDB and replicas spread over nodes;
    redirect and API leave the Service before they stop; limits everywhere; a migrate Job."""
    documents = k8s_documents()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in documents:
        by_kind.setdefault(doc["kind"], []).append(doc)
    deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
    assert set(deployments) == {"shortlink-redirect", "shortlink-api", "shortlink-forwarder"}
    redirect = deployments["shortlink-redirect"]
    [redirect_container] = pod_spec(redirect)["containers"]
    assert redirect_container["readinessProbe"]["httpGet"]["path"].split("?")[0] == "/readyz"
    [hpa] = by_kind["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "shortlink-redirect"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    budgets = by_kind["PodDisruptionBudget"]
    for deployment in deployments.values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        # A budget for every Deployment, so a node drain never takes all its pods at once.
        [_] = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        # Replicas spread over nodes: one node's death takes one replica.
        spec = pod_spec(deployment)
        [hostname] = [
            c
            for c in spec["topologySpreadConstraints"]
            if c["topologyKey"] == "kubernetes.io/hostname"
        ]
        assert hostname["labelSelector"]["matchLabels"].items() <= labels.items()
        preferred = spec["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ]
        assert preferred[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    for name in ("shortlink-redirect", "shortlink-api"):
        # Out of the Service before SIGTERM, so the load balancer stops sending first.
        [container] = pod_spec(deployments[name])["containers"]
        assert container["lifecycle"]["preStop"]["sleep"]["seconds"] >= 5
    [job] = by_kind["Job"]
    assert pod_spec(job)["containers"][0]["command"] == ["shortlink", "migrate"]
    config_maps = {c["metadata"]["name"] for c in by_kind["ConfigMap"]}
    for doc in [*deployments.values(), job]:
        assert pod_spec(doc)["securityContext"]["runAsNonRoot"] is True
        for container in pod_spec(doc)["containers"]:
            assert container["image"] == "shortlink"  # set by the kustomization's images
            assert container["command"][0] in SCRIPTS
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert {"cpu", "memory"} <= set(container["resources"]["limits"])
            refs = container["envFrom"]
            assert {r["configMapRef"]["name"] for r in refs if "configMapRef" in r} <= config_maps
            assert any(r.get("secretRef", {}).get("name") == "shortlink" for r in refs)


def test_every_setting_is_documented() -> None:
    """Every variable the code reads, the ConfigMap and the compose file set is a row of
    the settings table in docs/configuration.md."""
    reference = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", reference, flags=re.MULTILINE))
    source = "".join(
        path.read_text()
        for folder in ("shortlink", "forwarder")
        for path in (ROOT / folder).rglob("*.py")
    )
    read = set(
        re.findall(
            r'\.(?:text|optional_text|integer|number|duration|flag|choice|networks)\(\s*"([A-Z_]+)"',
            source,
        )
    )
    assert len(read) > 40
    assert read - documented == set()
    [config_map] = [d for d in k8s_documents() if d["kind"] == "ConfigMap"]
    used = set(config_map["data"])
    for service in compose_config()["services"].values():
        if service.get("build"):
            used |= set(service["environment"])
    used |= set(yaml.safe_load((K8S / "secret.example.yaml").read_text())["stringData"])
    assert used - documented == set()


def test_dashboard_queries_only_metrics_the_services_export() -> None:
    """Every metric the Grafana dashboard uses is one a service defines."""
    dashboard = orjson.loads((DEPLOY / "grafana-dashboard.json").read_bytes())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(expressions) >= 10
    source = "".join(
        path.read_text()
        for folder in ("shortlink", "forwarder")
        for path in (ROOT / folder).rglob("*.py")
    )
    defined = set(re.findall(r'"((?:shortlink|forwarder)_[a-z_]+)"', source))
    used = {
        re.sub(r"_(total|bucket|sum|count)$", "", name)
        for expr in expressions
        for name in re.findall(r"\b((?:shortlink|forwarder)_[a-z_]+)\b", expr)
    }
    assert used
    assert used <= defined, used - defined


TLS = DEPLOY / "k8s-tls"


def test_the_tls_overlay_validates_and_keeps_the_ask_endpoint_internal() -> None:
    """deploy/k8s-tls: Caddy's resources validate strictly; the public Service is Caddy's (80,
    443); the TLS ask port is a ClusterIP Service that only Caddy pods may reach; the
    overlay opens that port on the redirect pods through the ConfigMap."""
    documents = list(yaml.safe_load_all((TLS / "tls.yaml").read_text()))
    for doc in documents:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    kinds = {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}
    public = kinds["Service", "shortlink-caddy"]["spec"]
    assert public["type"] == "LoadBalancer"
    assert {port["port"] for port in public["ports"]} == {80, 443}
    ask = kinds["Service", "shortlink-tls-ask"]["spec"]
    assert ask["type"] == "ClusterIP"
    [ask_port] = ask["ports"]
    policy = kinds["NetworkPolicy", "shortlink-tls-ask"]["spec"]
    assert policy["podSelector"]["matchLabels"] == ask["selector"]
    reaching = [rule for rule in policy["ingress"] if {"port": ask_port["port"], "protocol": "TCP"}
                in rule["ports"]]  # fmt: skip
    assert [rule["from"] for rule in reaching] == [
        [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "shortlink-caddy"}}}]
    ]
    overlay = yaml.safe_load((TLS / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../k8s", "tls.yaml"]
    config_patch = yaml.safe_load(overlay["patches"][0]["patch"])
    set_values = {op["path"].rsplit("/", 1)[1]: op["value"] for op in config_patch}
    assert set_values["TLS_ASK_PORT"] == str(ask_port["port"])
    caddyfile = (TLS / "Caddyfile").read_text()
    assert f"ask http://shortlink-tls-ask:{ask_port['port']}/tls-ask" in caddyfile


def test_the_tls_overlays_caddyfile_is_one_caddy_accepts(tmp_path: Path) -> None:
    """`caddy adapt` reads deploy/k8s-tls/Caddyfile (make test installs caddy)."""
    result = subprocess.run(
        ["caddy", "adapt", "--config", str(TLS / "Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"ACME_EMAIL": "ops@example.com", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    adapted = orjson.loads(result.stdout)
    policies = adapted["apps"]["tls"]["automation"]
    assert policies["on_demand"]["ask"] == "http://shortlink-tls-ask:8082/tls-ask"


def test_the_tls_terminators_image_is_past_http2_rapid_reset() -> None:
    """Caddy's image is pinned at 2.7.5 or later (CVE-2023-44487, HTTP/2 rapid reset)."""
    documents = yaml.safe_load_all((TLS / "tls.yaml").read_text())
    [caddy] = [doc for doc in documents if doc["kind"] == "StatefulSet"]
    [container] = caddy["spec"]["template"]["spec"]["containers"]
    name, _, tag = container["image"].partition(":")
    assert name == "caddy"
    version = tuple(int(part) for part in tag.split("-")[0].split("."))
    # A minor-line tag (2.11) follows that line's patches: every 2.8+ line is past 2.7.5.
    assert version >= (2, 7, 5) if len(version) == 3 else version >= (2, 8), tag

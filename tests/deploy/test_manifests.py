"""Static checks of deploy/: the image, the Kubernetes manifests and the compose stack.

Only files are read (PyYAML); nothing needs a cluster or Docker. When ``kubectl`` is on
PATH, every kustomization is also rendered with ``kubectl kustomize`` and the rendered
objects go through the same checks as the files, plus the per-overlay replica counts.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from quorum.rpc import is_loopback
from quorum.settings import SERVICES, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
KUSTOMIZATIONS = {"base": K8S / "base", "dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod"}

SETTINGS_VARS = frozenset(f"QUORUM_{name.upper()}" for name in Settings.model_fields)
GRPC_PORTS = {"ingest": 50051, "tasking": 50052, "consensus": 50053, "payments": 50054, "access": 50055}
# The plaintext, health-only listener the kubelet's gRPC probes ask (they cannot speak TLS).
HEALTH_PORT = 50050
TLS_FILES = (
    "QUORUM_TLS_CERT_FILE",
    "QUORUM_TLS_KEY_FILE",
    "QUORUM_TLS_CLIENT_CA_FILE",
    "QUORUM_TLS_CA_FILE",
    "QUORUM_TLS_CLIENT_CERT_FILE",
    "QUORUM_TLS_CLIENT_KEY_FILE",
)
MUTUAL_TLS_FILES = ("QUORUM_TLS_CLIENT_CA_FILE", "QUORUM_TLS_CLIENT_CERT_FILE", "QUORUM_TLS_CLIENT_KEY_FILE")
TLS_SECRET = "quorum-tls"
MUTUAL_TLS_COMPONENT = K8S / "components" / "mutual-tls"
CREDENTIALS = {
    "QUORUM_DATABASE_URL",
    "QUORUM_ACCESS_DATABASE_URL",
    "QUORUM_REDIS_URL",
    "QUORUM_S3_ACCESS_KEY",
    "QUORUM_S3_SECRET_KEY",
    "QUORUM_MASTER_KEY",
    "QUORUM_PREVIOUS_MASTER_KEYS",
    "QUORUM_API_KEY_HASH_KEY",
    "QUORUM_PREVIOUS_API_KEY_HASH_KEYS",
}
NEEDS_S3 = {"ingest", "tasking"}
# The object store wraps data keys with it; access seals TOTP secrets with it.
NEEDS_MASTER_KEY = NEEDS_S3 | {"access"}
# Every service and the dashboard.
QUORUM_CONTAINERS = len(SERVICES) + 1
DASHBOARD_ARGS = ["dashboard", "--host", "0.0.0.0", "--port", "8501"]
# Third-party containers allowed a writable root; each manifest says why next to the flag.
WRITABLE_ROOT = {"kafka"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
KUBECTL = shutil.which("kubectl")


# --- loading -------------------------------------------------------------------------


def load_all(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def kustomization(directory: Path) -> dict[str, Any]:
    return load_all(directory / "kustomization.yaml")[0]


def read_env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


def resource_files() -> list[Path]:
    files = set()
    for directory in KUSTOMIZATIONS.values():
        for entry in kustomization(directory).get("resources", []):
            path = (directory / entry).resolve()
            if path.is_file():
                files.add(path)
    return sorted(files)


@cache
def objects_from_files() -> list[dict[str, Any]]:
    return [doc for path in resource_files() for doc in load_all(path)]


@cache
def rendered(name: str) -> list[dict[str, Any]]:
    return render(KUSTOMIZATIONS[name])


def render(directory: Path) -> list[dict[str, Any]]:
    if KUBECTL is None:
        pytest.skip("kubectl is not on PATH: the kustomizations are checked as files only")
    out = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {directory} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc is not None]


SOURCES = ["files", "base", "dev", "prod"]


@pytest.fixture(params=SOURCES)
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """The objects of every manifest file, then of each rendered kustomization."""
    return objects_from_files() if request.param == "files" else rendered(request.param)


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in WORKLOADS]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def containers_of(workload: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(``kind/name/container`` label, container, pod spec) for every container of a workload."""
    spec = pod_spec(workload)
    for container in spec.get("initContainers", []) + spec["containers"]:
        yield f"{workload['kind']}/{workload['metadata']['name']}/{container['name']}", container, spec


def all_containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for workload in workloads(objects):
        yield from containers_of(workload)


def is_quorum(container: dict[str, Any]) -> bool:
    """Runs the Quorum image (``quorum``, ``quorum:dev``, ``registry/x/quorum:0.1.0``)."""
    return container["image"].split(":")[0].rsplit("/", 1)[-1] == "quorum"


def probes(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: container[k] for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in container}


def config_map_keys(objects: list[dict[str, Any]]) -> set[str]:
    """Keys of the quorum-config ConfigMap: from the rendered object, or the env files."""
    maps = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("quorum-config")]
    if maps:
        return {key for m in maps for key in m.get("data", {})}
    return {key for d in KUSTOMIZATIONS.values() for key in config_env_values(d)}


def config_values(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The values of quorum-config: from the rendered object, or base/quorum.env for the files."""
    maps = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("quorum-config")]
    if maps:
        return {key: str(value) for m in maps for key, value in m.get("data", {}).items()}
    return config_env_values(KUSTOMIZATIONS["base"])


def image_env() -> dict[str, str]:
    """The QUORUM_* variables the image itself sets (its runtime stage's ENV)."""
    runtime = dockerfile_instructions()
    runtime = runtime[max(i for i, (kind, _) in enumerate(runtime) if kind == "FROM") :]
    env = {k: v for kind, a in runtime if kind == "ENV" for k, _, v in (p.partition("=") for p in shlex.split(a))}
    return {k: v for k, v in env.items() if k.startswith("QUORUM_")}


def serves_plaintext_off_loopback(env: dict[str, str]) -> bool:
    """Whether a process with ``env`` would listen beyond loopback without TLS."""
    off_loopback = not is_loopback(f"{env.get('QUORUM_BIND_HOST', '127.0.0.1')}:0")
    allowed = env.get("QUORUM_ALLOW_PLAINTEXT_OFF_LOOPBACK", "").lower() in ("1", "true", "yes", "on")
    return off_loopback and not allowed and not (env.get("QUORUM_TLS_CERT_FILE") and env.get("QUORUM_TLS_KEY_FILE"))


def under(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def config_env_values(directory: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for generator in kustomization(directory).get("configMapGenerator", []):
        if generator["name"] == "quorum-config":
            for env in generator.get("envs", []):
                values.update(read_env_file(directory / env))
    return values


# --- kustomize structure ---------------------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kustomization_references_exist(name: str) -> None:
    directory = KUSTOMIZATIONS[name]
    k = kustomization(directory)
    assert k["resources"], f"{name}: no resources"
    for entry in k["resources"]:
        path = directory / entry
        assert path.is_file() or (path / "kustomization.yaml").is_file(), f"{name}: missing resource {entry}"
    for generator in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        for entry in generator.get("envs", []) + generator.get("files", []):
            assert (directory / entry.split("=")[-1]).is_file(), f"{name}: missing generator input {entry}"
    for patch in k.get("patches", []):
        if "path" in patch:
            assert (directory / patch["path"]).is_file(), f"{name}: missing patch {patch['path']}"


def test_every_yaml_file_parses() -> None:
    files = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert files
    for path in files:
        assert load_all(path), f"{path} holds no document"


def test_every_manifest_file_is_a_complete_object() -> None:
    for obj in objects_from_files():
        assert {"apiVersion", "kind", "metadata"} <= obj.keys(), obj
        assert obj["metadata"].get("name"), obj


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kustomization_renders(name: str) -> None:
    assert any(o["kind"] == "Deployment" for o in rendered(name))


# --- every container ---------------------------------------------------------------------


def test_every_container_has_requests_and_limits(objects: list[dict[str, Any]]) -> None:
    for label, container, _ in all_containers(objects):
        resources = container.get("resources", {})
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                assert resources.get(bound, {}).get(resource), f"{label}: no {bound}.{resource}"


def test_every_pod_runs_as_non_root_and_restricted(objects: list[dict[str, Any]]) -> None:
    for label, container, spec in all_containers(objects):
        pod_sc, sc = spec.get("securityContext", {}), container.get("securityContext", {})
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, f"{label}: runAsNonRoot"
        assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, f"{label}: runs as uid 0"
        assert sc.get("allowPrivilegeEscalation") is False, f"{label}: allowPrivilegeEscalation"
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{label}: capabilities not dropped"
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
        assert seccomp.get("type") == "RuntimeDefault", f"{label}: no RuntimeDefault seccomp profile"
        assert spec.get("automountServiceAccountToken") is False, f"{label}: mounts an API token"


def test_root_filesystems_are_read_only(objects: list[dict[str, Any]]) -> None:
    for label, container, spec in all_containers(objects):
        read_only = container.get("securityContext", {}).get("readOnlyRootFilesystem")
        if container["name"] in WRITABLE_ROOT and not is_quorum(container):
            continue
        assert read_only is True, f"{label}: readOnlyRootFilesystem"
        if is_quorum(container):
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{label}: /tmp is not mounted"
            volume = next(v for v in spec["volumes"] if v["name"] == mounts["/tmp"])
            assert "emptyDir" in volume, f"{label}: /tmp is not an emptyDir"


def test_probe_ports_are_container_ports(objects: list[dict[str, Any]]) -> None:
    for label, container, _ in all_containers(objects):
        ports = container.get("ports", [])
        known = {p["containerPort"] for p in ports} | {p["name"] for p in ports if "name" in p}
        for kind, probe in probes(container).items():
            for handler in ("grpc", "httpGet", "tcpSocket"):
                if handler in probe:
                    assert probe[handler]["port"] in known, f"{label}: {kind} port is not a container port"


def test_services_target_container_ports(objects: list[dict[str, Any]]) -> None:
    for service in (o for o in objects if o["kind"] == "Service"):
        name = service["metadata"]["name"]
        selected = [
            w
            for w in workloads(objects)
            if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selected, f"Service {name} selects no workload"
        for port in service["spec"]["ports"]:
            targets = {
                value
                for w in selected
                for _, c, _ in containers_of(w)
                for p in c.get("ports", [])
                for value in (p["containerPort"], p.get("name"))
            }
            assert port.get("targetPort", port["port"]) in targets, f"Service {name}: bad targetPort"


# --- the Quorum containers -----------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_grpc_services_are_probed_on_their_health_port(objects: list[dict[str, Any]], service: str) -> None:
    port = GRPC_PORTS[service]
    deployment = find(objects, "Deployment", service)
    [(label, container, _)] = list(containers_of(deployment))
    assert is_quorum(container), f"{label}: not the quorum image"
    assert container.get("args") == ["serve", service], f"{label}: args"
    assert "command" not in container, f"{label}: overrides the quorum entrypoint"
    ports = {p["containerPort"] for p in container["ports"]}
    assert {port, HEALTH_PORT} <= ports, f"{label}: ports {sorted(ports)}"
    assert config_values(objects)["QUORUM_HEALTH_PORT"] == str(HEALTH_PORT)
    for kind in ("readinessProbe", "livenessProbe"):
        assert container[kind].get("grpc", {}).get("port") == HEALTH_PORT, f"{label}: {kind} is not gRPC health"
    startup = container.get("startupProbe")
    assert startup is None or startup["grpc"]["port"] == HEALTH_PORT, f"{label}: startupProbe port"
    svc = find(objects, "Service", service)
    assert [p["port"] for p in svc["spec"]["ports"]] == [port], f"Service {service}: port"


def check_tls_files_mounted(objects: list[dict[str, Any]]) -> int:
    """Every Quorum container listening beyond loopback has TLS, and every TLS file it is
    told about lies in a read-only mount of the Secret quorum-tls. Returns the number of
    containers checked."""
    quorum = [(label, c, spec) for label, c, spec in all_containers(objects) if is_quorum(c)]
    for label, container, spec in quorum:
        env = {**image_env(), **config_values(objects)}
        env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
        assert not serves_plaintext_off_loopback(env), f"{label}: plaintext gRPC on {env.get('QUORUM_BIND_HOST')}"
        secrets = {v["name"] for v in spec.get("volumes", []) if v.get("secret", {}).get("secretName") == TLS_SECRET}
        mounts = [m for m in container.get("volumeMounts", []) if m["name"] in secrets]
        for variable in TLS_FILES:
            if env.get(variable):
                mount = next((m for m in mounts if under(env[variable], m["mountPath"])), None)
                assert mount, f"{label}: {variable}={env[variable]} is not in a mount of the Secret {TLS_SECRET}"
                assert mount.get("readOnly") is True, f"{label}: {mount['mountPath']} is writable"
    return len(quorum)


def test_quorum_containers_serve_tls_off_loopback(objects: list[dict[str, Any]]) -> None:
    assert check_tls_files_mounted(objects) == QUORUM_CONTAINERS
    assert config_values(objects).keys() >= {"QUORUM_TLS_CERT_FILE", "QUORUM_TLS_KEY_FILE", "QUORUM_TLS_CA_FILE"}


def test_the_mutual_tls_component_turns_on_client_certificates(tmp_path: Path) -> None:
    # An overlay of prod with the component, as deploy/README.md describes it.
    relative = Path(os.path.relpath(K8S, tmp_path))
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [str(relative / "overlays" / "prod")],
                "components": [str(relative / MUTUAL_TLS_COMPONENT.relative_to(K8S))],
            }
        )
    )
    objects = render(tmp_path)
    values = config_values(objects)
    assert all(values.get(variable) for variable in MUTUAL_TLS_FILES), values
    assert check_tls_files_mounted(objects) == QUORUM_CONTAINERS


def test_quorum_containers_set_only_settings_variables(objects: list[dict[str, Any]]) -> None:
    quorum = [(label, c) for label, c, _ in all_containers(objects) if is_quorum(c)]
    assert len(quorum) == QUORUM_CONTAINERS, [label for label, _ in quorum]
    for label, container in quorum:
        names = {e["name"] for e in container.get("env", [])}
        assert names <= SETTINGS_VARS, f"{label}: not settings fields: {sorted(names - SETTINGS_VARS)}"
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"].startswith("quorum-config"), f"{label}: envFrom {source}"
    keys = config_map_keys(objects)
    assert keys, "no quorum-config values"
    assert keys <= SETTINGS_VARS, f"quorum-config: not settings fields: {sorted(keys - SETTINGS_VARS)}"
    assert not keys & CREDENTIALS, f"quorum-config holds credentials: {sorted(keys & CREDENTIALS)}"


@pytest.mark.parametrize("service", SERVICES)
def test_credentials_come_from_the_secret(objects: list[dict[str, Any]], service: str) -> None:
    [(label, container, _)] = list(containers_of(find(objects, "Deployment", service)))
    env = {e["name"]: e for e in container.get("env", [])}
    # Rate limits per API key are shared through Redis by every service, and every service
    # checks API keys, which needs the hashing key.
    expected = {"QUORUM_DATABASE_URL", "QUORUM_ACCESS_DATABASE_URL", "QUORUM_REDIS_URL", "QUORUM_API_KEY_HASH_KEY"}
    expected |= {"QUORUM_S3_ACCESS_KEY", "QUORUM_S3_SECRET_KEY"} if service in NEEDS_S3 else set()
    expected |= {"QUORUM_MASTER_KEY"} if service in NEEDS_MASTER_KEY else set()
    assert expected <= env.keys(), f"{label}: missing {sorted(expected - env.keys())}"
    assert ("QUORUM_MASTER_KEY" in env) == (service in NEEDS_MASTER_KEY), f"{label}: QUORUM_MASTER_KEY"
    for name in CREDENTIALS & env.keys():
        ref = env[name].get("valueFrom", {}).get("secretKeyRef")
        assert ref and "value" not in env[name], f"{label}: {name} is not read from a Secret"
        assert ref["name"].startswith("quorum-credentials"), f"{label}: {name} from {ref['name']}"
    secret_key = {name: env[name]["valueFrom"]["secretKeyRef"]["key"] for name in CREDENTIALS & env.keys()}
    assert secret_key["QUORUM_DATABASE_URL"] == f"{service}-database-url", f"{label}: shares another's database"
    # Unset, the keys would be looked up in the service's own database, where there are none.
    assert secret_key["QUORUM_ACCESS_DATABASE_URL"] == "access-database-url", f"{label}: API keys"
    assert secret_key["QUORUM_REDIS_URL"] == "redis-url", f"{label}: rate limits"
    # A key hashed by access must verify on every service: one hashing key for all of them.
    assert secret_key["QUORUM_API_KEY_HASH_KEY"] == "api-key-hash-key", f"{label}: a hashing key of its own"
    assert secret_key["QUORUM_PREVIOUS_API_KEY_HASH_KEYS"] == "previous-api-key-hash-keys", f"{label}: rotation"
    assert env["QUORUM_PREVIOUS_API_KEY_HASH_KEYS"]["valueFrom"]["secretKeyRef"].get("optional") is True
    if "QUORUM_MASTER_KEY" in env:
        # TOTP secrets and stored objects must all open with the one key of the deployment.
        assert secret_key["QUORUM_MASTER_KEY"] == "master-key", f"{label}: a master key of its own"
        assert secret_key["QUORUM_PREVIOUS_MASTER_KEYS"] == "previous-master-keys", f"{label}: rotation"


def required_secret_keys(objects: list[dict[str, Any]], *, quorum_only: bool = False) -> set[str]:
    """The keys of quorum-credentials that some container (of the Quorum image) cannot start without."""
    return {
        ref["key"]
        for _, container, _ in all_containers(objects)
        if is_quorum(container) or not quorum_only
        for e in container.get("env", [])
        for ref in [e.get("valueFrom", {}).get("secretKeyRef")]
        if ref and ref["name"].startswith("quorum-credentials") and not ref.get("optional")
    }


def test_dev_secret_holds_every_credential_the_pods_read() -> None:
    objects = rendered("dev")
    [secret] = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].startswith("quorum-credentials")]
    needed = required_secret_keys(objects)
    assert {"access-database-url", "redis-url", "master-key", "api-key-hash-key"} <= needed
    assert needed <= secret["data"].keys(), f"dev quorum-credentials lacks {sorted(needed - secret['data'].keys())}"


def test_readme_creates_every_credential_the_quorum_pods_read() -> None:
    # Prod provides its own PostgreSQL, so only the Quorum containers' keys go into its Secret.
    readme = (DEPLOY / "README.md").read_text()
    needed = required_secret_keys(objects_from_files(), quorum_only=True)
    assert "access-database-url" in needed
    missing = sorted(key for key in needed if f"--from-literal={key}=" not in readme)
    assert not missing, f"deploy/README.md's quorum-credentials command lacks {missing}"


def test_dashboard_reads_only_service_addresses(objects: list[dict[str, Any]]) -> None:
    [(label, container, _)] = list(containers_of(find(objects, "Deployment", "dashboard")))
    assert is_quorum(container)
    assert "command" not in container, f"{label}: the image's entrypoint is quorum"
    assert container["args"] == DASHBOARD_ARGS, f"{label}: args"
    assert not container.get("env"), f"{label}: the dashboard needs no credentials"


def test_addresses_name_the_services() -> None:
    values = config_env_values(KUSTOMIZATIONS["base"])
    for service, port in GRPC_PORTS.items():
        assert values[f"QUORUM_{service.upper()}_ADDR"] == f"{service}:{port}"
        find(objects_from_files(), "Service", service)
    assert values["QUORUM_BIND_HOST"] == "0.0.0.0"
    for directory in KUSTOMIZATIONS.values():
        assert config_env_values(directory).keys() <= SETTINGS_VARS, directory


def test_tasking_is_autoscaled() -> None:
    hpa = find(objects_from_files(), "HorizontalPodAutoscaler", "tasking")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "tasking"}
    assert "replicas" not in find(objects_from_files(), "Deployment", "tasking")["spec"], (
        "tasking's Deployment sets replicas, which every apply would reset under its autoscaler"
    )


@pytest.mark.parametrize(
    ("overlay", "replicas", "tasking_bounds"),
    [
        ("dev", {"ingest": 1, "consensus": 1, "payments": 1, "access": 1, "dashboard": 1}, (1, 1)),
        ("prod", {"ingest": 2, "consensus": 2, "payments": 2, "access": 2, "dashboard": 1}, (3, 12)),
    ],
)
def test_overlay_replicas(overlay: str, replicas: dict[str, int], tasking_bounds: tuple[int, int]) -> None:
    objects = rendered(overlay)
    for name, count in replicas.items():
        assert find(objects, "Deployment", name)["spec"]["replicas"] == count, f"{overlay}: {name}"
    hpa = find(objects, "HorizontalPodAutoscaler", "tasking")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == tasking_bounds
    namespace = {"dev": "quorum-dev", "prod": "quorum"}[overlay]
    find(objects, "Namespace", namespace)
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {namespace}


def test_prod_drains_take_one_pod_of_each_service_at_a_time() -> None:
    objects = rendered("prod")
    for service in SERVICES:
        budget = find(objects, "PodDisruptionBudget", service)["spec"]
        assert budget["maxUnavailable"] == 1, service
        assert budget["selector"]["matchLabels"] == {"app.kubernetes.io/name": service}, service


def test_prod_partitions_cover_tasking_replicas() -> None:
    objects = rendered("prod")
    config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("quorum-config"))
    hpa = find(objects, "HorizontalPodAutoscaler", "tasking")["spec"]
    assert int(config["data"]["QUORUM_KAFKA_PARTITIONS"]) >= hpa["maxReplicas"]


# --- dev backing services and compose -----------------------------------------------------


def test_postgres_init_scripts_agree() -> None:
    script = (DEPLOY / "postgres" / "init.sql").read_text()
    assert (KUSTOMIZATIONS["dev"] / "postgres-init.sql").read_text() == script
    for service in SERVICES:
        assert f"CREATE DATABASE quorum_{service};" in script


@cache
def compose() -> dict[str, Any]:
    return load_all(DEPLOY / "compose.yaml")[0]


def test_compose_runs_the_distributed_stack() -> None:
    services = compose()["services"]
    assert {"kafka", "postgres", "redis", "minio", "dashboard", *SERVICES} <= services.keys()
    for name, service in services.items():
        image = service["image"]
        tag = image.rsplit(":", 1)[-1] if ":" in image.split("/")[-1] else ""
        assert tag and tag != "latest", f"{name}: image {image} is not pinned"
        if service.get("restart") != "no":
            assert service.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"], "Kafka is not in KRaft mode"
    volumes = services["postgres"]["volumes"]
    assert any(v.startswith("./postgres/init.sql:/docker-entrypoint-initdb.d/") for v in volumes)


@pytest.mark.parametrize("service", SERVICES)
def test_compose_services(service: str) -> None:
    spec = compose()["services"][service]
    port = GRPC_PORTS[service]
    env = spec["environment"]
    assert spec["command"] == ["serve", service]
    assert set(env) <= SETTINGS_VARS, sorted(set(env) - SETTINGS_VARS)
    assert env["QUORUM_DATABASE_URL"].endswith(f"@postgres:5432/quorum_{service}")
    assert env[f"QUORUM_{service.upper()}_ADDR"] == f"{service}:{port}"
    assert env["QUORUM_BIND_HOST"] == "0.0.0.0"
    assert env["QUORUM_ACCESS_DATABASE_URL"].endswith("@postgres:5432/quorum_access")
    assert env["QUORUM_REDIS_URL"] == "redis://redis:6379/0"
    assert ("QUORUM_S3_ACCESS_KEY" in env) == (service in NEEDS_S3)
    assert ("QUORUM_MASTER_KEY" in env) == (service in NEEDS_MASTER_KEY)
    assert env["QUORUM_API_KEY_HASH_KEY"] == compose()["services"]["access"]["environment"]["QUORUM_API_KEY_HASH_KEY"]
    assert "QUORUM_PREVIOUS_API_KEY_HASH_KEYS" in env
    healthcheck = " ".join(spec["healthcheck"]["test"])
    assert f"'127.0.0.1:{port}'" in healthcheck
    assert "tls=client_tls(Settings())" in healthcheck, f"{service}: the healthcheck does not dial TLS"
    assert spec["read_only"] is True and "/tmp" in spec["tmpfs"]
    assert f"127.0.0.1:{port}:{port}" in spec["ports"]
    for dependency in ("kafka", "postgres", "redis"):
        assert spec["depends_on"][dependency]["condition"] == "service_healthy"


def test_compose_dashboard() -> None:
    spec = compose()["services"]["dashboard"]
    assert "entrypoint" not in spec and spec["command"] == DASHBOARD_ARGS
    addresses = {f"QUORUM_{s.upper()}_ADDR" for s in SERVICES}
    assert addresses <= set(spec["environment"]) <= addresses | set(TLS_FILES)


def test_compose_serves_tls_off_loopback() -> None:
    quorum = {
        name: spec
        for name, spec in compose()["services"].items()
        if spec.get("command", [""])[0] in ("serve", "dashboard")
    }
    assert len(quorum) == QUORUM_CONTAINERS, sorted(quorum)
    for name, spec in quorum.items():
        env = {**image_env(), **{k: str(v) for k, v in spec["environment"].items()}}
        assert not serves_plaintext_off_loopback(env), f"{name}: plaintext gRPC on {env.get('QUORUM_BIND_HOST')}"
        assert env.get("QUORUM_TLS_CA_FILE"), f"{name}: does not dial its peers over TLS"
        targets = [v.split(":")[1] for v in spec.get("volumes", []) if v.endswith(":ro")]
        for variable in TLS_FILES:
            if env.get(variable):
                assert any(under(env[variable], t) for t in targets), f"{name}: {variable} is not in a read-only volume"


def test_compose_healthcheck_helper_exists() -> None:
    from quorum.rpc import wait_healthy

    assert callable(wait_healthy)


# --- the image -------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile() -> None:
    instructions = dockerfile_instructions()
    arg_defaults = dict(a.split("=", 1) for kind, a in instructions if kind == "ARG" and "=" in a)
    stages = [a for kind, a in instructions if kind == "FROM"]
    assert len(stages) >= 2, "not a multi-stage build"
    base = arg_defaults["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), f"base image {base} is not a pinned 3.11 slim"
    assert (ROOT / "dashboard" / "app.py").is_file()

    runtime = instructions[max(i for i, (kind, _) in enumerate(instructions) if kind == "FROM") :]
    users = [a for kind, a in runtime if kind == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}, "the runtime stage runs as root"
    assert ("ENTRYPOINT", '["quorum"]') in runtime
    env = {k: v for kind, a in runtime if kind == "ENV" for k, _, v in (p.partition("=") for p in shlex.split(a))}
    assert env["HOME"].startswith("/tmp") and env["QUORUM_HOME"].startswith("/tmp/")
    quorum_vars = {k for k in env if k.startswith("QUORUM_")}
    assert quorum_vars <= SETTINGS_VARS, sorted(quorum_vars - SETTINGS_VARS)


def test_requirements_pin_every_runtime_dependency() -> None:
    pins: dict[str, str] = {}
    for line in (DEPLOY / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"requirements.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version.strip()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is a dependency but not pinned in deploy/requirements.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} ∉ {spec}"
        for extra in requirement.extras:
            # The extras' own requirements must be pinned as well (psycopg[binary] -> psycopg-binary).
            for dep in map(Requirement, metadata.requires(requirement.name) or []):
                if dep.marker and dep.marker.evaluate({"extra": extra}) and not dep.marker.evaluate({"extra": ""}):
                    assert canonicalize_name(dep.name) in pins, f"{dep.name} ({requirement.name}[{extra}])"


def test_readme_documents_every_setting() -> None:
    readme = (DEPLOY / "README.md").read_text()
    missing = sorted(var for var in SETTINGS_VARS if f"`{var}`" not in readme)
    assert not missing, f"deploy/README.md does not document {missing}"

"""Writes each chart's values.schema.json from its values.yaml: types and nesting
come from the defaults (unknown keys are rejected, so a misspelt value fails
`helm lint`), free-form maps stay open, and a few constraints are added (replica
and port ranges, enums). Run after changing a values.yaml and review the diff:

    target/deploy-tools/venv/bin/python scripts/deploy/values_schema.py helm/godel-scheduler …
"""

import json
import pathlib
import sys

import yaml

# Maps whose keys are the user's (labels, config sections, resource names …).
FREE_FORM = {
    "config", "annotations", "labels", "podAnnotations", "nodeSelector", "extraEnv", "extraEnvTpl", "env",
    "secretStoreRef", "resourceQuota", "monitoringNamespaceSelector", "controllerNamespaceSelector",
    "defaultRequest", "default", "max", "requests", "limits", "external",
}
DESCRIPTIONS = {
    "replicaCount": "Replicas when autoscaling is off (at least 3 in production).",
    "config": "The service's configuration file (TOML), as a map: see `--dump-config` of the binary for every key.",
    "secrets": "Credentials: `env` maps GODEL_* variables to keys of `existingSecret` "
               "(or of the Secret the ExternalSecret creates).",
    "migrations": "The pre-install/pre-upgrade Job that applies database migrations before pods roll.",
    "networkPolicy": "Allowed flows: ingress from the listed Godel components (gRPC) and monitoring (HTTP); "
                     "egress to the listed components and external dependencies.",
    "server": "Shutdown timing: the service's `server.shutdown_grace` and `server.drain_delay`.",
    "lifecycle": "preStop pause before SIGTERM and the margin added to terminationGracePeriodSeconds.",
    "autoscaling": "HorizontalPodAutoscaler on CPU and memory, plus optional custom metrics "
                   "(autoscaling/v2 metric specs).",
    "global": "Shared by every Godel chart (the umbrella passes it down).",
    "kek": "The Secret holding the orchestrator key-encryption key (key `kek`, 32 random bytes).",
    "image": "Container image: registry/repository:tag, or @digest when set.",
}
SERVICE_CHARTS = ("godel-scheduler", "godel-orchestrator", "godel-auth", "godel-audit", "godel-gateway")


def infer(value, key=None) -> dict:
    """The schema of a default value: its type, and for maps their keys."""
    if isinstance(value, bool):
        schema = {"type": "boolean"}
    elif isinstance(value, int):
        schema = {"type": "integer"}
    elif isinstance(value, float):
        schema = {"type": "number"}
    elif isinstance(value, str):
        schema = {"type": "string"}
    elif isinstance(value, list):
        schema = {"type": "array"}
    elif isinstance(value, dict) and key not in FREE_FORM:
        schema = {"type": "object", "properties": {k: infer(v, k) for k, v in value.items()},
                  "additionalProperties": False}
    else:
        schema = {"type": "object"}
    if key in DESCRIPTIONS:
        schema["description"] = DESCRIPTIONS[key]
    return schema


def chart_schema(chart: pathlib.Path) -> dict:
    values = yaml.safe_load((chart / "values.yaml").read_text())
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "title": f"Values of the {chart.name} chart",
              **infer(values)}
    props = schema["properties"]
    if "replicaCount" in props:
        props["replicaCount"]["minimum"] = 1
    if "image" in props:
        props["image"]["properties"]["pullPolicy"]["enum"] = ["Always", "IfNotPresent", "Never"]
    for port in props.get("ports", {}).get("properties", {}).values():
        port.update(minimum=1, maximum=65535)
    if "autoscaling" in props:
        for bound in ("minReplicas", "maxReplicas"):
            props["autoscaling"]["properties"][bound]["minimum"] = 1
    for seconds in props.get("server", {}).get("properties", {}).values():
        seconds["minimum"] = 0
    if "component" in props:
        props["component"]["enum"] = ["scheduler", "orchestrator", "auth", "audit", "gateway"]
        props["enabled"] = {"type": "boolean",
                            "description": "Read by the umbrella chart: whether this service is installed."}
        props["godel-service"] = {"type": "object", "description": "Values of the shared template library (none)."}
        props["migrations"]["properties"]["env"]["additionalProperties"] = {"type": "string"}
    if "global" in props:
        # Subcharts receive the umbrella's global too; keep it open to keys added later.
        props["global"]["additionalProperties"] = True
    for name in SERVICE_CHARTS:
        if name in props:
            props[name] = {"type": "object",
                           "description": f"Values of the {name} chart (its own values.schema.json applies).",
                           "properties": {"enabled": {"type": "boolean"}}}
    return schema


def main() -> None:
    for path in sys.argv[1:]:
        chart = pathlib.Path(path)
        (chart / "values.schema.json").write_text(json.dumps(chart_schema(chart), indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Lints and renders every Godel Helm chart with its default values and with the
production example (the umbrella also with the in-cluster example), writing each rendering to OUT/<chart>-<values>.yaml for the
schema and policy checks that follow, then packages the umbrella chart and renders
the archive. Exits non-zero on any lint error or render failure. Usage: helm_check.py HELM_DIR OUT_DIR"""

import pathlib
import sys

import helm_python
import yaml

CHARTS = ["godel-scheduler", "godel-orchestrator", "godel-auth", "godel-audit", "godel-gateway", "godel"]
KUBE_VERSION = "1.33.0"


def render(chart_dir: pathlib.Path, values: dict, install: bool) -> str:
    chart = helm_python.Chart.load(str(chart_dir))
    try:
        files = chart.render(values, name="godel", namespace="godel", is_install=install, is_upgrade=not install)
    finally:
        chart.close()
    docs = []
    for path, text in sorted(files.items()):
        if not path.endswith((".yaml", ".yml")) or not text.strip():
            continue
        docs.append(f"# Source: {path}\n{text.strip()}")
    return "\n---\n".join(docs) + "\n"


def section(values: dict, chart: str) -> dict:
    """The umbrella's values as given, or a service chart's section plus `global`."""
    if chart == "godel":
        return values
    return {**values.get(chart, {}), "global": values.get("global", {})}


def main() -> int:
    helm_dir, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    production = yaml.safe_load((helm_dir / "examples" / "values-production.yaml").read_text())
    in_cluster = yaml.safe_load((helm_dir / "examples" / "values-in-cluster.yaml").read_text())
    failures = 0
    for name in CHARTS:
        chart_dir = helm_dir / name
        cases = [("default", {}), ("production", section(production, name))]
        if name == "godel":
            cases.append(("in-cluster", in_cluster))
        for label, values in cases:
            try:
                result = helm_python.lint(str(chart_dir), values, strict=True, namespace="godel",
                                          with_subcharts=True, kube_version=KUBE_VERSION)
            except helm_python.HelmError as err:
                print(f"FAIL lint {name} ({label}): {err}")
                failures += 1
                continue
            # Helm's severities: 1 info, 2 warning, 3 error; strict mode fails on warnings.
            messages = [m for m in result.get("messages") or [] if m.get("severity", 3) >= 2]
            for m in messages:
                print(f"FAIL lint {name} ({label}): {m}")
            failures += len(messages)
            try:
                text = render(chart_dir, values, install=True)
            except helm_python.HelmError as err:
                print(f"FAIL render {name} ({label}): {err}")
                failures += 1
                continue
            list(yaml.safe_load_all(text))
            (out / f"{name}-{label}.yaml").write_text(text)
            print(f"ok   {name} ({label}): lint clean, {text.count(chr(10) + 'kind: ')} objects rendered")
    # The release packages the charts (links resolved into the archives): the packaged
    # umbrella must render as the directory does.
    try:
        archive = helm_python.package(str(helm_dir / "godel"), destination=str(out.parent / "packages"))
        chart = helm_python.Chart.load_archive(pathlib.Path(archive).read_bytes())
        try:
            files = chart.render({}, name="godel", namespace="godel", is_install=True)
        finally:
            chart.close()
        print(f"ok   packaged {pathlib.Path(archive).name}: renders {len(files)} templates")
    except helm_python.HelmError as err:
        print(f"FAIL package godel: {err}")
        failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

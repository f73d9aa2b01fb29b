"""Checks that the configuration the charts render is accepted by the real service
binaries: for each Deployment in a rendering, takes its ConfigMap's config.toml and
its GODEL_* environment (secret references replaced by placeholder values of the
right shape) and runs `<binary> --config FILE --dump-config`, which loads every
layer exactly as the pod would and rejects unknown keys and wrong types.

Usage: config_check.py BIN_DIR RENDERED.yaml...
"""

import pathlib
import subprocess
import sys
import tempfile

import yaml

PLACEHOLDERS = {
    "GODEL_DATABASE__URL": "postgres://godel@db.example:5432/godel",
    "GODEL_CACHE__URL": "redis://cache.example:6379",
}


def main() -> int:
    bin_dir = pathlib.Path(sys.argv[1])
    failures = checked = 0
    for rendered in sys.argv[2:]:
        docs = [d for d in yaml.safe_load_all(pathlib.Path(rendered).read_text()) if d]
        configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
        for dep in (d for d in docs if d["kind"] == "Deployment"):
            pod = dep["spec"]["template"]["spec"]
            container = pod["containers"][0]
            binary = pathlib.Path(container["image"].split("@")[0].rsplit(":", 1)[0]).name
            config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
            toml = configmaps[config_volume["configMap"]["name"]]["data"]["config.toml"]
            env = {"PATH": "/usr/bin:/bin", "POD_IP": "10.0.0.1"}
            for var in container.get("env", []):
                if "value" in var:
                    env[var["name"]] = var["value"].replace("$(POD_IP)", env["POD_IP"])
                elif var["name"].startswith("GODEL_"):
                    env[var["name"]] = PLACEHOLDERS.get(var["name"], "placeholder-secret-value")
            with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
                f.write(toml)
                f.flush()
                result = subprocess.run([str(bin_dir / binary), "--config", f.name, "--dump-config"],
                                        env=env, capture_output=True, text=True)
            checked += 1
            where = f"{pathlib.Path(rendered).name}: {dep['metadata']['name']}"
            if result.returncode != 0:
                failures += 1
                print(f"FAIL config {where}: {binary} rejected it: {result.stderr.strip()}")
            else:
                print(f"ok   config {where}: accepted by {binary}")
    return 1 if failures or not checked else 0


if __name__ == "__main__":
    sys.exit(main())

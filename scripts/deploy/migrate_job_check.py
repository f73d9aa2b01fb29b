"""Runs each chart's migration hook Job the way Kubernetes would, on this machine:
the `migrate` container (the service binary with the Job's config and environment)
and the `wait-and-stop` container (its shell script under busybox, sharing the
process namespace as `shareProcessNamespace` gives it), against a fresh PostgreSQL
database and the local NATS. Both must exit 0 and the service's schema must exist
afterwards. Then the failure path: with the database unreachable the binary exits
non-zero and the waiter must exit non-zero too, so the Job — and the helm upgrade —
fails.

Usage: migrate_job_check.py BIN_DIR RENDERED.yaml WORK_DIR
"""

import os
import pathlib
import shutil
import subprocess
import sys
import time
import uuid

import yaml

PG = "postgres://postgres@127.0.0.1:5432"
TIMEOUT = 180


def psql(db: str, sql: str) -> str:
    return subprocess.run(["psql", "-At", "-v", "ON_ERROR_STOP=1", f"{PG}/{db}", "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def local_paths(text: str, root: pathlib.Path) -> str:
    return text.replace("/var/lib/godel", str(root / "var-lib")).replace("/var/run/godel", str(root / "var-run"))


def run_job(job: dict, configs: dict, bin_dir: pathlib.Path, busybox: pathlib.Path, work: pathlib.Path,
            database_url: str) -> tuple[int, int, str]:
    pod = job["spec"]["template"]["spec"]
    migrate = next(c for c in pod["containers"] if c["name"] == "migrate")
    waiter = next(c for c in pod["containers"] if c["name"] == "wait-and-stop")
    binary = pathlib.Path(migrate["image"].split("@")[0].rsplit(":", 1)[0]).name
    root = work / binary
    shutil.rmtree(root, ignore_errors=True)
    (root / "var-run" / "kek").mkdir(parents=True)
    (root / "var-lib").mkdir()
    (root / "var-run" / "kek" / "kek").write_bytes(os.urandom(32))
    config_map = next(v for v in pod["volumes"] if v["name"] == "config")["configMap"]["name"]
    (root / "config.toml").write_text(local_paths(configs[config_map], root))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(root)}
    for var in migrate.get("env", []):
        if "value" in var:
            env[var["name"]] = local_paths(var["value"], root)
    env.pop("GODEL_TELEMETRY__OTLP_ENDPOINT", None)
    env.update(GODEL_DATABASE__URL=database_url, GODEL_BUS__URL="nats://127.0.0.1:4222")
    args = [a.replace("/etc/godel/config.toml", str(root / "config.toml")) for a in migrate.get("args", [])]
    # The waiter's image is busybox: give its script busybox's applets.
    tools = root / "bin"
    tools.mkdir()
    for applet in ("wget", "pidof", "sleep"):
        (tools / applet).symlink_to(busybox)
    script = waiter["command"][-1]
    log = open(root / "job.log", "w")
    service = subprocess.Popen([str(bin_dir / binary), *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    wait = subprocess.Popen([str(busybox), "sh", "-c", script], env={"PATH": str(tools)},
                            stdout=log, stderr=subprocess.STDOUT)
    end = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < end and (service.poll() is None or wait.poll() is None):
            time.sleep(0.2)
    finally:
        for p in (service, wait):
            if p.poll() is None:
                p.kill()
                p.wait()
    log.close()
    return service.returncode, wait.returncode, (root / "job.log").read_text()


def main() -> int:
    bin_dir, rendered, work = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
    busybox = shutil.which("busybox")
    if not busybox:
        print("FAIL migrate jobs: busybox is not installed")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    configs = {d["metadata"]["name"]: d["data"]["config.toml"] for d in docs
               if d["kind"] == "ConfigMap" and "config.toml" in d.get("data", {})}
    jobs = [d for d in docs if d["kind"] == "Job" and d["metadata"]["name"].endswith("-migrate")]
    failures = 0
    for job in jobs:
        name = job["metadata"]["name"]
        schema = name.removeprefix("godel-").removesuffix("-migrate")
        db = f"godel_migrate_{uuid.uuid4().hex[:12]}"
        psql("postgres", f"CREATE DATABASE {db}")
        try:
            svc_rc, wait_rc, log = run_job(job, configs, bin_dir, pathlib.Path(busybox), work, f"{PG}/{db}")
            tables = psql(db, f"SELECT count(*) FROM information_schema.tables WHERE table_schema = '{schema}'")
            if svc_rc == 0 and wait_rc == 0 and int(tables) > 0:
                print(f"ok   {name}: migrated ({tables} tables in schema {schema}), stopped cleanly")
            else:
                failures += 1
                print(f"FAIL {name}: service exit {svc_rc}, waiter exit {wait_rc}, {tables} tables in {schema}\n{log[-3000:]}")
        finally:
            psql("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    # Failure path: nothing listens on port 1, so the migration cannot run.
    job = next(j for j in jobs if j["metadata"]["name"] == "godel-scheduler-migrate")
    svc_rc, wait_rc, log = run_job(job, configs, bin_dir, pathlib.Path(busybox), work,
                                   "postgres://postgres@127.0.0.1:1/none")
    if svc_rc not in (0, None) and wait_rc not in (0, None):
        print(f"ok   failing migration fails the Job (service exit {svc_rc}, waiter exit {wait_rc})")
    else:
        failures += 1
        print(f"FAIL failing migration: service exit {svc_rc}, waiter exit {wait_rc}\n{log[-3000:]}")
    return 1 if failures or not jobs else 0


if __name__ == "__main__":
    sys.exit(main())

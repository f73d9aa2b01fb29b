"""A real Prometheus scrapes a running `godel up`, and every dashboard query returns
series.

Starts `godel up --base-port 0` on a fresh data directory, submits a few tasks to
its scheduler over gRPC (so the queue, dispatch and outbox metrics exist), runs the
Debian `prometheus` binary scraping every service's /metrics (jobs named like the
Kubernetes ServiceMonitors: godel-<service>), waits until the scrapes carry the
dispatch metrics, then evaluates every expression of every dashboard in
deploy/observability/dashboards through the Prometheus HTTP API. Expressions over
metrics that come from cluster exporters (ingress controller, kubelet) cannot have
series here and are listed as such; every other expression must return at least
one series. Exits non-zero otherwise.

Usage: prometheus_check.py GODEL_BINARY DASHBOARD_DIR WORK_DIR
"""

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Metrics that only cluster components export (not Godel): no series under `godel up`.
CLUSTER_METRICS = ("nginx_ingress_controller_", "container_", "kube_", "certmanager_")
BANNER = re.compile(r"^\s+(gateway|auth|scheduler|orchestrator|audit)\s+http://(\S+)\s+grpc (\S+)")
DEADLINE = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def eventually(what: str, check, timeout: float = DEADLINE):
    """Polls `check` until it returns a truthy value or the deadline passes."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise SystemExit(f"FAIL prometheus: timed out waiting for {what}")
        time.sleep(0.5)


def start_godel(binary: str, work: pathlib.Path) -> tuple[subprocess.Popen, dict]:
    log = open(work / "godel-up.log", "w")
    proc = subprocess.Popen(
        [binary, "up", "--base-port", "0", "--data-dir", str(work / "data")],
        stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    services: dict = {}
    end = time.monotonic() + DEADLINE
    for line in proc.stdout:
        m = BANNER.match(line)
        if m:
            services[m.group(1)] = {"http": m.group(2), "grpc": m.group(3)}
        if len(services) == 5 or time.monotonic() > end:
            break
    if len(services) != 5:
        proc.kill()
        raise SystemExit(f"FAIL prometheus: godel up did not print its five services (see {work}/godel-up.log)")
    # Keep draining stdout so the process never blocks on a full pipe.
    subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
    return proc, services


class TaskFeeder(threading.Thread):
    """Submits batches of tasks until stopped, so some stay queued long enough for the
    scheduler's periodic queue gauges (every `queue.metrics_interval`) to see them,
    however fast the local orchestrator drains them."""

    def __init__(self, grpc_addr: str, work: pathlib.Path):
        super().__init__(daemon=True)
        self.stub, self.pb = scheduler_stub(grpc_addr, work)
        self.team = f"team_{uuid.uuid4()}"
        self.stop = threading.Event()
        self.error: Exception | None = None
        self.submitted = 0

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                tasks = [self.pb.TaskSpec(task_type="metrics.check", payload_json=json.dumps({"n": self.submitted + i}),
                                          max_attempts=1) for i in range(500)]
                self.stub.SubmitTasks(self.pb.SubmitTasksRequest(team_id=self.team, tasks=tasks), timeout=30)
                self.submitted += len(tasks)
                self.stop.wait(0.5)
        except Exception as err:  # reported by the main thread
            self.error = err


def scheduler_stub(grpc_addr: str, work: pathlib.Path):
    import grpc
    from grpc_tools import protoc
    import importlib.resources

    out = work / "proto_py"
    out.mkdir(exist_ok=True)
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    files = ["godel/common/v1/common.proto", "godel/scheduler/v1/scheduler.proto"]
    rc = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{well_known}", f"--python_out={out}",
                      f"--grpc_python_out={out}", *files])
    if rc != 0:
        raise SystemExit("FAIL prometheus: cannot compile the scheduler proto")
    sys.path.insert(0, str(out))
    from godel.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc  # noqa: E402

    return scheduler_pb2_grpc.SchedulerServiceStub(grpc.insecure_channel(grpc_addr)), scheduler_pb2


def query(prom: str, expr: str) -> list:
    url = f"http://{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise SystemExit(f"FAIL prometheus: query failed: {expr}: {body}")
    return body["data"]["result"]


def dashboard_queries(directory: pathlib.Path):
    for path in sorted(directory.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                yield path.name, panel["title"], target["expr"]


def main() -> int:
    binary, dashboards, work = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    godel, services = start_godel(binary, work)
    prometheus = None
    try:
        feeder = TaskFeeder(services["scheduler"]["grpc"], work)
        feeder.start()
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": f"godel-{name}",
                                      "static_configs": [{"targets": [addr["http"]]}]}
                                     for name, addr in services.items()]}
        (work / "prometheus.yml").write_text(json.dumps(config))
        check = subprocess.run(["promtool", "check", "config", str(work / "prometheus.yml")],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise SystemExit(f"FAIL prometheus: generated config rejected: {check.stdout}{check.stderr}")
        prom = f"127.0.0.1:{free_port()}"
        prometheus = subprocess.Popen(
            ["prometheus", f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}",
             f"--web.listen-address={prom}"],
            stdout=open(work / "prometheus.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
        eventually("every godel job to be up",
                   lambda: _ready(prom) and len([r for r in query(prom, 'up{job=~"godel-.*"} == 1')]) == 5)
        # Queued work and dispatches were scraped at least twice, so rates have two samples.
        def fed() -> bool:
            if feeder.error:
                raise SystemExit(f"FAIL prometheus: submitting tasks failed: {feeder.error}")
            return bool(query(prom, 'count_over_time(godel_scheduler_queue_depth{state="queued"}[5m]) >= 2')
                        and query(prom, "count_over_time(godel_scheduler_oldest_queued_age_seconds[5m]) >= 2")
                        and query(prom, "count_over_time(godel_scheduler_dispatched_total[5m]) >= 2")
                        and query(prom, "count_over_time(godel_outbox_published_total[5m]) >= 2"))
        eventually("queue, dispatch and outbox metrics in two scrapes", fed)
        feeder.stop.set()
        feeder.join()
        print(f"submitted {feeder.submitted} tasks")
        failures, checked, cluster = 0, 0, 0
        for name, title, expr in dashboard_queries(dashboards):
            concrete = expr.replace("$namespace", ".*")
            if any(re.search(rf"\b{p}", expr) for p in CLUSTER_METRICS):
                cluster += 1
                print(f"skip {name} / {title}: needs a cluster exporter ({expr.split('(')[-1][:60]}…)")
                continue
            checked += 1
            series = query(prom, concrete)
            if not series:
                failures += 1
                print(f"FAIL {name} / {title}: no series for {concrete}")
            else:
                print(f"ok   {name} / {title}: {len(series)} series")
        print(f"{checked} dashboard queries checked against godel up, {failures} without series, "
              f"{cluster} need cluster exporters")
        return 1 if failures or checked == 0 else 0
    finally:
        for proc in (prometheus, godel):
            if proc and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


def _ready(prom: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{prom}/-/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())

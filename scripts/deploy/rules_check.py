"""Every alert has a unit test in alerts_test.yaml, a runbook_url pointing at
docs/operations/alerts/<alert>.md, and that page exists.
Usage: rules_check.py ALERTS.yaml ALERTS_TEST.yaml RUNBOOK_DIR"""

import pathlib
import sys

import yaml

BASE = "https://github.com/godel-dev/godel/blob/main/docs/operations/alerts/"


def main() -> int:
    rules = yaml.safe_load(open(sys.argv[1]))
    tests = yaml.safe_load(open(sys.argv[2]))
    runbooks = pathlib.Path(sys.argv[3])
    tested = {case["alertname"] for t in tests["tests"] for case in t.get("alert_rule_test", [])}
    firing = {case["alertname"] for t in tests["tests"] for case in t.get("alert_rule_test", []) if case.get("exp_alerts")}
    failures = 0
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    for rule in alerts:
        name = rule["alert"]
        problems = []
        if name not in firing:
            problems.append("no unit test in which it fires")
        url = rule.get("annotations", {}).get("runbook_url", "")
        if url != f"{BASE}{name}.md":
            problems.append(f"runbook_url is {url!r}")
        if not (runbooks / f"{name}.md").is_file():
            problems.append(f"no runbook page {runbooks / (name + '.md')}")
        for p in problems:
            print(f"FAIL alert {name}: {p}")
        failures += bool(problems)
    unknown = tested - {r["alert"] for r in alerts}
    for name in sorted(unknown):
        print(f"FAIL alert tests name an unknown alert {name}")
    print(f"{len(alerts)} alerts: each tested and with a runbook" if not failures and not unknown else "")
    return 1 if failures or unknown or not alerts else 0


if __name__ == "__main__":
    sys.exit(main())

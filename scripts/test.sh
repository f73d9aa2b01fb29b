#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test against real PostgreSQL,
# NATS JetStream and Redis (started by scripts/services.sh when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "services"
scripts/services.sh

if ! cargo nextest --version >/dev/null 2>&1; then
  step "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "agent CLIs (Pi, Claude Code, Codex) for the adapter tests"
AGENT_CLI_BIN="$(scripts/agents.sh)"
export AGENT_CLI_BIN

step "python tools for the tests (openapi-spec-validator)"
TEST_PYTHON=python3
if ! python3 -c 'import openapi_spec_validator' 2>/dev/null; then
  [ -x target/test-python/bin/python ] || python3 -m venv target/test-python
  target/test-python/bin/python -c 'import openapi_spec_validator' 2>/dev/null ||
    target/test-python/bin/pip install --quiet 'openapi-spec-validator==0.9.0'
  TEST_PYTHON="$PWD/target/test-python/bin/python"
fi
export TEST_PYTHON

step "cargo nextest"
export OIDC_PROVIDER_DIR; OIDC_PROVIDER_DIR="$(scripts/oidc-provider.sh)" # SSO tests (auth, gateway sign-in, godel login): a real OpenID provider
profile=default
[ "${CI:-}" = "true" ] && profile=ci
cargo nextest run --workspace --locked --profile "$profile"
scripts/deploy-check.sh

#!/usr/bin/env bash
# Installs the agent CLIs the adapter tests drive — Pi, Claude Code and Codex — from
# npm at pinned versions into target/agents (skipped when already installed at that
# version) and prints the directory holding their executables.
#
#   AGENT_CLI_BIN="$(scripts/agents.sh)"
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned versions: npm sometimes resolves an older one than `npm view` reports.
packages=(
  "@mariozechner/pi-coding-agent@0.73.1"
  "@anthropic-ai/claude-code@2.1.197"
  "@openai/codex@0.169.0"
)

dir="${GODEL_AGENTS_DIR:-$PWD/target/agents}"
mkdir -p "$dir"

installed() { # name@version
  local spec="$1" name version
  name="${spec%@*}"
  version="${spec##*@}"
  [ -f "$dir/node_modules/$name/package.json" ] &&
    node -e 'process.exit(require(process.argv[1]).version === process.argv[2] ? 0 : 1)' \
      "$dir/node_modules/$name/package.json" "$version"
}

missing=()
for spec in "${packages[@]}"; do
  installed "$spec" || missing+=("$spec")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ -f "$dir/package.json" ] || echo '{"private":true}' >"$dir/package.json"
  echo "installing ${missing[*]} into $dir" >&2
  npm install --prefix "$dir" --save-exact --no-audit --no-fund --loglevel=error \
    "${missing[@]}" >&2
  for spec in "${missing[@]}"; do
    installed "$spec" || { echo "npm did not install $spec" >&2; exit 1; }
  done
fi
echo "$dir/node_modules/.bin"

#!/usr/bin/env bash
# Installs the OpenID provider the single sign-on tests (auth, gateway, godel login) sign in against —
# npm `oidc-provider`, pinned — into target/oidc-provider (skipped when already
# installed at that version) and prints that directory.
#
#   OIDC_PROVIDER_DIR="$(scripts/oidc-provider.sh)"
set -euo pipefail
cd "$(dirname "$0")/.."

spec="oidc-provider@9.13.3"
dir="${OIDC_PROVIDER_DIR:-$PWD/target/oidc-provider}"
mkdir -p "$dir"

installed() {
  [ -f "$dir/node_modules/oidc-provider/package.json" ] &&
    node -e 'process.exit(require(process.argv[1]).version === process.argv[2] ? 0 : 1)' \
      "$dir/node_modules/oidc-provider/package.json" "${spec##*@}"
}

if ! installed; then
  [ -f "$dir/package.json" ] || echo '{"private":true,"type":"module"}' >"$dir/package.json"
  echo "installing $spec into $dir" >&2
  npm install --prefix "$dir" --save-exact --no-audit --no-fund --loglevel=error "$spec" >&2
  installed || { echo "npm did not install $spec" >&2; exit 1; }
fi
echo "$dir"

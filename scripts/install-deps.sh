#!/usr/bin/env bash
# Installs every system package and npm package the build, tests and `make run` need; with
# --bench, also what only `make bench` needs (nginx for its fast sink); with --coverage, what
# only `make coverage` needs (gcovr).
# Debian packages come from apt, Node packages from package-lock.json. Idempotent: skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=false
coverage=false
case "${1:-}" in
  "") ;;
  --bench) bench=true ;;
  --coverage) coverage=true ;;
  *) echo "usage: $0 [--bench | --coverage]" >&2; exit 2 ;;
esac

APT_PACKAGES=(
  build-essential cmake pkg-config git ca-certificates curl mold
  libcurl4-openssl-dev libssl-dev nlohmann-json3-dev libcpp-httplib-dev libyaml-cpp-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  clang-format clang-tidy cppcheck shellcheck
  nodejs npm
  rclone libsecret-1-0
  procps psmisc openssl jq time media-types
)
# Debian starts and enables nginx's default site on port 80 when it installs it (or fails the
# install when that port is taken): the benchmark runs its own nginx on a loopback port.
$bench && APT_PACKAGES+=(nginx-light)
$coverage && APT_PACKAGES+=(gcovr)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  # npm ships with nodesource's nodejs; do not ask apt for it when a working npm exists.
  if [ "$p" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi
  if [ "$p" = nodejs ] && command -v node >/dev/null 2>&1; then continue; fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "install-deps: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # The default site it may have started: stopped, and not started at boot.
  if [[ " ${missing[*]} " == *" nginx-light "* ]] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
fi

# Node packages (Azurite emulator, AzCopy for benchmarks), pinned by package-lock.json. Azurite
# 3.37's engines field asks for Node 22; npm only warns. It runs on these machines' Node 20 and on
# Debian 12's own nodejs 18.20.4 (all 27 programs of the Release ctest passed with Azurite on it,
# checked 2026-12-05).
if [ ! -x node_modules/.bin/azurite-blob ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "install-deps: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

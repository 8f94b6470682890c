#!/usr/bin/env bash
# Starts or stops a local Azurite blob emulator in the background (no Docker engine needed).
# Usage: dev-azurite.sh start|stop [port]. Data in data/azurite, log and pid in .run/.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:-start}
port=${2:-10000}
pidfile=.run/azurite-${port}.pid
mkdir -p .run data/azurite

# The pid in the pidfile, still an Azurite (a pid left from before a reboot may be another
# process's now: never signalled).
running() {
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null &&
    grep -q azurite-blob "/proc/$(cat "$pidfile")/cmdline" 2>/dev/null
}

case "$cmd" in
  start)
    if running; then echo "azurite already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; exit 0; fi
    [ -x node_modules/.bin/azurite-blob ] || ./scripts/install-deps.sh
    # Something else on the port (another checkout's Azurite, the Compose one) would pass for
    # ours below while ours exits with EADDRINUSE.
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "port $port on 127.0.0.1 is taken by another process (make dev-down? docker compose down?)"
      exit 1
    fi
    : >".run/azurite-${port}.log"
    nohup node node_modules/.bin/azurite-blob --blobHost 127.0.0.1 --blobPort "$port" \
      --location data/azurite --skipApiVersionCheck --disableTelemetry --silent \
      >".run/azurite-${port}.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 100); do
      if grep -q "successfully listens on" ".run/azurite-${port}.log"; then
        echo "azurite listening on http://127.0.0.1:$port (pid $(cat "$pidfile"))"; exit 0
      fi
      running || { echo "azurite failed to start:"; cat ".run/azurite-${port}.log"; exit 1; }
      sleep 0.1
    done
    echo "azurite did not listen on port $port in 10 s"; exit 1
    ;;
  stop)
    if running; then kill "$(cat "$pidfile")"; echo "azurite stopped"; else echo "azurite not running"; fi
    rm -f "$pidfile"
    ;;
  *) echo "usage: $0 start|stop [port]" >&2; exit 2 ;;
esac

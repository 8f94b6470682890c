# shellcheck shell=bash
# Shared helpers for bench/run.sh and bench/scale.sh: processes, ports, Azurite, the service.
# Everything listens on and talks to 127.0.0.1 only.

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BIN:-$BENCH_ROOT/build/bin/nfs-blob-uploader}
ACCOUNT=devstoreaccount1
# The well-known Azurite development key (public, documented by Microsoft; not a secret).
ACCOUNT_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
CLK_TCK=$(getconf CLK_TCK)

# The peers must never reach the internet (version checks and the like): a dead local proxy for
# anything that is not loopback; Go and libcurl bypass proxies for 127.0.0.1 themselves.
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
export HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9
export http_proxy=$HTTP_PROXY https_proxy=$HTTPS_PROXY
# Settings of the caller's shell must not leak into the measured service.
while read -r _v; do unset "$_v"; done < <(compgen -v | grep -E '^(APP_|OTEL_)' || true)

BENCH_PIDS=()

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

now() { echo "$EPOCHREALTIME"; }
# fsub a b -> a-b with 3 decimals
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }

# A loopback port no socket uses, below the kernel's ephemeral range (so that no client
# connection can hold it as its local port): random in [10000, low end of ip_local_port_range).
free_port() {
  local p _ low
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range
  [ "$low" -gt 11000 ] || low=32768
  for _ in $(seq 1 200); do
    p=$((10000 + RANDOM % (low - 10000)))
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
    if command -v ss >/dev/null && [ -n "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]; then continue; fi
    echo "$p"
    return 0
  done
  die "no free port found"
}

wait_port() { # port seconds pid
  local port=$1 secs=$2 pid=$3 i
  for i in $(seq 1 $((secs * 20))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    alive "$pid" || return 1
    sleep 0.05
    : "$i"
  done
  return 1
}

track() { BENCH_PIDS+=("$1"); }
# Forgets a pid once its process is reaped: the kernel may give the number to another process,
# which stop_all must not signal.
untrack() {
  local p keep=()
  for p in "${BENCH_PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  BENCH_PIDS=("${keep[@]}")
}

# A live process (an exited child stays a zombie until waited for: not alive).
alive() {
  local line
  read -r line 2>/dev/null <"/proc/$1/stat" || return 1
  line=${line##*) }
  [ "${line:0:1}" != Z ]
}

stop_pid() { # pid [grace seconds]
  local pid=$1 grace=${2:-10} i
  if ! alive "$pid"; then
    wait "$pid" 2>/dev/null || true
    untrack "$pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 $((grace * 20))); do
    alive "$pid" || break
    sleep 0.05
    : "$i"
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  untrack "$pid"
}

stop_all() {
  local pid
  for pid in "${BENCH_PIDS[@]}"; do stop_pid "$pid" 5; done  # each untracks itself
}

# utime+stime of a live process, in seconds.
proc_cpu_s() {
  awk -v t="$CLK_TCK" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$1/stat"
}
proc_hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
proc_rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# --- Azurite (in memory) ---------------------------------------------------------------------
AZURITE_PID=""
AZURITE_PORT=""
start_azurite() { # logdir
  AZURITE_PORT=$(free_port)
  (cd "$BENCH_ROOT" && exec node node_modules/.bin/azurite-blob --inMemoryPersistence \
    --blobHost 127.0.0.1 --blobPort "$AZURITE_PORT" --skipApiVersionCheck --disableTelemetry \
    --silent) >"$1/azurite.log" 2>&1 &
  AZURITE_PID=$!
  track "$AZURITE_PID"
  wait_port "$AZURITE_PORT" 30 "$AZURITE_PID" || { cat "$1/azurite.log" >&2; die "azurite did not start"; }
  log "azurite pid $AZURITE_PID on 127.0.0.1:$AZURITE_PORT (in memory)"
}

# Account SAS for devstoreaccount1 (AZURE.md 6.1): sv 2021-08-06, all blob permissions.
account_sas() {
  local sv=2021-08-06 se=2035-01-01T00:00:00Z hexkey sig
  hexkey=$(printf '%s' "$ACCOUNT_KEY" | base64 -d | od -An -v -tx1 | tr -d ' \n')
  # Ten fields, each ending in a newline (empty: start, IP, encryption scope).
  sig=$(printf '%s\n' "$ACCOUNT" rwdlacup b sco "" "$se" "" https,http "$sv" "" |
    openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -binary | base64 -w0)
  sig=${sig//+/%2B}
  sig=${sig//\//%2F}
  sig=${sig//=/%3D}
  echo "sv=$sv&ss=b&srt=sco&sp=rwdlacup&se=${se//:/%3A}&spr=https,http&sig=$sig"
}

# --- The service under test -----------------------------------------------------------------
SVC_PID=""
SVC_PORT=""
# start_service dir endpoint container [extra VAR=value ...]; sets SVC_PID and SVC_PORT.
start_service() {
  local dir=$1 endpoint=$2 container=$3
  shift 3
  SVC_PORT=$(free_port)
  mkdir -p "$dir/incoming" "$dir/processing" "$dir/failed" "$dir/staging" "$dir/stage-in"
  env APP_ENV_FILE=/dev/null \
    APP_AZURE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=$ACCOUNT;AccountKey=$ACCOUNT_KEY;BlobEndpoint=$endpoint;" \
    APP_AZURE_CONTAINER="$container" \
    APP_NFS_INCOMING_DIR="$dir/incoming" APP_NFS_PROCESSING_ROOT="$dir/processing" \
    APP_NFS_FAILED_ROOT="$dir/failed" APP_LOCAL_STAGING_ROOT="$dir/staging" \
    APP_HTTP_HOST=127.0.0.1 APP_HTTP_PORT="$SVC_PORT" APP_REPLICA_ID=bench \
    APP_POLL_INTERVAL_S="${POLL_S:-0.2}" APP_MIN_FILE_AGE_S="${MIN_AGE_S:-0.2}" \
    APP_WORKER_CONCURRENCY="${CONC:-16}" APP_AZURE_MAX_CONCURRENCY="${BLOCK_CONC:-4}" \
    APP_AZURE_BLOCK_SIZE=8388608 APP_LOG_LEVEL="${SVC_LOG_LEVEL:-info}" \
    "$@" "$BIN" >"$dir/service.log" 2>&1 &
  SVC_PID=$!
  track "$SVC_PID"
  local i
  for i in $(seq 1 300); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$SVC_PORT/readyz" 2>/dev/null; then return 0; fi
    alive "$SVC_PID" || { tail -20 "$dir/service.log" >&2; die "service exited"; }
    sleep 0.1
    : "$i"
  done
  tail -20 "$dir/service.log" >&2
  die "service not ready in 30 s"
}

svc_status() { curl -fsS --max-time 5 "http://127.0.0.1:$SVC_PORT/v1/status"; }

# svc_counters: SVC_UP, SVC_FAILED, SVC_BYTES from /v1/status, with bash builtins only (/dev/tcp,
# read, regexes; no fork): the timed loop polls every 50 ms, and a curl + jq pair costs ~22 ms
# of CPU (curl 4.5 ms, jq 17 ms), which on 2 cores took ~30 % of a core from the service under
# test.
# shellcheck disable=SC2034  # the SVC_ variables are read by the callers
svc_counters() {
  local fd body=""
  SVC_UP=0 SVC_FAILED=0 SVC_BYTES=0
  exec {fd}<>"/dev/tcp/127.0.0.1/$SVC_PORT" || return 1
  printf 'GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&"$fd"
  IFS= read -r -d '' -t 5 -u "$fd" body || true  # ends at EOF, status 1
  exec {fd}>&-
  [[ $body =~ \"uploaded\":([0-9]+) ]] && SVC_UP=${BASH_REMATCH[1]}
  [[ $body =~ \"failed\":([0-9]+) ]] && SVC_FAILED=${BASH_REMATCH[1]}
  [[ $body =~ \"bytes_uploaded\":([0-9]+) ]] && SVC_BYTES=${BASH_REMATCH[1]}
  return 0
}

svc_watch_start() { # session
  curl -fsS --max-time 5 -X POST -H 'Content-Type: application/json' \
    -d "{\"session_name\":\"$1\"}" "http://127.0.0.1:$SVC_PORT/v1/watch/start" >/dev/null
}

# --- Fast sink: nginx-light + echo module, answers like Blob storage and stores nothing --------
# Every request body is read before the answer (echo_read_request_body); a PUT is answered
# SINK_DELAY_S (default 0) seconds later. PUT -> 201 with ETag,
# Last-Modified, x-ms-request-id, x-ms-version and the echoed Content-MD5. Container GET/HEAD and
# account properties -> 200; comp=list -> empty EnumerationResults; Get Block List -> 404
# BlobNotFound. Blob HEAD -> 200 with the right Content-Length: the sink is generated per data set
# with a map from file name (last path segment) to size (from the manifest "relpath size"), and HEAD serves a sparse
# file of that size; an unknown name gets 404 BlobNotFound. Auth is ignored.
SINK_PID=""
SINK_PORT=""
start_sink() { # dir manifest
  local dir=$1 manifest=$2 hdr
  SINK_PORT=$(free_port)
  mkdir -p "$dir/sizes" "$dir/tmp" "$dir/logs"
  awk '{ n = $1; sub(/.*\//, "", n); print n, $2 ";" }' "$manifest" >"$dir/sizes.map"
  local s
  while read -r s; do truncate -s "$s" "$dir/sizes/len_$s"; done < <(awk '{ print $2 }' "$manifest" | sort -u)
  # shellcheck disable=SC2016  # nginx variables, not shell ones
  hdr='add_header x-ms-request-id $request_id always; add_header x-ms-version 2021-08-06 always;'
  cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  client_max_body_size 0;
  client_body_buffer_size 64m;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  default_type application/octet-stream;
  map_hash_max_size 1048576;
  map_hash_bucket_size 256;
  map \$blob_uri \$blob_base { "~/([^/]+)\$" \$1; default ""; }
  map \$blob_base \$blob_len { default ""; include $dir/sizes.map; }
  server {
    listen 127.0.0.1:$SINK_PORT;
    root $dir/sizes;
    location / {
      set \$blob_uri \$uri;  # decoded (AzCopy sends / in blob names as %2F); kept across rewrites
      if (\$request_method = PUT) { rewrite ^ /__put last; }
      if (\$arg_comp = list) { rewrite ^ /__list last; }
      if (\$arg_restype != "") { rewrite ^ /__ok last; }
      if (\$request_method = HEAD) { rewrite ^ /__head last; }
      rewrite ^ /__404 last;
    }
    location = /__put {
      internal;
      $hdr
      add_header ETag '"0x8DC0000000000001"' always;
      add_header Last-Modified 'Sat, 01 Jan 2022 00:00:00 GMT' always;
      add_header Content-MD5 \$http_content_md5 always;
      add_header x-ms-request-server-encrypted false always;
      echo_read_request_body;
      echo_sleep ${SINK_DELAY_S:-0};
      echo_status 201;
      echo -n "";
    }
    location = /__ok {
      internal;
      $hdr
      add_header ETag '"0x8DC0000000000001"' always;
      add_header Last-Modified 'Sat, 01 Jan 2022 00:00:00 GMT' always;
      add_header x-ms-sku-name Standard_LRS always;
      add_header x-ms-account-kind StorageV2 always;
      add_header x-ms-is-hns-enabled false always;
      echo_read_request_body;
      echo -n "";
    }
    location = /__list {
      internal;
      $hdr
      default_type application/xml;
      echo_read_request_body;
      echo -n '<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://127.0.0.1:$SINK_PORT/$ACCOUNT/"><Prefix>\$arg_prefix</Prefix><Blobs /><NextMarker /></EnumerationResults>';
    }
    location = /__head {
      internal;
      $hdr
      add_header x-ms-blob-type BlockBlob always;
      add_header x-ms-server-encrypted false always;
      add_header x-ms-creation-time 'Sat, 01 Jan 2022 00:00:00 GMT' always;
      try_files /len_\$blob_len /__404;
    }
    location = /__404 {
      internal;
      $hdr
      add_header x-ms-error-code BlobNotFound always;
      echo_read_request_body;
      echo_status 404;
      echo -n "";
    }
  }
}
CONF
  nginx -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" >"$dir/logs/stdout.log" 2>&1 &
  SINK_PID=$!
  track "$SINK_PID"
  wait_port "$SINK_PORT" 10 "$SINK_PID" || { cat "$dir/logs/"* >&2; die "nginx sink did not start"; }
  log "nginx sink pid $SINK_PID on 127.0.0.1:$SINK_PORT"
}

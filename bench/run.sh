#!/usr/bin/env bash
# Side-by-side benchmark: nfs-blob-uploader vs rclone vs AzCopy, on the same generated files and
# the same in-memory Azurite (one per round of the tools) and a fast nginx sink, all on
# 127.0.0.1.
#
# Usage: bench/run.sh                      full run (one run of each tool: about 2 minutes on 2
#                                          cores; REPEAT=3, as make bench does it: about 5)
#        SCALE=smoke bench/run.sh          50 x 64 KiB + 1 x 8 MiB, Azurite only (< 60 s)
# Env:   CONC=16        files in flight (our APP_WORKER_CONCURRENCY, rclone --transfers,
#                       AZCOPY_CONCURRENCY_VALUE)
#        BLOCK_CONC=4   blocks in flight per large file (APP_AZURE_MAX_CONCURRENCY,
#                       rclone --azureblob-upload-concurrency); AzCopy's CONC is global
#        TOOLS="ours rclone azcopy azcopy-md5"   OUT=file.md (also write the table there);
#                       azcopy-md5 is AzCopy with --put-md5 (an MD5 of every file, stored on the
#                       blob, as ours and rclone do): the peer at equal integrity. Issue 6's
#                       targets compare with the peers' defaults (rclone, azcopy).
#        REPEAT=1       runs per tool and scenario (interleaved, the tools' order turned by one
#                       each round); the table shows each figure's median over the runs, and
#                       the min-max of s (the time to the server's last answer)
#        SCENARIOS="name:target:NxSIZE[+NxSIZE...] ..."  (target azurite|sink) to override
#        SVC_ENV="APP_X=y ..."  extra settings for the service (e.g. APP_STAGING_FSYNC=true)
#        LIMITS=1       on sink scenarios, also measure the machine's limits for the data set:
#                       limit-read (cat every file) and limit-send (curl -T every file to the sink)
#        MIN_AGE_S=0    our APP_MIN_FILE_AGE_S. 0 puts us on the peers' terms: the files are
#                       complete when the session directory is renamed into incoming/, and the
#                       peers wait for nothing (a file is still queued only after two equal
#                       scans and an open+fstat check). MIN_AGE_S=0.2 adds that settle time.
#        POLL_S=0.2     our APP_POLL_INTERVAL_S
#        SINK_DELAY_S=0 seconds the sink waits before answering a PUT (nginx echo_sleep): a
#                       server's latency without a server's CPU (RESULTS, thirteenth stop)
# Exit status: 0 when every tool finished and every file arrived with the right size and content
# (on Azurite: each blob's path, size and MD5 against the generated file's; see verify_blobs;
# and the service's counters); never depends on timing.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$BENCH_ROOT"

SCALE=${SCALE:-full}
CONC=${CONC:-16}
BLOCK_CONC=${BLOCK_CONC:-4}
TOOLS=${TOOLS:-ours rclone azcopy azcopy-md5}
REPEAT=${REPEAT:-1}
POLL_S=${POLL_S:-0.2}
MIN_AGE_S=${MIN_AGE_S:-0}
export CONC BLOCK_CONC POLL_S MIN_AGE_S
MiB=1048576
case "$SCALE" in
  full)
    DEFAULT_SCENARIOS="small:azurite:2000x65536 large:azurite:4x$((256 * MiB))
      mixed:azurite:500x65536+50x$MiB+2x$((64 * MiB))
      small-sink:sink:2000x65536 large-sink:sink:4x$((256 * MiB))"
    TOOL_TIMEOUT=600 ;;
  smoke)
    DEFAULT_SCENARIOS="smoke:azurite:50x65536+1x$((8 * MiB))"
    TOOL_TIMEOUT=45 ;;
  dev)
    DEFAULT_SCENARIOS="small:azurite:300x65536 large:azurite:2x$((32 * MiB))
      small-sink:sink:300x65536 large-sink:sink:2x$((32 * MiB))"
    TOOL_TIMEOUT=120 ;;
  *) die "SCALE must be full, smoke or dev" ;;
esac
read -r -a SCEN_LIST <<<"$(echo "${SCENARIOS:-$DEFAULT_SCENARIOS}" | tr '\n' ' ')"

AZCOPY=$BENCH_ROOT/node_modules/@azure-tools/azcopy-linux/dist/bin/azcopy_linux_amd64
for t in $TOOLS; do
  case $t in
    ours) [ -x "$BIN" ] || die "$BIN missing: run make build" ;;
    rclone) command -v rclone >/dev/null || die "rclone missing: run make install" ;;
    azcopy | azcopy-md5)
      [ -f "$AZCOPY" ] || die "$AZCOPY missing: run make install"
      [ -x "$AZCOPY" ] || chmod u+x "$AZCOPY" ;;  # the npm tarball ships it without the x bit
    *) die "unknown tool $t" ;;
  esac
done
[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) missing: run make install"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
TMP=$(mktemp -d "${BENCH_TMP:-/tmp}/nbu-bench.XXXXXX")
cleanup() {
  stop_all
  [ -n "${HOLD_FD:-}" ] && exec {HOLD_FD}>&-
  if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ROWS=$TMP/rows.tsv
: >"$ROWS"

# AzCopy spins a core when its stdin is at EOF: give it a pipe nobody writes to (PEERS.md).
mkfifo "$TMP/hold"
exec {HOLD_FD}<>"$TMP/hold"

# --- Data -------------------------------------------------------------------------------------
# gen_data spec -> prints the directory holding src/, manifest ("relpath size", sorted) and md5s
# ("relpath size md5", the same order). Part i of "NxSIZE+..." goes to
# src/d<i>/p<i>_<nnnnn>.bin; random bytes.
gen_data() {
  local spec=$1 key dir i=0 part n size
  key=$(echo "$spec" | md5sum | cut -c1-10)
  dir=$TMP/data/$key
  if [ ! -f "$dir/manifest" ]; then
    mkdir -p "$dir/src"
    IFS=+ read -r -a parts <<<"$spec"
    for part in "${parts[@]}"; do
      n=${part%x*}
      size=${part#*x}
      mkdir -p "$dir/src/d$i"
      head -c $((n * size)) /dev/urandom |
        split -b "$size" -a 5 -d --additional-suffix=.bin - "$dir/src/d$i/p${i}_"
      i=$((i + 1))
    done
    (cd "$dir/src" && find . -type f -printf '%P %s\n' | LC_ALL=C sort) >"$dir/manifest.tmp"
    # md5sum prints "md5  relpath" (no escapes: the names are plain).
    (cd "$dir/src" && awk '{ print $1 }' "$dir/manifest.tmp" | xargs -d '\n' md5sum) |
      awk 'NR == FNR { md5[$2] = $1; next } { print $1, $2, md5[$1] }' - "$dir/manifest.tmp" \
        >"$dir/md5s"
    mv "$dir/manifest.tmp" "$dir/manifest"
  fi
  echo "$dir"
}

# --- Verification against Azurite -------------------------------------------------------------
rclone_env() {
  # rclone 1.60 builds https://<account>.<endpoint> from account+key+endpoint, and its
  # use_emulator option is fixed to port 10000: an account SAS URL is the way to a path-style
  # loopback endpoint.
  env RCLONE_CONFIG_BENCH_TYPE=azureblob RCLONE_CONFIG_BENCH_SAS_URL="$ENDPOINT?$SAS" "$@"
}
# verify_blobs container strip data_dir check -> "ok" or a reason; `strip` leading path
# components of the blob names. Every check lists the container (path and size of each blob).
#  * check=md5 (ours, rclone, azcopy-md5: each stores an MD5 on every blob): the listed MD5s
#    are compared with the generated files' (md5s) too; a blob without one fails. An MD5 Azurite
#    computed (for a blob sent in one Put Blob without one) covers the bytes stored; one the tool
#    set (with Put Block List) is its MD5 of the file it read, which Azurite does not check
#    against the blocks: their bytes are checked by each block's Content-MD5, where the tool sends
#    one (ours does).
#  * check=download (plain azcopy: no MD5 of its own; a blob it sends in one Put Blob gets
#    Azurite's, one it sends in blocks, as the larger files of the full scale, none): every blob
#    is downloaded and hashed (rclone md5sum --download, off the clock: 512 MiB in about 2 s).
verify_blobs() {
  local container=$1 strip=$2 data=$3 check=$4 got=$TMP/listing want=$TMP/listing.want
  local -a fields=(--format ps)
  [ "$check" = md5 ] && fields=(--format psh --hash MD5)
  if ! rclone_env timeout "$TOOL_TIMEOUT" rclone --config "$TMP/rclone.conf" lsf -R --files-only \
    "${fields[@]}" --separator ' ' "bench:$container" >"$got.raw" 2>"$got.err"; then
    echo "listing-failed"
    return
  fi
  cut -d/ -f$((strip + 1))- <"$got.raw" | LC_ALL=C sort >"$got"
  if ! cmp -s <(cut -d' ' -f1,2 "$got") "$data/manifest"; then
    echo "mismatch($(wc -l <"$got")/$(wc -l <"$data/manifest")-files)"
    diff "$data/manifest" <(cut -d' ' -f1,2 "$got") | head -5 >&2 || true
    return
  fi
  if [ "$check" = download ]; then
    if ! rclone_env timeout "$TOOL_TIMEOUT" rclone --config "$TMP/rclone.conf" md5sum --download \
      --checkers "$CONC" "bench:$container" >"$got.raw" 2>"$got.err"; then
      echo "download-failed"
      tail -3 "$got.err" >&2
      return
    fi
    awk '{ print $2, $1 }' "$got.raw" | cut -d/ -f$((strip + 1))- | LC_ALL=C sort >"$got"
    awk '{ print $1, $3 }' "$data/md5s" >"$want"
  else
    cp "$data/md5s" "$want"
  fi
  if cmp -s "$got" "$want"; then
    echo ok
  else
    echo "md5-mismatch($(LC_ALL=C comm -13 "$want" "$got" | wc -l)-files)"
    diff "$want" "$got" | head -5 >&2 || true
  fi
}
delete_container() {
  curl -s -o /dev/null --max-time 60 -X DELETE "$ENDPOINT/$1?restype=container&$SAS" || true
}

server_cpu() { proc_cpu_s "$SERVER_PID"; }

# When the server last answered. A client's own clock can run past its work (AzCopy exits only
# at one of its 2-second status ticks), so every tool is timed to the end of the last answer the
# server gave it: io_watch pid file samples the process every ~20 ms until killed, then writes
# to `file` the time ($EPOCHREALTIME) at which it last wrote or read bytes (/proc/<pid>/io wchar and
# rchar: Azurite's and nginx's answers go out through write/writev, which count). Bash builtins
# only, and a timed read on a FIFO nobody writes to for the pause: no process per sample.
io_watch() { # pid file
  local pid=$1 file=$2 k v cur last="" at="" fd
  # Written once, when stopped (TERM waits for the builtin under way), or when the server ends.
  trap 'echo "$at" >"$file"; exit 0' TERM
  mkfifo "$file.pause"
  exec {fd}<>"$file.pause"
  while :; do
    cur=""
    { while read -r k v; do
      case $k in rchar: | wchar:) cur+="$v," ;; esac
    done <"/proc/$pid/io"; } 2>/dev/null || break
    if [ "$cur" != "$last" ]; then
      last=$cur
      at=$EPOCHREALTIME
    fi
    read -r -t 0.02 -u "$fd" _ || true
  done
  echo "$at" >"$file"
}
# clock_start [server]; <the run>; clock_stop: T0 and T1 the run's start and end, TS the end of
# the server's last answer since T0 (T1 when started without "server"). In this shell, not in
# $(...): only the sampler's parent can wait for its write.
clock_start() {
  SERVED_WATCH_PID=""
  [ "${1:-}" = server ] && served_watch
  T0=$(now)
}
clock_stop() {
  T1=$(now)
  TS=$T1
  [ -n "$SERVED_WATCH_PID" ] && served_at
  return 0
}
served_watch() {
  rm -f "$TMP/served" "$TMP/served.pause"
  io_watch "$SERVER_PID" "$TMP/served" &
  SERVED_WATCH_PID=$!
  track "$SERVED_WATCH_PID"  # stopped by cleanup too, before $TMP goes
}
served_at() {
  kill -TERM "$SERVED_WATCH_PID" 2>/dev/null || true
  wait "$SERVED_WATCH_PID" 2>/dev/null || true
  untrack "$SERVED_WATCH_PID"
  TS=$(cat "$TMP/served" 2>/dev/null || true)
  [ -n "$TS" ] || die "no time of the server's last answer"
}

# add_row scenario tool files bytes cpu_s peak_kib server_cpu_s status, after clock_stop: the
# row holds, after bytes, the seconds to the server's last answer (TS - T0) and, last, those to
# the tool's own end (T1 - T0: its exit; for ours, /v1/status counting every file uploaded).
add_row() {
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$(fsub "$TS" "$T0")" \
    "$5" "$6" "$7" "$8" "$(fsub "$T1" "$T0")" >>"$ROWS"
}

# "${TIMED[@]}" time_file command... : GNU time writes "wall user sys maxrss_kib" to time_file
# (an array, not a function, so that timeout can run it); read_time time_file -> "user+sys
# maxrss_kib" from its last line.
TIMED=(/usr/bin/time -f '%e %U %S %M' -o)
read_time() { tail -1 "$1" | awk '{ printf "%.3f %d\n", $2 + $3, $4 }'; }
# The last row, as a progress line.
log_row() { tail -1 "$ROWS" | awk -F'\t' '{ printf "[bench]   %s %s: %s s (exit %s s), %s\n", $1, $2, $5, $10, $9 }' >&2; }

# --- The tools --------------------------------------------------------------------------------
# Every run writes to a container of its own (a name just deleted may still be being deleted).
run_ours() { # scen data_dir files bytes
  local scen=$1 data=$2 files=$3 bytes=$4 container="b-$1-ours-r$rep" session="bench-$1"
  local dir=$TMP/svc-$scen up=0 failed=0 ub=0 c0 c1 s0 s1 status=ok deadline hwm
  local -a extra=()
  read -r -a extra <<<"${SVC_ENV:-}"
  # The sink checks no checksum, so the start-up probe would find it ignores CRC-64 and fall back
  # to MD5: it gets the checksum Azure and Azurite check, as auto chooses there (SVC_ENV wins).
  [ "$TARGET" = sink ] && extra=(APP_AZURE_PUT_BLOB_CHECKSUM=crc64 "${extra[@]}")
  start_service "$dir" "$ENDPOINT" "$container" "${extra[@]}"
  cp -al "$data/src" "$dir/stage-in/$session"
  s0=$(server_cpu)
  c0=$(proc_cpu_s "$SVC_PID")
  clock_start server
  mv "$dir/stage-in/$session" "$dir/incoming/$session"
  svc_watch_start "$session"
  deadline=$((SECONDS + TOOL_TIMEOUT))
  while [ "$SECONDS" -lt "$deadline" ]; do
    svc_counters 2>/dev/null || true  # 0s while the service does not answer
    up=$SVC_UP failed=$SVC_FAILED ub=$SVC_BYTES
    [ $((up + failed)) -ge "$files" ] && break
    alive "$SVC_PID" || break
    sleep 0.05
  done
  clock_stop
  c1=$(proc_cpu_s "$SVC_PID" 2>/dev/null || echo "$c0")
  s1=$(server_cpu)
  hwm=$(proc_hwm_kib "$SVC_PID" 2>/dev/null || echo 0)
  if [ "$up" -ne "$files" ] || [ "$failed" -ne 0 ]; then
    status="FAIL(uploaded=$up,failed=$failed)"
  elif [ "$ub" -ne "$bytes" ]; then
    status="FAIL(bytes_uploaded=$ub)"
  elif [ -n "$(find "$dir/incoming/$session" -type f -print -quit)" ]; then
    status="FAIL(files-left-in-incoming)"
  fi
  stop_pid "$SVC_PID" 30
  if [ "$status" != ok ]; then tail -5 "$dir/service.log" >&2; fi
  if [ "$status" = ok ] && [ "$TARGET" = azurite ]; then
    status=$(verify_blobs "$container" 2 "$data" md5)
  fi
  [ "$TARGET" = azurite ] && delete_container "$container"
  add_row "$scen" ours "$files" "$bytes" "$(fsub "$c1" "$c0")" "$hwm" "$(fsub "$s1" "$s0")" \
    "$status"
  rm -rf "$dir"
}

run_peer() { # tool scen data_dir files bytes
  local tool=$1 scen=$2 data=$3 files=$4 bytes=$5 container="b-$2-$1-r$rep" rc=0 s0 s1 code
  local tf=$TMP/time-$tool-$scen status=ok cpu rss strip=1 check=md5
  local -a md5=()
  [ "$tool" = azcopy-md5 ] && md5=(--put-md5)
  [ "$tool" = azcopy ] && check=download  # no MD5 on its blobs: see verify_blobs
  : >"$TMP/rclone.conf"
  # AzCopy does not create a missing container on an emulator endpoint; our service creates its
  # own before /readyz. Create the peers' containers before the clock starts.
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 -X PUT -H 'Content-Length: 0' \
    "$ENDPOINT/$container?restype=container&$SAS" || true)
  [ "$code" = 201 ] || log "warning: creating container $container: HTTP $code"
  s0=$(server_cpu)
  clock_start server
  case $tool in
    rclone)
      rclone_env timeout -k 10 "$TOOL_TIMEOUT" "${TIMED[@]}" "$tf" \
        rclone --config "$TMP/rclone.conf" copy "$data/src" "bench:$container/run" \
        --transfers "$CONC" --azureblob-chunk-size 8M \
        --azureblob-upload-concurrency "$BLOCK_CONC" -q \
        >"$TMP/$tool-$scen.log" 2>&1 || rc=$?
      ;;
    azcopy | azcopy-md5)
      mkdir -p "$TMP/azlog" "$TMP/azplan"
      env AZCOPY_CONCURRENCY_VALUE="$CONC" AZCOPY_LOG_LOCATION="$TMP/azlog" \
        AZCOPY_JOB_PLAN_LOCATION="$TMP/azplan" AZCOPY_DISABLE_SYSLOG=true \
        timeout -k 10 "$TOOL_TIMEOUT" "${TIMED[@]}" "$tf" \
        "$AZCOPY" copy "$data/src/*" "$ENDPOINT/$container/run?$SAS" --recursive \
        --from-to LocalBlob --block-size-mb 8 --skip-version-check --output-level quiet "${md5[@]}" \
        <&"$HOLD_FD" >"$TMP/$tool-$scen.log" 2>&1 || rc=$?
      ;;
  esac
  clock_stop
  s1=$(server_cpu)
  read -r cpu rss < <(read_time "$tf" 2>/dev/null || echo "0 0")
  if [ "$rc" -ne 0 ]; then
    status="FAIL(exit=$rc)"
    tail -5 "$TMP/$tool-$scen.log" >&2
    if [ "$tool" != rclone ]; then
      grep -h -E 'ERR|FAILED|Final Job Status' "$TMP"/azlog/*.log 2>/dev/null | tail -5 | cut -c1-400 >&2 || true
    fi
  elif [ "$TARGET" = azurite ]; then
    status=$(verify_blobs "$container" "$strip" "$data" "$check")
  fi
  [ "$TARGET" = azurite ] && delete_container "$container"
  add_row "$scen" "$tool" "$files" "$bytes" "$cpu" "$rss" "$(fsub "$s1" "$s0")" "$status"
}

# The machine's own limits on a sink data set, measured in the same round: "limit-read" reads
# every file (cat, CONC at a time: the page-cached read every client starts from), "limit-send"
# sends every byte to the sink (curl -T, CONC connections, each reusing its connection for its
# share), files over 8 MiB in 8 MiB pieces as every tool here sends them (split beforehand, off
# the clock; the sink keeps bodies up to 64 MiB in memory and writes bigger ones to disk).
# Neither hashes nor stages: no client can beat them on this machine.
run_limit() { # kind scen data_dir files bytes
  local kind=$1 scen=$2 data=$3 files=$4 bytes=$5 tf=$TMP/time-limit-$1-$2 rc=0 s0 s1 cpu rss
  local per=$(((files + CONC - 1) / CONC)) status=ok f
  if [ "$kind" = send ]; then
    rm -rf "$TMP/limit-parts"
    cp -al "$data/src" "$TMP/limit-parts"
    while IFS= read -r -d '' f; do
      split -b 8M -a 5 -d "$f" "$f." && rm "$f"
    done < <(find "$TMP/limit-parts" -type f -size +8M -print0)
    per=$((($(find "$TMP/limit-parts" -type f | wc -l) + CONC - 1) / CONC))
  fi
  s0=$(server_cpu)
  local watch=""
  [ "$kind" = send ] && watch=server  # cat of the files: the server has no part in it
  clock_start $watch
  case $kind in
    read)
      (cd "$data/src" && find . -type f -print0 |
        "${TIMED[@]}" "$tf" xargs -0 -P "$CONC" -n "$per" cat >/dev/null) || rc=$?
      ;;
    send)
      # shellcheck disable=SC2016  # the inner script expands its own arguments
      (cd "$TMP/limit-parts" && find . -type f -print0 |
        "${TIMED[@]}" "$tf" xargs -0 -P "$CONC" -n "$per" bash -c \
          'a=(); for f; do a+=(-o /dev/null -T "$f" "$0/${f#./}"); done; exec curl -sSf -H "Expect:" "${a[@]}"' \
          "$ENDPOINT/limits/run") || rc=$?
      ;;
  esac
  clock_stop
  s1=$(server_cpu)
  read -r cpu rss < <(read_time "$tf" 2>/dev/null || echo "0 0")
  [ "$rc" -eq 0 ] || status="FAIL(exit=$rc)"
  rm -rf "$TMP/limit-parts"
  add_row "$scen" "limit-$kind" "$files" "$bytes" "$cpu" "$rss" "$(fsub "$s1" "$s0")" "$status"
}

# --- Main -------------------------------------------------------------------------------------
SAS=$(account_sas)
read -r -a order <<<"$TOOLS"
for sc in "${SCEN_LIST[@]}"; do
  IFS=: read -r scen TARGET spec <<<"$sc"
  log "scenario $scen ($TARGET, $spec): generating data"
  data=$(gen_data "$spec")
  files=$(wc -l <"$data/manifest")
  bytes=$(awk '{ s += $2 } END { printf "%.0f", s }' "$data/manifest")  # %d stops at 2^31-1 in mawk
  if [ "$TARGET" = azurite ]; then
    : # a fresh Azurite for each round of the tools, below
  else
    start_sink "$TMP/sink-$scen" "$data/manifest"
    ENDPOINT=http://127.0.0.1:$SINK_PORT/$ACCOUNT
    SERVER_PID=$SINK_PID
  fi
  for rep in $(seq 1 "$REPEAT"); do
    if [ "$TARGET" = azurite ]; then
      # One Azurite per round: the tools compared share it, and deleted containers' data (which
      # Azurite frees only later) never reaches its in-memory size limit (half the RAM).
      [ -n "$AZURITE_PID" ] && stop_pid "$AZURITE_PID" 10
      start_azurite "$TMP"
      ENDPOINT=http://127.0.0.1:$AZURITE_PORT/$ACCOUNT
      SERVER_PID=$AZURITE_PID
    fi
    # Each round starts with another tool: none always meets the round's fresh Azurite.
    shift_by=$(((rep - 1) % ${#order[@]}))
    for tool in "${order[@]:shift_by}" "${order[@]:0:shift_by}"; do
      log "scenario $scen: $tool (run $rep of $REPEAT)"
      if [ "$tool" = ours ]; then
        run_ours "$scen" "$data" "$files" "$bytes"
      else
        run_peer "$tool" "$scen" "$data" "$files" "$bytes"
      fi
      log_row
    done
    if [ "$TARGET" = sink ] && [ "${LIMITS:-1}" = 1 ]; then
      for kind in read send; do
        run_limit "$kind" "$scen" "$data" "$files" "$bytes"
        log_row
      done
    fi
  done
  if [ "$TARGET" = sink ]; then stop_pid "$SINK_PID" 5; fi
done
[ -n "$AZURITE_PID" ] && stop_pid "$AZURITE_PID" 10

# --- Table ------------------------------------------------------------------------------------
table() {
  local delay_note=""
  [ "${SINK_DELAY_S:-0}" = 0 ] ||
    delay_note=" The sink answers each PUT $SINK_DELAY_S s after reading its body (SINK_DELAY_S)."
  echo "Concurrency: $CONC files in flight for every tool (our APP_WORKER_CONCURRENCY, rclone" \
    "--transfers, AZCOPY_CONCURRENCY_VALUE); $BLOCK_CONC blocks in flight per large file for" \
    "ours and rclone; 8 MiB blocks for every block upload (which files go in one Put Blob is" \
    "each tool's default: ours up to 64 MiB, AzCopy its own rule, rclone none). Our service:" \
    "APP_POLL_INTERVAL_S=$POLL_S, APP_MIN_FILE_AGE_S=$MIN_AGE_S, APP_STAGING_FSYNC=false" \
    "(default)${SVC_ENV:+, $SVC_ENV}. **s** runs from the start (for ours the rename of the" \
    "session directory into incoming/, for a peer its start) to the end of the server's last" \
    "answer (Azurite's or nginx's bytes written or read, sampled every 20 ms), the same for every" \
    "tool; files/s and MB/s come from it; **exit s** runs to the tool's own end: a peer's exit" \
    "(AzCopy exits only at a 2-second status tick), ours /v1/status counting every file uploaded" \
    "(polled every 50 ms). Each figure is the median of its runs on its own; the tools' order" \
    "turns by one each round. MB = 10^6 bytes; peak MiB = max RSS (VmHWM for the service, GNU" \
    "time for the peers; page cache, such as our staging copies, is not in it); server CPU =" \
    "Azurite's or nginx's CPU seconds during the run; ratios are ours / peer." \
    "Hashing: ours CRC-64s every file sent in one Put Blob (x-ms-content-crc64; storage checks it" \
    "and stores the MD5 it computes) and MD5s every larger file and every block (Content-MD5 on" \
    "each Put Block, whole-file MD5 on the blob), so every blob has its MD5; on the sink, which" \
    "checks nothing, ours runs with APP_AZURE_PUT_BLOB_CHECKSUM=crc64, what it picks against" \
    "Azurite and Azure; rclone MD5s every file; AzCopy hashes nothing (its default, no --put-md5);" \
    "azcopy-md5 is AzCopy with --put-md5 (an MD5 of every file, stored on the blob): the peer at" \
    "equal integrity (issue 6's targets compare with the defaults).$delay_note" \
    "Load average (1/5/15 min) at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "| scenario | tool | files | MB | s | files/s | MB/s | CPU ms/file | peak MiB | server CPU s | exit s | ours/peer files/s | ours/peer CPU/file | ours/peer memory | check |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  # Group the runs of each (scenario, tool); each measure is the median of its runs on its own.
  awk -F'\t' '
    # The median of column `col` over the runs of k; range["lo"], range["hi"] its extremes.
    function median(k, col, range,   a, b, t, v, m) {
      m = cnt[k]
      for (a = 1; a <= m; a++) v[a] = val[k, a, col] + 0
      for (a = 1; a <= m; a++) for (b = a + 1; b <= m; b++) if (v[b] < v[a]) { t = v[a]; v[a] = v[b]; v[b] = t }
      range["lo"] = v[1]; range["hi"] = v[m]
      return m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
    }
    { k = $1 SUBSEP $2
      if (!(k in cnt)) { order[++nk] = k; sc[nk] = $1; tl[nk] = $2; f[nk] = $3; b2[nk] = $4 }
      cnt[k]++
      for (col = 5; col <= 10; col++) val[k, cnt[k], col] = $col
      if ($9 != "ok" && !(k in bad)) bad[k] = $9 }
    END {
      for (n = 1; n <= nk; n++) {
        k = order[n]; m = cnt[k]
        s[n] = median(k, 5, r)
        rng[n] = m > 1 ? sprintf(" (%.2f-%.2f, %d runs)", r["lo"], r["hi"], m) : ""
        c[n] = median(k, 6, r); mm[n] = median(k, 7, r); sv[n] = median(k, 8, r)
        ex[n] = median(k, 10, r)
        st[n] = (k in bad) ? bad[k] : "ok"
        if (tl[n] == "ours") { of[sc[n]] = (s[n] > 0 ? f[n] / s[n] : 0); oc[sc[n]] = c[n] / f[n]; om[sc[n]] = mm[n] }
      }
      for (i = 1; i <= nk; i++) {
        fps = s[i] > 0 ? f[i] / s[i] : 0; cpf = c[i] / f[i]
        r1 = r2 = r3 = "";
        if (tl[i] != "ours" && (sc[i] in of)) {
          r1 = fps > 0 ? sprintf("%.2fx", of[sc[i]] / fps) : "-"
          r2 = cpf > 0 ? sprintf("%.2fx", oc[sc[i]] / cpf) : "-"
          r3 = mm[i] > 0 ? sprintf("%.2fx", om[sc[i]] / mm[i]) : "-"
          # A limit row moves bytes and does nothing else: only its speed is a yardstick.
          if (tl[i] ~ /^limit-/) r2 = r3 = "n/a"
        }
        printf "| %s | %s | %d | %.1f | %.2f%s | %s | %.1f | %.3f | %.0f | %.2f | %.2f | %s | %s | %s | %s |\n",
          sc[i], tl[i], f[i], b2[i] / 1e6, s[i], rng[i], (fps < 10 ? sprintf("%.2f", fps) : sprintf("%.0f", fps)),
          (s[i] > 0 ? b2[i] / 1e6 / s[i] : 0), cpf * 1000, mm[i] / 1024, sv[i], ex[i], r1, r2, r3, st[i]
      }
    }' "$ROWS"
}
table | tee "${OUT:-/dev/null}"
[ -n "${OUT:-}" ] && cp "$ROWS" "${OUT%.md}.tsv"

if awk -F'\t' '$9 != "ok" { bad = 1 } END { exit !bad }' "$ROWS"; then
  log "FAIL: some tool did not finish or not every file arrived intact (see 'check' above)"
  exit 1
fi
log "all tools finished; every file arrived with the right size and MD5"

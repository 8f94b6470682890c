#!/usr/bin/env bash
# Scale and latency measurements of nfs-blob-uploader (against an in-memory Azurite on 127.0.0.1):
#  1. Backlog scan: BACKLOG files (default 100,000) waiting in incoming/<session>/ with
#     APP_MIN_FILE_AGE_S huge so nothing is claimed. The service's CPU is sampled every 20 ms from
#     /proc/<pid>/stat: each scan shows as a burst; reported are the first scan (it stats every
#     file), the steady-state scans (median burst CPU and length), the CPU share at the poll
#     interval, and VmHWM / VmRSS with that backlog. Then the floor under the first scan:
#     bench/scan_floor.c, which only lists the same files and stats each one.
#  2. Trickle latency: RATE files/s (default 5) of 64 KiB for TRICKLE_S seconds (default 30),
#     written straight into incoming/<session>/. Reported: the service's own last_minute.latency_s
#     (ready -> committed) and our measure from the producer's close() to the blob appearing in
#     a container listing polled every 50 ms.
# Usage: bench/scale.sh   [env BACKLOG=100000 SCAN_POLL_S=1 SCANS=10 RATE=5 TRICKLE_S=30 OUT=x.md
#                          PERF=file: perf record -g of the service over the first scan; needs
#                          perf (Debian's linux-perf, not installed by make install), and
#                          SCAN_POLL_S=3 or more, so that the second scan falls outside it]
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$BENCH_ROOT"

BACKLOG=${BACKLOG:-100000}
SCAN_POLL_S=${SCAN_POLL_S:-1}
SCANS=${SCANS:-10}
RATE=${RATE:-5}
TRICKLE_S=${TRICKLE_S:-30}
CONC=${CONC:-16}
BLOCK_CONC=${BLOCK_CONC:-4}
export CONC BLOCK_CONC
[ -x "$BIN" ] || die "$BIN missing: run make build"
command -v jq >/dev/null || die "jq missing: run make install"

TMP=$(mktemp -d "${BENCH_TMP:-/tmp}/nbu-scale.XXXXXX")
cleanup() {
  stop_all
  if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
start_azurite "$TMP"
ENDPOINT=http://127.0.0.1:$AZURITE_PORT/$ACCOUNT
SAS=$(account_sas)
REPORT=$TMP/report.md
: >"$REPORT"
out() { echo "$*" | tee -a "$REPORT"; }

ticks() { # utime+stime of $1 in clock ticks, pure bash (cheap enough to sample every 20 ms)
  local line
  read -r line <"/proc/$1/stat" || return 1
  line=${line##*) }  # fields after "(comm) "; utime and stime are fields 12 and 13 from here
  read -r -a f <<<"$line"
  echo $((f[11] + f[12]))
}

# sample_cpu pid seconds file: appends "t_us ticks" every 20 ms
sample_cpu() {
  local pid=$1 end=$(( ${EPOCHREALTIME/./} + $2 * 1000000 )) t
  while :; do
    t=${EPOCHREALTIME/./}
    [ "$t" -ge "$end" ] && break
    echo "$t $(ticks "$pid")"
    sleep 0.02
  done >>"$3"
}

# bursts file -> one line per burst: "cpu_ticks wall_ms" (samples whose tick count rose; gaps of
# up to 3 idle samples are bridged, as a 10 ms tick can fall between two 20 ms samples)
bursts() {
  awk 'NR == 1 { pt = $2; prev_t = $1; next }
       { d = $2 - pt; pt = $2
         if (d > 0) { if (!on) { on = 1; start = prev_t; cpu = 0 } cpu += d; last = $1; idle = 0 }
         else if (on && ++idle > 3) { print cpu, (last - start) / 1000; on = 0 }
         prev_t = $1 }
       END { if (on) print cpu, (last - start) / 1000 }' "$1"
}

# The floor under the first scan, built before the backlog moves (a failure here keeps it).
cc -O2 -o "$TMP/scan_floor" bench/scan_floor.c

# --- 1. Backlog scan --------------------------------------------------------------------------
# Creating 100,000 files takes seconds, deleting them minutes (ext4 here deletes ~600/s from a
# directory that large): the backlog is kept between runs in .run/bench/ and moved (renamed)
# into place and back, when that is the same filesystem as the temp dir.
CACHE=${BACKLOG_CACHE:-$BENCH_ROOT/.run/bench/backlog-$BACKLOG}
mkdir -p "$(dirname "$CACHE")"
use_cache=0
[ "$(stat -c %d "$TMP")" = "$(stat -c %d "$(dirname "$CACHE")")" ] && use_cache=1
if [ "$use_cache" = 1 ] && [ -f "$CACHE.complete" ] && [ -d "$CACHE" ]; then
  log "reusing the $BACKLOG-file backlog in $CACHE"
  mv -T "$CACHE" "$TMP/backlog"
  rm -f "$CACHE.complete"
else
  [ -e "$CACHE" ] && [ "$use_cache" = 1 ] && mv -T "$CACHE" "$TMP/stale-backlog"
  log "creating $BACKLOG files of 1 KiB"
  mkdir -p "$TMP/backlog"
  head -c $((BACKLOG * 1024)) /dev/zero |
    split -b 1024 -a 6 -d --additional-suffix=.dat - "$TMP/backlog/f"
fi
SESSION=scan
MIN_AGE_S=86400 POLL_S=$SCAN_POLL_S start_service "$TMP/svc-scan" "$ENDPOINT" scan \
  APP_LOG_LEVEL=warn
svc_watch_start "$SESSION"
sleep 1
log "idle baseline (empty session) for 5 s"
i0=$(ticks "$SVC_PID")
sleep 5
idle_tps=$(awk -v a="$i0" -v b="$(ticks "$SVC_PID")" 'BEGIN { printf "%.3f", (b - a) / 5 }')
rss_before=$(proc_rss_kib "$SVC_PID")
log "moving $BACKLOG files into incoming/$SESSION; sampling CPU for $((SCANS + 2)) intervals"
# The first sample before the move: the move's change hint starts the first scan at once.
echo "${EPOCHREALTIME/./} $(ticks "$SVC_PID")" >"$TMP/samples"
if [ -n "${PERF:-}" ]; then # a profile of the first scan, with call graphs: perf report -i "$PERF"
  perf record -q -g -p "$SVC_PID" -o "$PERF" -- sleep "$SCAN_POLL_S" &
  perf_pid=$!
  sleep 0.5
fi
mv -T "$TMP/backlog" "$TMP/svc-scan/incoming/$SESSION"
sample_cpu "$SVC_PID" "$(awk -v p="$SCAN_POLL_S" -v n="$SCANS" 'BEGIN { printf "%d", p * (n + 2) + 0.999 }')" "$TMP/samples"
bursts "$TMP/samples" >"$TMP/bursts"
[ -z "${PERF:-}" ] || wait "$perf_pid"
st=$(svc_status)
hwm=$(proc_hwm_kib "$SVC_PID")
rss=$(proc_rss_kib "$SVC_PID")
queued=$(echo "$st" | jq '.discovered')
stop_pid "$SVC_PID" 30
[ "$queued" -eq 0 ] || die "files were queued although APP_MIN_FILE_AGE_S is huge"
# After the service's scans: the kernel's caches of these files are warm, as for its steady scans.
floor_ms=$("$TMP/scan_floor" "$TMP/svc-scan/incoming/$SESSION" 3)
if [ "$use_cache" = 1 ] &&
  [ "$(find "$TMP/svc-scan/incoming/$SESSION" -type f | wc -l)" -eq "$BACKLOG" ]; then
  mv -T "$TMP/svc-scan/incoming/$SESSION" "$CACHE" && touch "$CACHE.complete"
fi
n_bursts=$(wc -l <"$TMP/bursts")
[ "$n_bursts" -ge 3 ] || die "saw only $n_bursts scans"
read -r first_ticks first_ms < <(head -1 "$TMP/bursts")
# Steady state: bursts 2..n, median CPU and wall; total CPU rate over the sampled window.
read -r med_ticks _ < <(tail -n +2 "$TMP/bursts" | sort -n -k1,1 |
  awk '{ c[NR] = $1; w[NR] = $2 } END { m = int((NR + 1) / 2); print c[m], w[m] }')
steady_ms_sorted=$(tail -n +2 "$TMP/bursts" | awk '{ print $2 }' | sort -n | awk '{ w[NR] = $1 } END { print w[int((NR + 1) / 2)] }')
tick_ms=$(awk -v t="$CLK_TCK" 'BEGIN { print 1000 / t }')
out "### Scan of a $BACKLOG-file backlog (nothing claimed: APP_MIN_FILE_AGE_S=86400, APP_POLL_INTERVAL_S=$SCAN_POLL_S)"
out ""
out "| measure | value |"
out "|---|---:|"
out "| first scan (stat of every file, tracker fill): CPU | $(awk -v a="$first_ticks" -v t="$tick_ms" 'BEGIN { printf "%.0f ms", a * t }') |"
out "| first scan: wall (CPU burst length) | $(printf '%.0f' "$first_ms") ms |"
out "| floor: list and stat every file, nothing else (bench/scan_floor.c, 3 passes, warm caches): CPU | ${floor_ms// / , } ms |"
out "| steady-state scan: CPU (median of $((n_bursts - 1))) | $(awk -v a="$med_ticks" -v t="$tick_ms" 'BEGIN { printf "%.0f ms", a * t }') |"
out "| steady-state scan: CPU per file | $(awk -v a="$med_ticks" -v t="$tick_ms" -v n="$BACKLOG" 'BEGIN { printf "%.2f µs", a * t * 1000 / n }') |"
out "| steady-state scan: wall (median burst length) | $(printf '%.0f' "$steady_ms_sorted") ms |"
out "| last scan as the service measures it (/v1/status last_scan: scanning thread's CPU, wall, files) | $(echo "$st" | jq -r '.last_scan | "\(.cpu_ms | floor) ms CPU, \(.wall_ms | floor) ms, \(.files) files"') |"
out "| CPU share at this poll interval | $(awk -v a="$med_ticks" -v t="$tick_ms" -v p="$SCAN_POLL_S" 'BEGIN { printf "%.1f %%", a * t / (p * 10) }') of one core |"
out "| idle service (empty session), CPU | $(awk -v a="$idle_tps" -v t="$tick_ms" 'BEGIN { printf "%.1f ms/s", a * t }') |"
out "| VmRSS before the backlog / with it | $((rss_before / 1024)) MiB / $((rss / 1024)) MiB |"
out "| VmHWM with the backlog | $((hwm / 1024)) MiB ($(awk -v a="$hwm" -v b="$rss_before" -v n="$BACKLOG" 'BEGIN { printf "%.0f", (a - b) * 1024 / n }') bytes per waiting file above the idle RSS) |"
out ""

# --- 2. Trickle latency -----------------------------------------------------------------------
TOTAL=$((RATE * TRICKLE_S))
SESSION=trickle
MIN_AGE_S=0.2 POLL_S=0.2 start_service "$TMP/svc-trickle" "$ENDPOINT" trickle
svc_watch_start "$SESSION"
inc=$TMP/svc-trickle/incoming/$SESSION
mkdir -p "$inc"
# Watcher: list the container every 50 ms; note when each blob name first appears.
(
  declare -A seen=()
  end=$((SECONDS + TRICKLE_S + 60))
  while [ "$SECONDS" -lt "$end" ]; do
    t=$EPOCHREALTIME
    while read -r name; do
      [ -n "$name" ] || continue
      if [ -z "${seen[$name]:-}" ]; then seen[$name]=1; echo "${name##*/} $t"; fi
    done < <(curl -s --max-time 5 "$ENDPOINT/trickle?restype=container&comp=list&maxresults=5000&$SAS" |
      grep -o '<Name>[^<]*</Name>' | sed 's/<[^>]*>//g')
    [ "${#seen[@]}" -ge "$TOTAL" ] && break
    sleep 0.05
  done
) >"$TMP/seen" &
WATCH_PID=$!
track "$WATCH_PID"
log "trickle: $RATE files/s x $TRICKLE_S s = $TOTAL files of 64 KiB"
c0=$(proc_cpu_s "$SVC_PID")
start_us=${EPOCHREALTIME/./}
for i in $(seq 1 "$TOTAL"); do
  target=$((start_us + (i - 1) * 1000000 / RATE))
  now_us=${EPOCHREALTIME/./}
  if [ "$now_us" -lt "$target" ]; then
    sleep "$(awk -v d=$((target - now_us)) 'BEGIN { printf "%.6f", d / 1e6 }')"
  fi
  name=$(printf 't%05d.bin' "$i")
  head -c 65536 /dev/urandom >"$inc/$name"
  echo "$name $EPOCHREALTIME" >>"$TMP/closed"
done
deadline=$((SECONDS + 60))
up=0
while [ "$SECONDS" -lt "$deadline" ]; do
  svc_counters 2>/dev/null || true  # 0s while the service does not answer
  up=$SVC_UP
  [ "$up" -ge "$TOTAL" ] && break
  sleep 0.1
done
st=$(svc_status)
c1=$(proc_cpu_s "$SVC_PID")
wait "$WATCH_PID" || true
[ "$up" -eq "$TOTAL" ] || die "trickle: only $up of $TOTAL uploaded"
[ "$(echo "$st" | jq '.failed')" -eq 0 ] || die "trickle: failed files"
lat=$(join <(sort "$TMP/closed") <(sort "$TMP/seen") |
  awk '{ print ($3 - $2) * 1000 }' | sort -n |
  awk '{ v[NR] = $1 } END { if (NR == 0) { print "none"; exit }
         printf "%d %.0f %.0f %.0f %.0f", NR, v[int(NR * 0.5 + 0.5)], v[int(NR * 0.95 + 0.5)],
           v[int(NR * 0.99 + 0.5)], v[NR] }')
read -r n_lat p50 p95 p99 pmax <<<"$lat"
out "### Latency at a steady trickle ($RATE files/s of 64 KiB for $TRICKLE_S s; APP_POLL_INTERVAL_S=0.2, APP_MIN_FILE_AGE_S=0.2)"
out ""
out "| measure | p50 | p95 | p99 | max |"
out "|---|---:|---:|---:|---:|"
out "| service: ready -> committed (/v1/status last_minute.latency_s, $(echo "$st" | jq '.last_minute.samples') samples) | $(echo "$st" | jq -r '.last_minute.latency_s | "\(.p50 * 1000 | round) ms | \(.p95 * 1000 | round) ms | \(.p99 * 1000 | round) ms"') | - |"
out "| ours: producer close() -> blob in a listing ($n_lat files, listing polled every 50 ms) | $p50 ms | $p95 ms | $p99 ms | $pmax ms |"
out ""
out "Service CPU during the trickle: $(awk -v a="$c0" -v b="$c1" -v n="$TOTAL" 'BEGIN { printf "%.2f s, %.2f ms per file (includes the 0.2 s scans)", b - a, (b - a) * 1000 / n }')."
stop_pid "$SVC_PID" 30
[ -n "${OUT:-}" ] && cp "$REPORT" "$OUT"
log "done"

#!/usr/bin/env bash
# Writes the generated part of bench/RESULTS.md (between the markers) from the outputs of
# bench/run.sh and bench/scale.sh, with the date, the machine and the tool versions.
# Usage: bench/update-results.sh run.md scale.md
set -euo pipefail
cd "$(dirname "$0")/.."
run_md=$1
scale_md=$2
results=bench/RESULTS.md
begin='<!-- generated:begin (bench/update-results.sh; edit outside the markers) -->'
end='<!-- generated:end -->'
if [ ! -f "$results" ] || ! grep -qF "$begin" "$results"; then
  printf '# Benchmark results\n\n%s\n%s\n' "$begin" "$end" >"$results"
fi
azcopy=node_modules/@azure-tools/azcopy-linux/dist/bin/azcopy_linux_amd64
fs_of_tmp=$(findmnt -no SOURCE,FSTYPE,OPTIONS -T "${BENCH_TMP:-/tmp}" 2>/dev/null | head -1 || true)
disk=$(lsblk -dno NAME,SIZE,ROTA,MODEL 2>/dev/null | tr '\n' ';' || true)
gen=$(mktemp)
{
  echo "$begin"
  echo
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') at commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "(service binary build/bin/nfs-blob-uploader, Release)."
  echo
  echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), " \
    "$(free -g | awk '/^Mem:/ { print $2 }') GiB memory, kernel $(uname -r), $(sed -n 's/^PRETTY_NAME="\(.*\)"/\1/p' /etc/os-release);" \
    "files and temp dirs on ${fs_of_tmp:-?} (disks: ${disk:-?})."
  echo "Tools: $(rclone version 2>/dev/null | head -1), AzCopy $("$azcopy" --version 2>/dev/null | awk '{ print $3 }')," \
    "Azurite $(node -p 'require("./node_modules/azurite/package.json").version' 2>/dev/null) (in memory)," \
    "$(nginx -v 2>&1 | sed 's/nginx version: //') (nginx-light + echo module), node $(node --version)."
  echo
  # shellcheck disable=SC2016  # Markdown code spans, not shell
  echo 'Commands: `make bench` (= `bench/run.sh` then `bench/scale.sh`, then this file is rewritten);'
  # shellcheck disable=SC2016
  echo '`make bench-smoke` (= `SCALE=smoke bench/run.sh`). Other machines/other agents may have been'
  echo 'busy on the same 2 cores: read the ratios (same run, same data, same server) rather than the'
  echo 'absolute figures.'
  echo
  echo '## Side by side (bench/run.sh)'
  echo
  cat "$run_md"
  echo
  echo '## Scale and latency (bench/scale.sh)'
  echo
  cat "$scale_md"
  echo
  echo "$end"
} >"$gen"
awk -v b="$begin" -v e="$end" -v g="$gen" '
  $0 == b { while ((getline l < g) > 0) print l; skip = 1; next }
  $0 == e { skip = 0; next }
  !skip { print }' "$results" >"$results.tmp"
mv "$results.tmp" "$results"
rm -f "$gen"
echo "updated $results"

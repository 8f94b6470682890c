#!/usr/bin/env bash
# The client of the uploader's API behind make watch-start, watch-stop and test-status:
#   scripts/api.sh METHOD PATH [JSON body]
# The address is $API when set (http://host:port); else APP_HTTP_HOST and APP_HTTP_PORT, and the
# token APP_HTTP_TOKEN, come from the environment, else from the env file the service reads
# ($APP_ENV_FILE, default ./.env), so that a port or token set there is the one used. The token
# goes to curl on its standard input (-H @-), never on its command line, which ps shows.
set -euo pipefail

if (($# < 2 || $# > 3)); then
  echo "usage: $0 METHOD PATH [JSON body]" >&2
  exit 2
fi
method=$1 path=$2

env_file=${APP_ENV_FILE:-.env}
# The value of the last `KEY=VALUE` line for $1 in the env file (an `export ` prefix, blanks
# around it and one pair of quotes taken off); nothing when there is none.
from_env_file() {
  [[ -r $env_file ]] || return 0
  sed -nE "s/^[[:space:]]*(export[[:space:]]+)?$1[[:space:]]*=[[:space:]]*//p" "$env_file" |
    tail -n 1 | sed -E "s/[[:space:]]+\$//; s/^\"(.*)\"\$/\\1/; s/^'(.*)'\$/\\1/"
}

if [[ -z ${API:-} ]]; then
  host=${APP_HTTP_HOST:-$(from_env_file APP_HTTP_HOST)}
  port=${APP_HTTP_PORT:-$(from_env_file APP_HTTP_PORT)}
  case $host in
    "" | 0.0.0.0) host=127.0.0.1 ;;  # every address: this host's loopback is one
    :: | "[::]") host="[::1]" ;;
    *:*) [[ $host == \[* ]] || host="[$host]" ;;  # an IPv6 literal
  esac
  API="http://$host:${port:-8000}"
fi
token=${APP_HTTP_TOKEN-$(from_env_file APP_HTTP_TOKEN)}

args=(-sS --max-time 10 -X "$method" -H @-)
if (($# == 3)); then
  args+=(-H 'Content-Type: application/json' -d "$3")
elif [[ $method == POST ]]; then
  args+=(-d '')
fi
printf '%s\n' "${token:+Authorization: Bearer $token}" | curl "${args[@]}" "$API$path"
echo

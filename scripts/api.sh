#!/usr/bin/env bash
# The client of the uploader's API behind make watch-start, watch-stop and test-status:
#   scripts/api.sh METHOD PATH [JSON body]
# The address is $API when set (http://host:port); else APP_HTTP_HOST and APP_HTTP_PORT, and the
# token APP_HTTP_TOKEN, come from the environment, else from the env file the service reads
# ($APP_ENV_FILE, default ./.env), read as the service reads it, so that a port or token set there
# is the one used. The token goes with POSTs only (the GET routes are open), and to curl on its
# standard input (-H @-), never on its command line, which ps shows. Never through a proxy that
# http_proxy names (the token would go to it), and the exit status is curl's: 22 for an answer of
# 400 or above, whose body is printed all the same.
set -euo pipefail

if (($# < 2 || $# > 3)); then
  echo "usage: $0 METHOD PATH [JSON body]" >&2
  exit 2
fi
method=$1 path=$2

env_file=${APP_ENV_FILE:-.env}
# As the service: the default .env may be missing; a file named, or one there, must be readable.
if [[ (-n ${APP_ENV_FILE:-} || -e $env_file) && (! -r $env_file || -d $env_file) ]]; then
  echo "$0: $env_file cannot be read (nor can the service read it)" >&2
  exit 2
fi

# $1 without the blanks at either end.
trimmed() {
  local s=$1
  s=${s#"${s%%[![:space:]]*}"}
  printf '%s' "${s%"${s##*[![:space:]]}"}"
}

# The value of the last line for $1 in the env file, as the service's parser takes it (a
# byte-order mark, an `export ` prefix, blanks, one pair of quotes, a ` #` comment); nothing
# when there is none.
from_env_file() {
  [[ -r $env_file ]] || return 0
  local line value result='' first=1 quote rest after
  while IFS= read -r line || [[ -n $line ]]; do
    if ((first)); then
      line=${line#$'\xEF\xBB\xBF'}
      first=0
    fi
    line=$(trimmed "$line")
    [[ $line == export\ * ]] && line=$(trimmed "${line#export }")
    [[ $line == *=* && $(trimmed "${line%%=*}") == "$1" ]] || continue
    value=$(trimmed "${line#*=}")
    quote=${value:0:1}
    rest=${value:1}
    after=$(trimmed "${rest#*"$quote"}")
    if [[ ($quote == '"' || $quote == "'") && $rest == *"$quote"* &&
      (-z $after || $after == \#*) ]]; then
      value=${rest%%"$quote"*}
    elif [[ $value == *" #"* ]]; then
      value=$(trimmed "${value%%" #"*}")
    fi
    result=$value
  done <"$env_file"
  printf '%s' "$result"
}

# As the service takes them: the environment's value when the variable is set there, even
# empty; an empty value is the default.
if [[ -z ${API:-} ]]; then
  host=$(trimmed "${APP_HTTP_HOST-$(from_env_file APP_HTTP_HOST)}")
  port=$(trimmed "${APP_HTTP_PORT-$(from_env_file APP_HTTP_PORT)}")
  case $host in
    "" | 0.0.0.0) host=127.0.0.1 ;; # every address: this host's loopback is one
    :: | "[::]") host="[::1]" ;;
    *:*) [[ $host == \[* ]] || host="[$host]" ;; # an IPv6 literal
  esac
  API="http://$host:${port:-8000}"
fi
token=''
[[ $method == GET ]] || token=$(trimmed "${APP_HTTP_TOKEN-$(from_env_file APP_HTTP_TOKEN)}")

args=(-sS --noproxy '*' --fail-with-body --max-time 10 -X "$method" -H @-)
if (($# == 3)); then
  args+=(-H 'Content-Type: application/json' -d "$3")
elif [[ $method == POST ]]; then
  args+=(-d '')
fi
rc=0
printf '%s\n' "${token:+Authorization: Bearer $token}" | curl "${args[@]}" "$API$path" || rc=$?
echo
exit "$rc"

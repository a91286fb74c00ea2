#!/usr/bin/env bash
# Local Redis server for the tests: Debian's redis-server on a private port, no persistence, all in DIR.
#
#   scripts/local-redis.sh start  DIR   install redis-server if missing, start, print exports
#   scripts/local-redis.sh stop   DIR   stop the server and remove DIR
#   scripts/local-redis.sh status DIR   exit 0 (and print exports) if running
#
# The LAST line printed on stdout by `start` (and `status`) is shell-sourceable:
#   export REDIS_URL=redis://127.0.0.1:PORT
set -euo pipefail

CMD="${1:-}"
DIR="${2:-}"
[ -n "$CMD" ] && [ -n "$DIR" ] || { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }
case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac
DIR="${DIR%/}"

log() { printf '[local-redis] %s\n' "$*" >&2; }
die() { printf '[local-redis] ERROR: %s\n' "$*" >&2; exit 1; }

install() {
  command -v redis-server >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || die "redis-server is missing and apt-get is not there: install Redis yourself"
  local SUDO=()
  [ "$(id -u)" = 0 ] || SUDO=(sudo)
  log "installing redis-server with apt-get"
  if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >&2; then
    "${SUDO[@]}" apt-get update >&2 || die "apt-get update failed"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >&2 \
      || die "apt-get install redis-server failed"
  fi
  command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after apt-get install"
}

pid_alive() {
  local pid
  [ -s "$DIR/redis.pid" ] || return 1
  pid="$(tr -dc '0-9' <"$DIR/redis.pid")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q redis-server
}

exports() { echo "export REDIS_URL=redis://127.0.0.1:$(cat "$DIR/port")"; }

answers() { redis-cli -p "$(cat "$DIR/port")" ping 2>/dev/null | grep -q PONG; }

case "$CMD" in
  start)
    install
    if pid_alive && answers; then exports; exit 0; fi
    mkdir -p "$DIR"
    # A free port: ask the kernel (python3 is on every machine of this kind; fall back to a random one).
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)))"
    echo "$port" >"$DIR/port"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
      --dir "$DIR" --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" >&2
    for _ in $(seq 1 100); do
      answers && { log "redis-server $(redis-server --version | grep -o 'v=[0-9.]*') on port $port"; exports; exit 0; }
      sleep 0.1
    done
    tail -n 40 "$DIR/redis.log" >&2 || true
    die "redis-server did not answer on port $port"
    ;;
  stop)
    if pid_alive; then
      pid="$(tr -dc '0-9' <"$DIR/redis.pid")"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    fi
    rm -rf "$DIR"
    ;;
  status)
    pid_alive && answers && exports
    ;;
  *) echo "usage: $0 start|stop|status DIR" >&2; exit 2 ;;
esac

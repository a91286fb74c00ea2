#!/usr/bin/env bash
# Local S3 server for the tests: Ceph's radosgw on a throw-away one-node
# cluster (one monitor, one memstore OSD, one radosgw), everything inside DIR.
#
#   scripts/local-s3.sh start  [DIR]   install Ceph if missing, start, print exports
#   scripts/local-s3.sh stop   [DIR]   stop the daemons and remove DIR
#   scripts/local-s3.sh status [DIR]   exit 0 (and print exports) if running
#
# DIR defaults to $PWD/.s3-local. Logs go to stderr; the LAST lines printed on
# stdout by `start` (and `status`) are shell-sourceable:
#   export S3_ENDPOINT=http://127.0.0.1:7480
#   export S3_ACCESS_KEY_ID=...
#   export S3_SECRET_ACCESS_KEY=...
#   export S3_REGION=us-east-1
#
# Environment:
#   LOCAL_S3_PORT            radosgw port (default 7480; if unset and 7480 is
#                            taken, a free port is picked)
#   LOCAL_S3_ACCESS_KEY      S3 access key      (default spooltestkey)
#   LOCAL_S3_SECRET_KEY      S3 secret key      (default spooltestsecret)
#   LOCAL_S3_MEMSTORE_BYTES  OSD memstore size  (default 4 GiB)
#   LOCAL_S3_TIMEOUT         seconds to wait for the endpoint (default 90)
#   LOCAL_S3_KEEP_LOGS       if set, `stop` copies the daemons' logs there first
set -euo pipefail

CMD="${1:-}"
DIR="${2:-$PWD/.s3-local}"
ACCESS_KEY="${LOCAL_S3_ACCESS_KEY:-spooltestkey}"
SECRET_KEY="${LOCAL_S3_SECRET_KEY:-spooltestsecret}"
MEMSTORE_BYTES="${LOCAL_S3_MEMSTORE_BYTES:-4294967296}"
TIMEOUT="${LOCAL_S3_TIMEOUT:-90}"
REGION="us-east-1"
START_LOCK="${TMPDIR:-/tmp}/express-spool-local-s3.start.lock"
RGW_NAME="client.rgw.local"
MON_ID="a"

log() { printf '[local-s3] %s\n' "$*" >&2; }
die() { printf '[local-s3] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
  echo "usage: $0 start|stop|status [DIR]   (DIR defaults to \$PWD/.s3-local)" >&2
  exit 2
}

# Make DIR absolute (the daemons chdir to /).
case "$DIR" in
  /*) ;;
  *) DIR="$PWD/$DIR" ;;
esac
DIR="${DIR%/}"
CONF="$DIR/ceph.conf"
RUN="$DIR/run"
LOGS="$DIR/log"

now() { date +%s; }

port_in_use() {
  # true if something listens on 127.0.0.1:$1
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
  # first port >= $1 that nobody listens on (and that is not in $2..)
  local p="$1"; shift
  local taken=" $* "
  while port_in_use "$p" || [[ "$taken" == *" $p "* ]]; do
    p=$((p + 1))
    [ "$p" -lt 65000 ] || die "no free port found"
  done
  echo "$p"
}

pid_of() {
  # pid from a pid file, only if alive and really a daemon of this DIR
  local f="$RUN/$1.pid" pid
  [ -s "$f" ] || return 1
  pid="$(tr -dc '0-9' <"$f")"
  [ -n "$pid" ] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$CONF" || return 1
  echo "$pid"
}

endpoint() { echo "http://127.0.0.1:$(cat "$DIR/rgw.port")"; }

endpoint_answers() {
  # any HTTP answer from radosgw counts (anonymous ListBuckets gives 200)
  local code
  code="$(curl -s -o /dev/null -m 3 -w '%{http_code}' "$(endpoint)/" 2>/dev/null || true)"
  [ -n "$code" ] && [ "$code" != "000" ]
}

print_exports() {
  local ep; ep="$(endpoint)"
  echo "export S3_ENDPOINT=$ep"
  echo "export S3_ACCESS_KEY_ID=$(cat "$DIR/access.key")"
  echo "export S3_SECRET_ACCESS_KEY=$(cat "$DIR/secret.key")"
  echo "export S3_REGION=$REGION"
}

is_running() {
  [ -f "$DIR/ready" ] || return 1
  pid_of mon.$MON_ID >/dev/null && pid_of osd.0 >/dev/null && pid_of "$RGW_NAME" >/dev/null || return 1
  endpoint_answers
}

tail_logs() {
  local f
  for f in "$LOGS"/*; do
    [ -s "$f" ] || continue
    printf '\n----- tail of %s -----\n' "$f" >&2
    tail -n 40 "$f" >&2 || true
  done
}

fail_start() {
  log "ERROR: $*"
  tail_logs
  log "ERROR: $* (logs above; cluster dir: $DIR)"
  exit 1
}

ceph_() { ceph -c "$CONF" --connect-timeout 10 "$@"; }

install_ceph() {
  local missing=()
  for b in radosgw ceph-mon ceph-osd ceph radosgw-admin monmaptool ceph-authtool; do
    command -v "$b" >/dev/null 2>&1 || missing+=("$b")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "missing: ${missing[*]} - installing radosgw ceph-mon ceph-osd from apt"
  local SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      SUDO=(sudo)
    else
      die "Ceph is not installed and we are not root and sudo is missing; install it yourself: apt-get install radosgw ceph-mon ceph-osd"
    fi
  fi
  command -v apt-get >/dev/null 2>&1 || die "Ceph is not installed and apt-get is missing; install radosgw, ceph-mon and ceph-osd yourself"
  local pkgs=(radosgw ceph-mon ceph-osd)
  local cand
  cand="$(apt-cache policy radosgw 2>/dev/null | awk '/Candidate:/ {print $2}')"
  if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then
    log "apt-get update"
    "${SUDO[@]}" apt-get update >&2 || die "apt-get update failed"
  fi
  if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" >&2; then
    log "install failed; retrying after apt-get update"
    "${SUDO[@]}" apt-get update >&2 || die "apt-get update failed"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" >&2 \
      || die "apt-get install ${pkgs[*]} failed"
  fi
  for b in radosgw ceph-mon ceph-osd ceph radosgw-admin monmaptool ceph-authtool; do
    command -v "$b" >/dev/null 2>&1 || die "$b still missing after apt-get install"
  done
}

is_alive() {
  # A process counts as gone when /proc has no entry, or when it is a zombie
  # with no thread left (PID 1 here may take seconds to reap it). A zombie
  # leader with live threads is still alive (it may still write into DIR).
  local st threads
  [ -r "/proc/$1/status" ] || return 1
  st="$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null)" || return 1
  threads="$(awk '/^Threads:/ {print $2}' "/proc/$1/status" 2>/dev/null)" || return 1
  [ -n "$st" ] || return 1
  if [ "$st" = Z ] || [ "$st" = X ]; then
    [ "${threads:-1}" -gt 1 ]
    return
  fi
  return 0
}

wait_gone() {
  # wait up to $1 tenths of a second for pids $2.. to exit; print survivors
  local n="$1" pid _ alive=(); shift
  for _ in $(seq 1 "$n"); do
    alive=()
    for pid in "$@"; do
      is_alive "$pid" && alive+=("$pid")
    done
    [ ${#alive[@]} -eq 0 ] && return 0
    sleep 0.1
  done
  echo "${alive[*]}"
}

stop_pids() {
  # SIGTERM, wait up to 3 s, then SIGKILL (the data is thrown away anyway)
  [ $# -eq 0 ] && return 0
  local pid left
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  left="$(wait_gone 30 "$@")"
  [ -z "$left" ] && return 0
  log "still alive 3 s after SIGTERM, sending SIGKILL: $left"
  for pid in $left; do kill -KILL "$pid" 2>/dev/null || true; done
  # shellcheck disable=SC2086
  left="$(wait_gone 50 $left)"
  [ -z "$left" ] || log "warning: could not kill $left"
}

kill_daemons() {
  # One after the other: radosgw needs the OSD to shut down cleanly (else it
  # hangs until SIGKILL), and the OSD tells the monitor it is going down.
  local name pid
  for name in "$RGW_NAME" osd.0 mon.$MON_ID; do
    if pid="$(pid_of "$name")"; then
      stop_pids "$pid"
    fi
  done
  return 0
}

do_stop() {
  if [ -d "$DIR" ]; then
    [ -f "$CONF" ] || [ -f "$DIR/ready" ] || [ -d "$RUN" ] \
      || die "$DIR does not look like a local-s3 dir; not removing it"
    kill_daemons
    if [ -n "${LOCAL_S3_KEEP_LOGS:-}" ] && [ -d "$LOGS" ]; then
      mkdir -p "$LOCAL_S3_KEEP_LOGS" && cp -a "$LOGS/." "$LOCAL_S3_KEEP_LOGS/" \
        && log "logs kept in $LOCAL_S3_KEEP_LOGS"
    fi
    local tries=5
    until rm -rf "$DIR" 2>/dev/null; do
      tries=$((tries - 1))
      [ "$tries" -gt 0 ] || break
      sleep 0.5
    done
    [ ! -e "$DIR" ] || die "could not remove $DIR"
    log "stopped, removed $DIR"
  else
    log "not running ($DIR does not exist)"
  fi
}

do_status() {
  if is_running; then
    log "running: $(endpoint) (dir $DIR)"
    print_exports
  else
    log "not running (dir $DIR)"
    exit 1
  fi
}

do_start() {
  if is_running; then
    log "already running: $(endpoint)"
    print_exports
    return 0
  fi
  if [ -d "$DIR" ]; then
    log "stale or half-started cluster in $DIR, cleaning it up"
    do_stop
  fi

  local v
  for v in LOCAL_S3_PORT:"${LOCAL_S3_PORT:-7480}" LOCAL_S3_MEMSTORE_BYTES:"$MEMSTORE_BYTES" LOCAL_S3_TIMEOUT:"$TIMEOUT"; do
    [[ "${v#*:}" =~ ^[0-9]+$ ]] || die "${v%%:*} must be a whole number, got '${v#*:}'"
  done
  [[ "$ACCESS_KEY$SECRET_KEY" =~ ^[A-Za-z0-9+/=._-]+$ ]] \
    || die "LOCAL_S3_ACCESS_KEY / LOCAL_S3_SECRET_KEY: use letters, digits and + / = . _ - only"

  install_ceph
  local t0; t0="$(now)"
  log "ceph $(ceph --version 2>/dev/null | awk '{print $3}')"

  # ---- ports ----------------------------------------------------------
  # Picking a free port and binding it are apart in time: starts running side by side (several test runs,
  # the demo, the benchmark) take turns from here until radosgw listens, so they cannot pick the same ports.
  # The daemons are started with the lock's descriptor closed (9>&-), so they do not hold it.
  [ -e "$START_LOCK" ] || (umask 0 && : >>"$START_LOCK") 2>/dev/null || true
  exec 9<"$START_LOCK" # read-only: any user may lock it
  if ! flock -w 600 9; then die "another local-s3 start held $START_LOCK for 10 minutes"; fi
  local rgw_port
  if [ -n "${LOCAL_S3_PORT:-}" ]; then
    rgw_port="$LOCAL_S3_PORT"
    port_in_use "$rgw_port" && die "port $rgw_port (LOCAL_S3_PORT) is already in use"
  else
    rgw_port="$(free_port 7480)"
    [ "$rgw_port" = 7480 ] || log "port 7480 is in use, using $rgw_port"
  fi
  local mon_v2 mon_v1
  mon_v2="$(free_port 3300 "$rgw_port")"
  mon_v1="$(free_port 6789 "$rgw_port" "$mon_v2")"

  # ---- layout -----------------------------------------------------------
  mkdir -p "$DIR" "$RUN" "$LOGS" "$DIR/mon" "$DIR/osd/ceph-0" "$DIR/rgw" "$DIR/tmp"
  printf '%s' "$rgw_port" >"$DIR/rgw.port"
  printf '%s' "$ACCESS_KEY" >"$DIR/access.key"
  printf '%s' "$SECRET_KEY" >"$DIR/secret.key"
  local fsid osd_uuid
  fsid="$(cat /proc/sys/kernel/random/uuid)"
  osd_uuid="$(cat /proc/sys/kernel/random/uuid)"
  local mon_addr="[v2:127.0.0.1:$mon_v2,v1:127.0.0.1:$mon_v1]"

  cat >"$CONF" <<EOF
# generated by scripts/local-s3.sh - throw-away test cluster
[global]
fsid = $fsid
mon host = $mon_addr
public network = 127.0.0.0/8
cluster network = 127.0.0.0/8
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
keyring = $DIR/keyring
run dir = $RUN
admin socket = $RUN/\$cluster-\$name.asok
pid file = $RUN/\$name.pid
log file = $LOGS/\$cluster-\$name.log
log to stderr = false
err to stderr = true
crash dir = $DIR/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
osd crush update on start = false
osd class update on start = false
osd crush chooseleaf type = 0

[mon]
# the monitor batches map changes for paxos_propose_interval (1 s): each pool
# radosgw creates costs two osdmap epochs, so that alone made start ~10 s slower
paxos propose interval = 0.05
paxos min wait = 0.01
mon data = $DIR/mon/\$cluster-\$id
mon cluster log file = $LOGS/\$cluster.log

[osd]
osd data = $DIR/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES

[$RGW_NAME]
# radosgw's built-in defaults ask for cephx and a "secure" monitor connection,
# which cannot be had with auth none; without this it hangs until timeout.
auth client required = none
ms mon client mode = crc
client mount timeout = 30
rgw data = $DIR/rgw
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw enable usage log = false
# deleted and aborted data (the tails of objects > 4 MiB, multipart parts)
# goes to radosgw's garbage collector, which by default waits 2 h: memstore
# keeps it all in RAM until then, so collect it after seconds instead
rgw gc obj min wait = 5
rgw gc processor period = 5
rgw gc processor max time = 5
EOF

  local common=(-c "$CONF")
  # as root the daemons would otherwise try to switch to the ceph user
  [ "$(id -u)" -ne 0 ] || common+=(--setuser root --setgroup root)

  # ---- monitor ------------------------------------------------------------
  log "creating monitor (127.0.0.1:$mon_v2/$mon_v1, fsid $fsid)"
  ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n "mon." --cap mon 'allow *' >/dev/null 2>&1 \
    || die "ceph-authtool failed"
  monmaptool --create --fsid "$fsid" --addv "$MON_ID" "$mon_addr" "$DIR/monmap" >"$LOGS/setup.out" 2>&1 \
    || { cat "$LOGS/setup.out" >&2; die "monmaptool failed"; }
  ceph-mon "${common[@]}" --mkfs -i "$MON_ID" --monmap "$DIR/monmap" --keyring "$DIR/keyring" \
    >>"$LOGS/setup.out" 2>&1 || fail_start "ceph-mon --mkfs failed"
  timeout 60 ceph-mon "${common[@]}" -i "$MON_ID" </dev/null >>"$LOGS/mon.out" 2>&1 9>&- \
    || fail_start "ceph-mon did not start"

  local deadline=$(( $(now) + TIMEOUT ))
  until ceph_ mon stat >/dev/null 2>>"$LOGS/setup.out"; do
    [ "$(now)" -lt "$deadline" ] || fail_start "monitor did not answer within ${TIMEOUT}s"
    pid_of mon.$MON_ID >/dev/null || fail_start "ceph-mon exited"
    sleep 0.5
  done
  log "monitor up after $(( $(now) - t0 ))s"

  # ---- OSD ------------------------------------------------------------------
  local osd_id
  osd_id="$(ceph_ osd new "$osd_uuid" 2>>"$LOGS/setup.out")" || fail_start "ceph osd new failed"
  [ "$osd_id" = 0 ] || fail_start "expected osd id 0, got '$osd_id'"
  ceph-osd "${common[@]}" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$LOGS/setup.out" 2>&1 \
    || fail_start "ceph-osd --mkfs failed"
  # osd crush update on start = false: we place it ourselves (this also
  # creates the host bucket under root=default)
  ceph_ osd crush add osd.0 1.0 host=localhost root=default >>"$LOGS/setup.out" 2>&1 \
    || fail_start "crush map setup failed"
  timeout 60 ceph-osd "${common[@]}" -i 0 </dev/null >>"$LOGS/osd.out" 2>&1 9>&- \
    || fail_start "ceph-osd did not start"
  until [ "$(ceph_ osd stat --format json 2>>"$LOGS/setup.out" | grep -o '"num_up_osds":[0-9]*' | cut -d: -f2)" = 1 ]; do
    [ "$(now)" -lt "$deadline" ] || fail_start "OSD did not come up within ${TIMEOUT}s"
    pid_of osd.0 >/dev/null || fail_start "ceph-osd exited"
    sleep 0.5
  done
  log "osd up after $(( $(now) - t0 ))s"

  # ---- radosgw ----------------------------------------------------------------
  timeout 60 radosgw "${common[@]}" -n "$RGW_NAME" </dev/null >>"$LOGS/rgw.out" 2>&1 9>&- \
    || fail_start "radosgw did not start"
  until endpoint_answers; do
    [ "$(now)" -lt "$deadline" ] || fail_start "S3 endpoint $(endpoint) did not answer within ${TIMEOUT}s"
    pid_of "$RGW_NAME" >/dev/null || fail_start "radosgw exited"
    sleep 0.5
  done
  log "radosgw answers on $(endpoint) after $(( $(now) - t0 ))s"
  flock -u 9
  exec 9>&-

  # same settings as radosgw (-n), but its own admin socket
  radosgw-admin -c "$CONF" -n "$RGW_NAME" --admin-socket "$RUN/radosgw-admin.asok" \
    user create --uid=test --display-name=test \
    --access-key="$ACCESS_KEY" --secret="$SECRET_KEY" >>"$LOGS/setup.out" 2>&1 \
    || fail_start "radosgw-admin user create failed"

  touch "$DIR/ready"
  log "ready after $(( $(now) - t0 ))s (dir $DIR; stop with: $0 stop $DIR)"
  print_exports
}

case "$CMD" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  *) usage ;;
esac

#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the SLURM sweep test and for trying
# `alpose run -m hydra/launcher=slurm` without a site cluster:
#
#   scripts/slurm_cluster.sh up       install what is missing (Debian/Ubuntu, as root), start it
#   scripts/slurm_cluster.sh status   each daemon and the node's state; exit 0 when it is usable
#   scripts/slurm_cluster.sh down     stop each daemon by its recorded PID, in reverse order
#
# Daemons, in start order: munged (as user munge), mariadbd on 127.0.0.1 (the accounting
# database), slurmdbd, slurmctld, slurmd; one partition `debug` holding the node. Accounting is not
# optional: without it `sacct` cannot tell submitit that a job was cancelled, and a sweep with a
# killed job would wait forever. Configs, state, logs and PID files live under one folder,
# $ALPOSE_SLURM_DIR (default /tmp/alpose-slurm); the only file written outside it is a link
# /etc/slurm/slurm.conf to its slurm.conf, so that sinfo, sbatch and sacct find the cluster
# (removed by `down`). `up` is idempotent: running daemons are kept. When something cannot be
# done it prints one line saying what and why and exits 1.
set -uo pipefail

DIR=${ALPOSE_SLURM_DIR:-/tmp/alpose-slurm}
DB_PORT=${ALPOSE_SLURM_DB_PORT:-6820}  # MariaDB on 127.0.0.1, off the default 3306 on purpose
PARTITION=debug
ETC=$DIR/etc RUN=$DIR/run LOG=$DIR/log STATE=$DIR/state
SYSTEM_CONF=/etc/slurm/slurm.conf
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
COMMANDS=(munged munge unmunge mariadbd mariadb-install-db mariadb mariadb-admin slurmdbd
  slurmctld slurmd sinfo sbatch sacct scancel squeue)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)  # start order; `down` goes in reverse
export SLURM_CONF=$ETC/slurm.conf

fail() {  # the one line, then exit 1
  echo "slurm_cluster: $*" >&2
  exit 1
}

pid_of() {  # the recorded PID of daemon $1 if that process is alive and is that daemon
  local file=$RUN/$1.pid pid
  [ -s "$file" ] || return 1
  pid=$(tr -dc 0-9 <"$file")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
  [ "$(cat "/proc/$pid/comm")" = "$1" ] || return 1  # a reused PID is not ours
  echo "$pid"
}

wait_for() {  # wait_for SECONDS COMMAND...: until the command succeeds
  local until=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$until" ] || return 1
    sleep 0.2
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

node_state() { sinfo -h -o %t 2>/dev/null | head -n1; }

node_usable() { case "$(node_state)" in idle | mix | alloc) return 0 ;; *) return 1 ;; esac; }

install_packages() {
  local missing=() cmd
  for cmd in "${COMMANDS[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
  done
  [ "${#missing[@]}" = 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 ||
    fail "cannot install the SLURM packages (missing: ${missing[*]}): no apt-get on this machine"
  local apt=(apt-get -o DPkg::Lock::Timeout=120 install -y -q --no-install-recommends "${PACKAGES[@]}")
  mkdir -p "$LOG"
  if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" >"$LOG/apt.log" 2>&1; then
    # the package lists may be stale or absent: refresh them once and try again
    apt-get -o DPkg::Lock::Timeout=120 update -q >>"$LOG/apt.log" 2>&1 ||
      fail "cannot reach the package mirror (apt-get update failed; see $LOG/apt.log)"
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" >>"$LOG/apt.log" 2>&1 ||
      fail "apt-get could not install ${PACKAGES[*]} (see $LOG/apt.log)"
  fi
  for cmd in "${COMMANDS[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || fail "$cmd is still missing after installing the packages"
  done
}

write_configs() {
  mkdir -p "$ETC" "$RUN" "$LOG" "$STATE/slurmctld" "$STATE/slurmd"
  chmod 755 "$DIR"
  local host node
  host=$(hostname -s)
  # the node as slurmd sees it (a RealMemory above the real one would drain the node)
  node=$(slurmd -C 2>/dev/null | grep -m1 '^NodeName=') || fail "slurmd -C did not describe this node"
  cat >"$ETC/slurm.conf.new" <<EOF
# Written by scripts/slurm_cluster.sh: a single-node test cluster.
ClusterName=alpose
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
# process tracking and CPU binding without cgroups (with task/none a job sees every core)
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
# submitit ignores SIGTERM: a short grace period, so that a cancelled job really dies
KillWait=5
MailProg=/bin/true
MpiDefault=none
ReturnToService=2
$node State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$ETC/slurm.conf.new" "$ETC/slurm.conf"
  if [ ! -s "$ETC/db.pass" ]; then
    (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$ETC/db.pass")
  fi
  (
    umask 077
    cat >"$ETC/slurmdbd.conf" <<EOF
# Written by scripts/slurm_cluster.sh (slurmdbd refuses a config others can read).
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$ETC/db.pass")
StorageLoc=slurm_acct_db
EOF
  )
  chmod 600 "$ETC/slurmdbd.conf"
  # the client commands (and submitit) read /etc/slurm/slurm.conf: point it at this cluster
  mkdir -p "$(dirname "$SYSTEM_CONF")"
  if [ -e "$SYSTEM_CONF" ] || [ -L "$SYSTEM_CONF" ]; then
    [ "$(readlink "$SYSTEM_CONF")" = "$ETC/slurm.conf" ] ||
      fail "$SYSTEM_CONF belongs to another cluster; move it aside to run this test cluster"
  else
    ln -s "$ETC/slurm.conf" "$SYSTEM_CONF"
  fi
}

start_munged() {
  pid_of munged >/dev/null && return 0
  [ -s /etc/munge/munge.key ] || mungekey --create >/dev/null 2>&1 ||
    fail "no munge key at /etc/munge/munge.key and mungekey could not create one"
  mkdir -p /run/munge "$DIR/munge"
  chown munge: /run/munge "$DIR/munge"
  chmod 700 "$DIR/munge"
  runuser -u munge -- munged --pid-file="$DIR/munge/munged.pid" \
    --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" ||
    fail "could not start munged (see $DIR/munge/munged.log)"
  wait_for 10 test -s "$DIR/munge/munged.pid" || fail "munged wrote no PID file"
  cp "$DIR/munge/munged.pid" "$RUN/munged.pid"
  wait_for 10 bash -c 'munge -n | unmunge' || fail "munged does not answer (see $DIR/munge/munged.log)"
}

start_mariadbd() {
  local db=$DIR/mysql sock=$DIR/mysql/mysqld.sock
  if ! pid_of mariadbd >/dev/null; then
    mkdir -p "$db"
    chown mysql: "$db"
    if [ ! -d "$db/data/mysql" ]; then
      mariadb-install-db --no-defaults --user=mysql --datadir="$db/data" --skip-test-db \
        --auth-root-authentication-method=socket >"$LOG/mariadb-install.log" 2>&1 ||
        fail "could not create the accounting database files (see $LOG/mariadb-install.log)"
    fi
    port_open "$DB_PORT" && fail "port $DB_PORT is taken; set ALPOSE_SLURM_DB_PORT to a free one"
    setsid mariadbd --no-defaults --user=mysql --datadir="$db/data" --socket="$sock" \
      --bind-address=127.0.0.1 --port="$DB_PORT" --pid-file="$db/mariadbd.pid" \
      --log-error="$db/mariadbd.log" </dev/null >/dev/null 2>&1 &
  fi
  wait_for 60 mariadb-admin --no-defaults --socket="$sock" ping ||
    fail "mariadbd does not answer (see $db/mariadbd.log)"
  cp "$db/mariadbd.pid" "$RUN/mariadbd.pid"
  local pass
  pass=$(cat "$ETC/db.pass")
  mariadb --no-defaults --socket="$sock" -e "
    CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pass';
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" >"$LOG/mariadb-setup.log" 2>&1 ||
    fail "could not create the accounting database and its user (see $LOG/mariadb-setup.log)"
}

start_slurm_daemon() {  # start_slurm_daemon NAME WAIT-COMMAND...
  local name=$1
  shift
  if ! pid_of "$name" >/dev/null; then
    "$name" >>"$LOG/$name.start.log" 2>&1 || fail "could not start $name (see $LOG/$name.log)"
  fi
  wait_for 30 "$@" || fail "$name did not come up (see $LOG/$name.log)"
}

up() {
  [ "$(id -u)" = 0 ] || fail "must run as root (it installs packages and starts system daemons)"
  local start=$SECONDS
  install_packages
  write_configs
  start_munged
  start_mariadbd
  start_slurm_daemon slurmdbd port_open 6819
  start_slurm_daemon slurmctld sinfo -h
  start_slurm_daemon slurmd node_usable
  local node
  node=$(sinfo -h -N -o '%N, %c CPUs, %m MB, state %t' | head -n1)
  echo "SLURM cluster up in $((SECONDS - start)) s: partition $PARTITION, node $node (state in $DIR)"
}

down() {
  local i name pid
  if pid_of slurmctld >/dev/null; then  # running jobs go first
    local jobs
    jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    # shellcheck disable=SC2086  # one word per job id
    [ -z "${jobs// /}" ] || scancel --quiet $jobs >/dev/null 2>&1 || true
  fi
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
    name=${DAEMONS[i]}
    pid=$(pid_of "$name") || continue
    kill -TERM "$pid" 2>/dev/null
    wait_for 20 bash -c "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null
    echo "stopped $name (pid $pid)"
  done
  rm -f "$RUN"/*.pid
  if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$ETC/slurm.conf" ]; then
    rm -f "$SYSTEM_CONF"
  fi
}

status() {
  local name pid ok=0
  for name in "${DAEMONS[@]}"; do
    if pid=$(pid_of "$name"); then
      echo "$name: running (pid $pid)"
    else
      echo "$name: not running"
      ok=1
    fi
  done
  if [ "$ok" = 0 ] && node_usable; then
    sinfo -h -N -o "node %N: %t, %c CPUs, %m MB, partition %P" 2>/dev/null
  else
    echo "no usable SLURM node (scripts/slurm_cluster.sh up starts one)"
    ok=1
  fi
  return "$ok"
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*)
  echo "usage: scripts/slurm_cluster.sh up|down|status" >&2
  exit 2
  ;;
esac

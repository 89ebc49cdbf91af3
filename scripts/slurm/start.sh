#!/usr/bin/env bash
# Start a real Slurm cluster of SLURM_NODES nodes (default 2) on this one Debian/Ubuntu machine, with
# accounting (slurmdbd + MariaDB) and optional fake GPUs, for trying FastGPU's Slurm launcher (multi-node DDP
# included) on a workstation and for the tests.
#
# slurmctld runs as this host. Node k is a slurmd named fastgpu-n<k> in its own UTS namespace (its own
# hostname, so jobs on it see that name) and mount namespace (its own spool and pid dir), listening on port
# 6820+k at the loopback address 127.0.0.<k+1> (added to /etc/hosts). No traffic leaves loopback.
# Idempotent: installs what is missing, rewrites the config, starts only what is not running.
# Needs root (apt-get, daemons, namespaces). Stop it with scripts/slurm/stop.sh.
#
#   sudo bash scripts/slurm/start.sh                     # 2 nodes, each all CPUs of this machine, 2 fake GPUs
#   sudo SLURM_NODES=1 FAKE_GPUS=0 SLURM_CPUS=4 bash scripts/slurm/start.sh
set -euo pipefail

FAKE_GPUS=${FAKE_GPUS:-2}
SLURM_NODES=${SLURM_NODES:-2}
SLURM_CPUS=${SLURM_CPUS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}  # CPUs each node offers (config_overrides lets you advertise more)
CLUSTER=${SLURM_CLUSTER_NAME:-fastgpu}
CONF=/etc/slurm
HOST=$(hostname -s)
NODES=$(for k in $(seq "$SLURM_NODES"); do echo "fastgpu-n$k"; done)
NODE_RANGE="fastgpu-n[1-$SLURM_NODES]"
[ "$SLURM_NODES" = 1 ] && NODE_RANGE=fastgpu-n1
LOG=/var/log/fastgpu-slurm
RUN=/run/fastgpu-slurm
mkdir -p "$LOG" "$RUN"

say() { echo "[slurm] $*"; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq $((seconds * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  echo "[slurm] error: $what did not come up within ${seconds}s; see $LOG" >&2
  exit 1
}

if [ "$(id -u)" -ne 0 ]; then echo "[slurm] error: run as root (apt-get and daemons)" >&2; exit 1; fi

if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v munged >/dev/null || ! command -v mariadbd >/dev/null; then
  say "installing slurm, munge and mariadb"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client slurmdbd munge mariadb-server >"$LOG/apt.log" 2>&1 \
    || { tail -n 20 "$LOG/apt.log" >&2; exit 1; }
fi

# munge: the authentication every Slurm daemon and command uses
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
  say "starting munged"
  runuser -u munge -- /usr/sbin/munged
fi
wait_for 10 munged munge -n

# MariaDB for accounting (sacct: job states, so a job that dies without a result is reported, not waited for)
if ! pgrep -x mariadbd >/dev/null; then
  say "starting mariadb"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$LOG/mariadb-install.log" 2>&1
  (setsid mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
     --pid-file=/run/mysqld/mariadbd.pid --bind-address=127.0.0.1 >"$LOG/mariadbd.log" 2>&1 &)
fi
wait_for 30 mariadb mariadb -e "select 1"
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'fastgpu';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

# the nodes' names on loopback
for k in $(seq "$SLURM_NODES"); do
  grep -q " fastgpu-n$k\$" /etc/hosts || echo "127.0.0.$((k + 1)) fastgpu-n$k" >> /etc/hosts
done

# config: the nodes; fake GPUs as device nodes so gres requests are schedulable
mkdir -p "$CONF" /var/spool/slurmctld /var/spool/slurmd
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
GRES_NODE=""
: > "$CONF/gres.conf.new"
if [ "$FAKE_GPUS" -gt 0 ]; then
  for i in $(seq 0 $((FAKE_GPUS - 1))); do [ -e "/dev/fakegpu$i" ] || mknod "/dev/fakegpu$i" c 1 3; done
  echo "NodeName=$NODE_RANGE Name=gpu File=/dev/fakegpu[0-$((FAKE_GPUS - 1))]" > "$CONF/gres.conf.new"
  GRES_NODE="Gres=gpu:$FAKE_GPUS"
fi
cat > "$CONF/slurm.conf.new" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
GresTypes=gpu
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=/var/spool/slurmd/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=/var/spool/slurmd/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=30
KillWait=10
$(for k in $(seq "$SLURM_NODES"); do
  echo "NodeName=fastgpu-n$k NodeAddr=127.0.0.$((k + 1)) Port=$((6820 + k)) CPUs=$SLURM_CPUS RealMemory=$MEM_MB $GRES_NODE State=UNKNOWN"
done)
PartitionName=debug Nodes=$NODE_RANGE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
cat > "$CONF/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=fastgpu
StorageLoc=slurm_acct_db
EOF
chmod 600 "$CONF/slurmdbd.conf"
CHANGED=0
cmp -s "$CONF/slurm.conf.new" "$CONF/slurm.conf" && cmp -s "$CONF/gres.conf.new" "$CONF/gres.conf" || CHANGED=1
mv "$CONF/slurm.conf.new" "$CONF/slurm.conf"
mv "$CONF/gres.conf.new" "$CONF/gres.conf"
running() { for daemon; do pgrep -x "$daemon" >/dev/null && return 0; done; return 1; }
if [ "$CHANGED" = 1 ] && running slurmctld slurmd; then
  say "configuration changed: restarting slurmctld and slurmd"
  pkill -x slurmd; pkill -x slurmctld
  for _ in $(seq 40); do running slurmctld slurmd || break; sleep 0.25; done
fi

if ! pgrep -x slurmdbd >/dev/null; then say "starting slurmdbd"; slurmdbd; fi
wait_for 30 slurmdbd sacctmgr -n show cluster
sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true

if ! pgrep -x slurmctld >/dev/null; then say "starting slurmctld"; slurmctld; fi
wait_for 30 slurmctld scontrol ping
node_pid() { cat "/var/spool/fastgpu-slurmd/$1/slurmd.pid" 2>/dev/null; }
for node in $NODES; do
  if ! kill -0 "$(node_pid "$node")" 2>/dev/null; then
    say "starting slurmd $node"
    mkdir -p "/var/spool/fastgpu-slurmd/$node"
    # its own hostname and its own /var/spool/slurmd (spool, pid file, log), seen only by this slurmd and its jobs
    unshare --uts --mount --propagation private sh -c \
      "hostname $node && mount --bind /var/spool/fastgpu-slurmd/$node /var/spool/slurmd && exec slurmd"
  fi
done
node_ready() { [ "$(sinfo -h -N -o %t | grep -Ec '^(idle|mix|alloc)')" = "$SLURM_NODES" ]; }
for _ in $(seq 120); do
  node_ready && break
  scontrol update nodename="$NODE_RANGE" state=resume >/dev/null 2>&1 || true
  sleep 0.25
done
node_ready || { echo "[slurm] error: nodes are not idle: $(sinfo -h -N -o '%N %t %E' | tr '\n' ';')" >&2; exit 1; }
say "ready: $(sinfo -h -o '%P %D nodes (%N), %c CPUs each, %G, state %t')"

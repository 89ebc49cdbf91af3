#!/usr/bin/env bash
# Stop the Slurm cluster that scripts/slurm/start.sh started (jobs are cancelled first).
set -uo pipefail
RUN=/run/fastgpu-slurm
command -v scancel >/dev/null && scancel --full --quiet --user="$(id -un)" 2>/dev/null
pkill -x slurmd 2>/dev/null  # every node's
for daemon in slurmctld slurmdbd mariadbd; do
  pidfile="$RUN/$daemon.pid"
  [ "$daemon" = mariadbd ] && pidfile=/run/mysqld/mariadbd.pid
  if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")"
  else
    pkill -x "$daemon" 2>/dev/null
  fi
done
running() { for daemon; do pgrep -x "$daemon" >/dev/null && return 0; done; return 1; }
for _ in $(seq 40); do running slurmd slurmctld slurmdbd mariadbd || break; sleep 0.25; done
pkill -x munged 2>/dev/null
for _ in $(seq 40); do running munged || break; sleep 0.25; done
echo "[slurm] stopped"

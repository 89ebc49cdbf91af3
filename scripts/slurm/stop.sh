#!/usr/bin/env bash
# Stop the one-node Slurm cluster that scripts/slurm/start.sh started (jobs are cancelled first).
set -uo pipefail
RUN=/run/fastgpu-slurm
command -v scancel >/dev/null && scancel --full --quiet --user="$(id -un)" 2>/dev/null
for daemon in slurmd slurmctld slurmdbd mariadbd; do
  pidfile="$RUN/$daemon.pid"
  [ "$daemon" = mariadbd ] && pidfile=/run/mysqld/mariadbd.pid
  if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")"
  else
    pkill -x "$daemon" 2>/dev/null
  fi
done
for _ in $(seq 40); do pgrep -x 'slurmd|slurmctld|slurmdbd|mariadbd' >/dev/null || break; sleep 0.25; done
pkill -x munged 2>/dev/null
echo "[slurm] stopped"

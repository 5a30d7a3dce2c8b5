#!/bin/sh
# Entry point of a worker container (compose service, Kubernetes pod, systemd unit): papermill executes the worker
# notebook of stage $VELOX_STAGE (default detect), with the arguments given to this script appended
# (-p bus ... -p group ... -p checkpoints ... -p store ...).
#
# The notebook of stage S is nbs/workers/S.ipynb; for a stage `a.b` without its own nbs/workers/a.b.ipynb it is
# nbs/workers/a.ipynb, told which stage to run with `-p stage a.b` (VELOX_STAGE=predict.lr runs
# nbs/workers/predict.ipynb -p stage predict.lr) -- the rule of velox.runtime.fleet.FleetSpec.notebook.
#
# Why a wrapper: SIGTERM to papermill kills it without stopping the kernel cleanly (no final commit, a
# truncated output notebook). `docker compose stop`, a pod's termination or `systemctl stop` sends SIGTERM here
# instead, and the trap turns it into the worker's stop file: the worker finishes its batch, flushes, commits
# and exits, then papermill writes the complete output notebook. Give it time: stop_grace_period (compose),
# terminationGracePeriodSeconds (Kubernetes), TimeoutStopSec (systemd).
set -u
STAGE=${VELOX_STAGE:-detect}
OUT=${VELOX_WORKER_OUT:-${VELOX_OUT_DIR:-/out}}
NAME=${VELOX_WORKER_NAME:-$(hostname)}
NB="nbs/workers/$STAGE.ipynb"
if [ ! -f "$NB" ]; then
  BASE=${STAGE%%.*}                     # predict.lr -> predict
  if [ "$BASE" = "$STAGE" ] || [ ! -f "nbs/workers/$BASE.ipynb" ]; then
    echo "worker.sh: no worker notebook for stage '$STAGE': expected $NB or nbs/workers/$BASE.ipynb under $(pwd)" >&2
    exit 2
  fi
  NB="nbs/workers/$BASE.ipynb"
  set -- -p stage "$STAGE" "$@"         # one notebook serves several stages: say which
fi
STOP="$OUT/stop-$STAGE-$NAME"
mkdir -p "$OUT"
rm -f "$STOP"  # a stop file left by the previous run of this container would stop the worker at once
trap 'touch "$STOP"' TERM INT
papermill "$NB" "$OUT/$STAGE-$NAME.ipynb" --no-progress-bar \
  -p client_id "$NAME" -p stop_file "$STOP" -p status_path "$OUT/$STAGE-$NAME.json" -p log_path "$OUT/$STAGE-$NAME.log" \
  "$@" &
pid=$!
while :; do
  wait "$pid"; status=$?               # returns early (status > 128) when the trap fires
  kill -0 "$pid" 2>/dev/null || break  # papermill has exited: done
done
exit "$status"

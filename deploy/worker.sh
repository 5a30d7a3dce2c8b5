#!/bin/sh
# Entry point of a detect worker container: papermill executes nbs/workers/detect.ipynb, with the arguments
# given to this script appended (-p bus ... -p group ... -p hot ... -p store ...).
#
# Why a wrapper: SIGTERM to papermill kills it without stopping the kernel cleanly (no final commit, a
# truncated output notebook). `docker compose stop` / scaling down sends SIGTERM here instead, and the trap
# turns it into the worker's stop file: the worker finishes its batch, flushes, commits and exits, then
# papermill writes the complete output notebook. Give it time: stop_grace_period in docker-compose.yml.
set -u
OUT=${VELOX_WORKER_OUT:-/out}
NAME=${VELOX_WORKER_NAME:-$(hostname)}
STOP="$OUT/stop-$NAME"
mkdir -p "$OUT"
rm -f "$STOP"  # a stop file left by the previous run of this container would stop the worker at once
trap 'touch "$STOP"' TERM INT
papermill nbs/workers/detect.ipynb "$OUT/detect-$NAME.ipynb" \
  -p client_id "$NAME" -p stop_file "$STOP" -p status_path "$OUT/detect-$NAME.json" -p log_path "$OUT/detect-$NAME.log" \
  "$@" &
pid=$!
while :; do
  wait "$pid"; status=$?               # returns early (status > 128) when the trap fires
  kill -0 "$pid" 2>/dev/null || break  # papermill has exited: done
done
exit "$status"

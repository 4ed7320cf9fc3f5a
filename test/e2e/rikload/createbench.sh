#!/bin/bash
# usage: test/e2e/rikload/createbench.sh BIN_DIR bolt|etcd (from the repository root)
# One controller (--insecure, no quotas) and a scheduler without riklets on
# 127.0.0.1 (for etcd, three members on 127.0.0.1:2379{1,2,3}); 1,000
# instances.create from 16 clients with rikload; then the time until every
# instance has the scheduler's answer stored. Needs etcd, curl, python3.
set -u
RIKLOAD=$(mktemp)
go build -o "$RIKLOAD" ./test/e2e/rikload || exit 1
BIN=$1; KIND=$2
D=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill $p 2>/dev/null; done; wait 2>/dev/null; rm -rf "$D" "$RIKLOAD"; }
trap cleanup EXIT
STORE=""
if [ "$KIND" = etcd ]; then
  IC="e0=http://127.0.0.1:23801,e1=http://127.0.0.1:23802,e2=http://127.0.0.1:23803"
  for i in 0 1 2; do
    etcd --name e$i --data-dir $D/etcd$i --listen-client-urls http://127.0.0.1:2379$((i+1)) --advertise-client-urls http://127.0.0.1:2379$((i+1)) \
      --listen-peer-urls http://127.0.0.1:2380$((i+1)) --initial-advertise-peer-urls http://127.0.0.1:2380$((i+1)) \
      --initial-cluster $IC --initial-cluster-state new > $D/etcd$i.log 2>&1 &
    pids+=($!)
  done
  STORE="etcd://127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793"
  sleep 3
fi
$BIN/scheduler --insecure --ctrlip 127.0.0.1:15496 --workersip 127.0.0.1:15495 > $D/sched.log 2>&1 & pids+=($!)
PORT=15401 DATABASE_LOCATION=$D/c RIK_STORE=$STORE RIK_MAX_PENDING=0 RIK_MAX_INSTANCES=0 SCHEDULER_URL=http://127.0.0.1:15496 \
  $BIN/controller --insecure > $D/ctl.log 2>&1 & pids+=($!)
for i in $(seq 100); do curl -sf http://127.0.0.1:15401/healthz >/dev/null && break; sleep 0.2; done
echo '{"apiVersion":"v1","kind":"Pod","name":"load","spec":{"containers":[{"name":"web","image":"busybox:latest"}]}}' > $D/w.json
START_MS=$(( $(date +%s%N)/1000000 ))
"$RIKLOAD" --server http://127.0.0.1:15401 --workload load --create-workload $D/w.json -n 1000 -c 16
# time until every instance's scheduler answer is stored
for i in $(seq 600); do
  n=$(curl -s http://127.0.0.1:15401/api/v0/instances.list | python3 -c 'import json,sys; print(sum(1 for i in json.load(sys.stdin) if i["value"].get("reason")))')
  [ "$n" -ge 1000 ] && break
  sleep 0.1
done
echo "all statuses stored after $(( $(date +%s%N)/1000000 - START_MS )) ms (since the first create)"

#!/bin/bash
# Fan-out cost of filtered and rule-checked subscriptions beside plain ones (docs/benchmarks.md,
# "Filtered and rule-checked subscriptions"). Needs release builds:
#   cargo build --release -p courier-broadcaster -p courier-cli
# Starts its own nats-server (no users) and broadcaster (the shipped collections.yaml, a bench
# JWT secret) on ports 24222 and 28765, mints an access token for the user `bench-user` with that
# secret, and runs each kind of subscription twice: 2,000 subscribers, 10 events/s.
set -e
cd "$(dirname "$0")/.."
D=$(mktemp -d)
.dev/venv/bin/nats-server -js -sd $D/nats -p 24222 > $D/nats.log 2>&1 &
N=$!
SECRET=bench-secret-0123456789abcdef0123456789
COURIER_COLLECTIONS_FILE=collections.yaml COURIER_JWT_SECRET=$SECRET COURIER_MAX_CONNECTIONS_PER_ADDRESS=0 \
  COURIER_NATS_URL=nats://127.0.0.1:24222 COURIER_BROADCASTER_LISTEN=127.0.0.1:28765 \
  target/release/courier-broadcaster > $D/b.log 2>&1 &
B=$!
for i in $(seq 50); do curl -sf localhost:28765/readyz >/dev/null && break; sleep 0.2; done
TOKEN=$(python3 - "$SECRET" <<'PY'
import base64, hashlib, hmac, json, sys, time, uuid
def b64(b): return base64.urlsafe_b64encode(b).rstrip(b'=').decode()
now = int(time.time())
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"sub": "bench-user", "name": "bench", "iat": now, "exp": now + 3600, "jti": str(uuid.uuid4()), "iss": "courier", "aud": "courier"}).encode())
sig = b64(hmac.new(sys.argv[1].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
print(f"{head}.{body}.{sig}")
PY
)
ulimit -n 20000
COMMON="--clients 2000 --rate 10 --duration 20s --ws ws://127.0.0.1:28765/ws --nats nats://127.0.0.1:24222 --server-pid $B --json"
for round in 1 2; do
  echo "== public"; target/release/courier bench fanout $COMMON | python3 -c 'import json,sys; r=json.load(sys.stdin); print({k: r[k] for k in ["delivered","lost","duplicated","deliveries_per_sec","server_cpu_us_per_delivery","p50_ms","p99_ms"] if k in r})'
  echo "== filtered"; target/release/courier bench fanout $COMMON --filter '{"nombre":{"gte":"~"}}' | python3 -c 'import json,sys; r=json.load(sys.stdin); print({k: r[k] for k in ["delivered","lost","duplicated","deliveries_per_sec","server_cpu_us_per_delivery","p50_ms","p99_ms"] if k in r})'
  echo "== rule-checked (notes, owner)"; COURIER_TOKEN=$TOKEN target/release/courier bench fanout $COMMON --collection notes --creator bench-user | python3 -c 'import json,sys; r=json.load(sys.stdin); print({k: r[k] for k in ["delivered","lost","duplicated","deliveries_per_sec","server_cpu_us_per_delivery","p50_ms","p99_ms"] if k in r})'
  echo "== rule-checked and filtered"; COURIER_TOKEN=$TOKEN target/release/courier bench fanout $COMMON --collection notes --creator bench-user --filter '{"title":{"ne":"x"}}' | python3 -c 'import json,sys; r=json.load(sys.stdin); print({k: r[k] for k in ["delivered","lost","duplicated","deliveries_per_sec","server_cpu_us_per_delivery","p50_ms","p99_ms"] if k in r})'
done
kill $B $N
rm -rf "$D"

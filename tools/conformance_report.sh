#!/usr/bin/env bash
# Regenerate docs/conformance.md: start a throwaway gateway (embedded Redis, demo tenant, fresh data folder),
# replay ../shared/corpus through it with `fhir-gateway conformance run`, and stop it.
# Usage: tools/conformance_report.sh [CORPUS_DIR] [OUT]   (defaults: ../shared/corpus, docs/conformance.md)
# fhir-test-cases/validator-r4 is left out: its files are invalid on purpose (the validator's own test cases).
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS="${1:-../shared/corpus}"
OUT="${2:-docs/conformance.md}"
BIN="${FHIR_GATEWAY:-.venv/bin/fhir-gateway}"
PORT="${PORT:-18931}"
DATA="$(mktemp -d)"
unset REDIS_URL GATEWAY_CLIENTS_FILE
"$BIN" run --port "$PORT" --data-dir "$DATA" >"$DATA/gateway.log" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/fhir/R4/metadata" >/dev/null 2>&1 && break
  sleep 0.2
done
token() { python3 -c "import json,sys; print(next(c['token'] for c in json.load(open(sys.argv[1]))['clients'] if c['role']==sys.argv[2]))" "$DATA/demo-clients.json" "$1"; }
"$BIN" conformance run --corpus "$CORPUS" --url "http://127.0.0.1:$PORT" --out "$OUT" \
  --ehr-token "$(token ehr)" --platform-token "$(token platform)" \
  --exclude 'fhir-test-cases/validator-r4/*' --command-line "tools/conformance_report.sh"

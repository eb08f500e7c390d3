#!/usr/bin/env sh
# From "I changed my agent's prompt" to "here is the side-by-side report".
# Needs a running server (`sessiond serve`) and SESSIOND_API_KEY; uses Claude when the
# server has ANTHROPIC_API_KEY.
set -eu
URL=${SESSIOND_URL:-http://127.0.0.1:8420}
KEY=${SESSIOND_API_KEY:?set SESSIOND_API_KEY}
H="x-api-key: $KEY"

# 1. Your agent (version 1), with the custom tool the suite answers for.
AGENT=$(curl -s "$URL/v1/agents" -H "$H" -H 'content-type: application/json' -d '{
  "name": "support", "model": "claude-sonnet-4-5", "system": "You are a support agent.",
  "tools": [{"type": "agent_toolset_20260401"},
            {"type": "custom", "name": "lookup_order", "description": "Look up an order",
             "input_schema": {"type": "object", "properties": {"id": {"type": "integer"}}}}]
}' | python -c 'import json,sys; print(json.load(sys.stdin)["id"])')

# 2. You change the prompt: that writes version 2 (version 1 stays as it was).
curl -s "$URL/v1/agents/$AGENT" -H "$H" -H 'content-type: application/json' \
  -d '{"version": 1, "system": "You are a support agent. Be brief; always check with tools."}' >/dev/null

# 3. Run the suite on both versions, three times each, and gate on the pass rate.
sessiond eval run examples/evals/support-suite.yaml --agent "$AGENT" --versions 1,2 \
  --repeat 3 --min-pass-rate 0.8 --html-out report.html --json-out report.json || true

# 4. Open report.html: pass rates with confidence intervals, the cases that flipped, and an
#    event-by-event diff of each flipped case. Any case links to its session:
#      sessiond eval replay <session_id>        # fold again and re-score, no model calls
#      curl -X POST $URL/v1/sessions/<id>/fork -d '{"event_id": "<sevt_…>", "agent": "…"}'
echo "report: report.html"

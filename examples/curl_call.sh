#!/usr/bin/env bash
# Call a registered function with nothing but curl: submit a task, follow its live outputs while
# it runs (a long-poll: each request waits up to 30 s for news), then print the finished task.
#
#   examples/curl_call.sh FUNCTION_ID ENDPOINT_ID '[JSON, ARGS]'
#   e.g. FID=$(fnserve register examples/functions.py:count_primes)
#        examples/curl_call.sh "$FID" "$ENDPOINT_ID" '[100000]'
#
# The service URL and token come from FNSERVE_SERVICE_URL / FNSERVE_TOKEN, or else from the client
# config that `fnserve up` writes ($FNSERVE_HOME/client.yaml, default ~/.fnserve/client.yaml).
# Output: one JSON page of outputs per line, then the task (its result is in "result_json").
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
FUNCTION_ID=$1
ENDPOINT_ID=$2
ARGS=${3:-[]}

CONFIG="${FNSERVE_HOME:-$HOME/.fnserve}/client.yaml"
URL=${FNSERVE_SERVICE_URL:-$(sed -n 's/^service_url: *//p' "$CONFIG" 2>/dev/null)}
TOKEN=${FNSERVE_TOKEN:-$(sed -n 's/^token: *//p' "$CONFIG" 2>/dev/null)}
[ -n "$URL" ] && [ -n "$TOKEN" ] || { echo "no service URL or token: run \`fnserve up\` or set FNSERVE_SERVICE_URL and FNSERVE_TOKEN" >&2; exit 1; }
AUTH="Authorization: Bearer $TOKEN"

# Pull one top-level string field out of the service's compact JSON (no jq needed). The field
# named comes after any user values in the answer, so the last match is the right one.
field() { sed -nE "s/.*\"$1\":\"([^\"]*)\".*/\1/p"; }

# 1. Submit: JSON arguments in, so the result comes back as JSON ("result_json").
submitted=$(curl -sS --fail-with-body -H "$AUTH" -H 'Content-Type: application/json' "$URL/v1/tasks" \
  -d "{\"tasks\": [{\"function_id\": \"$FUNCTION_ID\", \"endpoint_id\": \"$ENDPOINT_ID\", \"args\": $ARGS}]}")
TASK_ID=$(printf '%s' "$submitted" | sed -nE 's/.*"task_ids":\["([^"]+)".*/\1/p')
echo "task $TASK_ID" >&2

# 2. Live outputs: pass the cursor back as `since` until the page says "complete":true.
since=""
while :; do
  page=$(curl -sS --fail-with-body -H "$AUTH" "$URL/v1/tasks/$TASK_ID/outputs?wait=30${since:+&since=$since}")
  echo "$page"
  case $page in *'"complete":true'*) break ;; esac
  since=$(printf '%s' "$page" | field cursor)
done

# 3. The finished task, with its result (waits up to 30 s more if needed).
curl -sS --fail-with-body -H "$AUTH" "$URL/v1/tasks/$TASK_ID?wait=30"
echo

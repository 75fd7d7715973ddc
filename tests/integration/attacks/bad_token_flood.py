"""Run as an unprivileged account with the system Python (stdlib only): guess tokens.

    python3 bad_token_flood.py URL COUNT

Sends COUNT requests, each with a new random token, one after another; prints one JSON list of
{"status", "code", "retry_after"}.
"""

import http.client
import json
import secrets
import sys
import urllib.parse

url = urllib.parse.urlsplit(sys.argv[1])
answers = []
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
for _ in range(int(sys.argv[2])):
    conn.request("GET", "/v1/functions", headers={"Authorization": "Bearer fns_" + secrets.token_urlsafe(32)})
    resp = conn.getresponse()
    body = json.loads(resp.read())
    answers.append({"status": resp.status, "code": body.get("error", {}).get("code"), "retry_after": resp.getheader("Retry-After")})
print(json.dumps(answers))

"""Run as an unprivileged account with the system Python (stdlib only): open long-polls.

    python3 longpoll_flood.py URL PATH PER_TOKEN TOKEN...

Opens PER_TOKEN concurrent GETs of PATH with each token; prints "started", then one JSON line
per answer as it arrives: {"status", "code", "retry_after", "seconds"}.
"""

import http.client
import json
import sys
import threading
import time
import urllib.parse

url = urllib.parse.urlsplit(sys.argv[1])
path, per_token, tokens = sys.argv[2], int(sys.argv[3]), sys.argv[4:]
lock = threading.Lock()


def poll(token: str) -> None:
    started = time.monotonic()
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
    try:
        conn.request("GET", path, headers={"Authorization": "Bearer " + token})
        resp = conn.getresponse()
        body = resp.read()
        code = json.loads(body).get("error", {}).get("code") if resp.status >= 400 else None
        line = {"status": resp.status, "code": code, "retry_after": resp.getheader("Retry-After"),
                "seconds": time.monotonic() - started}
    except OSError as exc:
        line = {"status": 0, "code": type(exc).__name__, "retry_after": None, "seconds": time.monotonic() - started}
    with lock:
        print(json.dumps(line), flush=True)


threads = [threading.Thread(target=poll, args=(t,), daemon=True) for t in tokens for _ in range(per_token)]
for t in threads:
    t.start()
print("started", flush=True)
for t in threads:
    t.join()

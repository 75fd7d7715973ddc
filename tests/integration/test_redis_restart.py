"""The embedded Redis keeps what it acknowledged across a restart, transactions included.

Redis 7.0 replays the append-only file's MULTI/EXEC blocks as its ``default`` user; with that user
switched off (as fnserve first configured it) every transaction was dropped on restart, silently:
the chaos suite's Redis restart lost all 100 tasks it had accepted. A real redis-server, stopped
with SIGTERM and started again on the same data folder.
"""

from __future__ import annotations

import redis

import pytest

from fnserve._redis_server import redis_auth, start_redis

pytestmark = pytest.mark.integration


def test_transactions_survive_a_restart_and_the_default_user_still_needs_the_password(tmp_path):
    auth = redis_auth(tmp_path)
    proc, url = start_redis(tmp_path / "data", auth=auth)
    try:
        r = redis.Redis.from_url(url)
        with r.pipeline(transaction=True) as tx:  # MULTI ... EXEC, as the task store writes
            tx.hset("fns:task:t1", mapping={"state": "waiting-for-endpoint"}).rpush("fns:ep:e:queue", "t1")
            tx.execute()
        r.set("fns:plain", "1")
        r.close()
    finally:
        proc.terminate()
        proc.wait(10)
    proc, url = start_redis(tmp_path / "data", auth=auth)
    try:
        r = redis.Redis.from_url(url)
        assert r.hget("fns:task:t1", "state") == b"waiting-for-endpoint"
        assert r.lrange("fns:ep:e:queue", 0, -1) == [b"t1"] and r.get("fns:plain") == b"1"
        r.close()
        no_password = redis.Redis(unix_socket_path=str(auth.socket))
        with pytest.raises(redis.AuthenticationError):
            no_password.get("fns:plain")
        wrong = redis.Redis(unix_socket_path=str(auth.socket), username="default", password="guess")
        with pytest.raises(redis.AuthenticationError):
            wrong.get("fns:plain")
    finally:
        proc.terminate()
        proc.wait(10)

"""A long-poll's place (web_service.waits) is given back in the round trip of the wait's final
read when the caller hands it over, and by the gate itself otherwise, also when that read fails."""

from __future__ import annotations

import pytest
import redis

from web_service.waits import WaitGate, waits_key


def test_a_place_handed_to_the_final_read_is_freed_by_it_and_not_again(redis_client):
    gate = WaitGate(redis_client, per_user=1, per_process=4)
    with gate.admit("u", 5.0) as admission:
        assert redis_client.zcard(waits_key("u")) == 1
        pipe = redis_client.pipeline(transaction=False)
        pipe.get("something-read-anyway")
        admission.release_in(pipe)
        pipe.execute()
        assert redis_client.zcard(waits_key("u")) == 0  # freed by the caller's round trip
        redis_client.zadd(waits_key("u"), {"another-wait": 1e12})
    assert redis_client.zcard(waits_key("u")) == 1  # the gate sent no release of its own
    assert gate.open == 0


def test_a_place_whose_final_read_failed_is_freed_by_the_gate(redis_client):
    gate = WaitGate(redis_client, per_user=1, per_process=4)
    with pytest.raises(redis.DataError):
        with gate.admit("u", 5.0) as admission:
            pipe = redis_client.pipeline(transaction=False)
            pipe.set("k", object())  # not encodable: the pipeline fails before anything is sent
            admission.release_in(pipe)
            pipe.execute()
    assert redis_client.zcard(waits_key("u")) == 0
    with gate.admit("u", 5.0):  # the cap of one admits the next wait
        pass

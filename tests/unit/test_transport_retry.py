"""When the SDK asks the service again after a 503 (fnserve.transport.unavailable_retry)."""

from fnserve.transport import UNAVAILABLE_GIVE_UP, UNAVAILABLE_MAX, unavailable_retry


def test_backoff_doubles_from_the_first_delay_up_to_the_cap():
    delays = [unavailable_retry(None, 0.0, None)]
    for _ in range(8):
        delays.append(unavailable_retry(delays[-1], 1.0, None))
    assert delays[:4] == [0.2, 0.4, 0.8, 1.6]
    assert max(delays) == UNAVAILABLE_MAX == delays[-1]


def test_never_past_the_callers_deadline():
    assert unavailable_retry(4.0, 10.0, 1.5) == 1.5
    assert unavailable_retry(None, 0.0, 0.0) is None
    assert unavailable_retry(None, 0.0, -1.0) is None


def test_a_wait_without_deadline_gives_up_after_a_long_outage():
    assert unavailable_retry(5.0, UNAVAILABLE_GIVE_UP - 1, None) == 5.0
    assert unavailable_retry(5.0, UNAVAILABLE_GIVE_UP, None) is None


def test_the_services_retry_after_is_honoured_within_the_deadline():
    assert unavailable_retry(None, 0.0, None, retry_after=3.0) == 3.0
    assert unavailable_retry(None, 0.0, 2.0, retry_after=3.0) == 2.0

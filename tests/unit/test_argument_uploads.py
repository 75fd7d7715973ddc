"""The SDK sends a task while its arguments upload (fnserve.argument_uploads): which error the
caller sees, and that submit returns only once the upload ended. The object store here is a
stand-in (a class with start_put); the real one is exercised in tests/integration/test_data_plane.py."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from fnserve.argument_uploads import InFlightUploads
from fnserve.data_refs import ObjectRef, read_ref
from fnserve.errors import FnserveError


class StandInStore:
    def __init__(self, failure: Exception | None = None) -> None:
        self.failure = failure
        self.futures: list[Future[None]] = []

    def start_put(self, parts, strategy, ttl=None, name=None):
        done: Future[None] = Future()
        self.futures.append(done)
        return ObjectRef("a" * 32, sum(len(p) for p in parts), "", strategy), done


def test_small_arguments_stay_inline_and_large_ones_become_a_reference_without_checksum():
    store = StandInStore()
    uploads = InFlightUploads(lambda: store)
    assert uploads.reference([b"fns1 dill-data 3.11\nabc"], 100, None) == b"fns1 dill-data 3.11\nabc"
    ref = read_ref(uploads.reference([b"fns1 dill-data 3.11\n" + b"x" * 200], 100, None))
    assert ref is not None and ref.sha256 == "" and ref.strategy == "dill-data"


def test_the_task_is_sent_before_the_upload_ends_and_send_returns_after_it():
    store = StandInStore()
    uploads = InFlightUploads(lambda: store)
    uploads.reference([b"fns1 dill-data 3.11\n" + b"x" * 200], 100, None)
    seen = []

    def post():
        seen.append(store.futures[0].done())  # still uploading when the task goes
        store.futures[0].set_result(None)
        return {"task_ids": ["t"]}

    assert uploads.send(post) == {"task_ids": ["t"]} and seen == [False]


def test_a_failed_upload_is_raised_but_a_refused_task_is_the_error_the_caller_sees():
    store = StandInStore()
    uploads = InFlightUploads(lambda: store)
    uploads.reference([b"fns1 dill-data 3.11\n" + b"x" * 200], 100, None)
    store.futures[0].set_exception(FnserveError("broke", code="service_unreachable"))
    with pytest.raises(FnserveError) as err:
        uploads.send(lambda: {"task_ids": ["t"]})
    assert err.value.code == "service_unreachable"

    uploads.reference([b"fns1 dill-data 3.11\n" + b"x" * 200], 100, None)
    store.futures[1].set_exception(FnserveError("broke", code="service_unreachable"))

    def refused():
        raise FnserveError("no such endpoint", code="endpoint_not_found")

    with pytest.raises(FnserveError) as err:
        uploads.send(refused)
    assert err.value.code == "endpoint_not_found"

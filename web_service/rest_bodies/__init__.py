"""The REST API's request and response bodies, each defined once as a msgspec Struct.

:mod:`.requests` holds what clients send, :mod:`.responses` what the service answers, and
:mod:`.decoding` turns a request body into its Struct, a refusal naming the field with the
stable code ``invalid_request``. The OpenAPI document (:mod:`web_service.openapi`) takes its
``components/schemas`` from these Structs (``msgspec.json.schema_components``), so what is
documented is what is decoded and encoded; ``tests/integration/test_rest_contract.py`` checks
the live service against it.

A task as a client sends it (:class:`.requests.TaskRequest`) is the REST form of
:class:`web_service.store.record.TaskSpec`: arguments as base64 or JSON, ``result_format``
instead of a strategy; ``services/task_parsing.parse_task`` turns one into the other.
"""

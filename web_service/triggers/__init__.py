"""Triggers: events (a schedule comes due, a webhook is called) that fire rules, each rule a
function on an endpoint.

- :mod:`.config`: what a trigger and a rule may say (validation, pure);
- :mod:`.schedule`: which schedule times are due (pure);
- :mod:`.rules`: which rules an event fires, their arguments, task ids, concurrency (pure);
- :mod:`.events`: recording events and firings in SQL, and submitting their tasks (I/O);
- :mod:`.runner`: the process that turns due schedules into events and retries firings.

Delivery: an event is written to SQL together with one firing per rule it fires, each with its
task id fixed then (uuid5 of event and rule). Submitting a firing writes its task only if no
task of that id exists (one Redis transaction), then marks the firing submitted. So a crash
anywhere in between is repaired by submitting again, which makes no second task; and a second
delivery of the same event (same ``event_key``) is refused by the database's unique constraint.
"""

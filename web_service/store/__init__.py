"""The task store: task state, per-endpoint queues, in-flight tracking and results, in Redis.

``keys`` (every key pattern), ``record`` (the task's shape), ``rules`` (pure decisions),
``scripts/*.lua`` (the rules applied inside Redis) and :class:`TaskStore`, the only owner of
task Redis I/O.
"""

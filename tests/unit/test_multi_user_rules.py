"""Multi-user endpoints: identity mapping rules, template values against the schema, the stamp the
service adds, which user endpoint a task goes to, and the config it renders (pure, no processes)."""

from __future__ import annotations

import pytest

from fnserve.user_endpoint_config import ROUTING_KEY, InvalidUserEndpointConfig, check_values, config_hash, stamp, unstamp
from site_manager.identity_mapping import (
    CommandRule,
    ExpressionRule,
    FileRule,
    IdentityNotMapped,
    MappingConfigError,
    map_identity,
    parse_rules,
)
from site_manager.user_endpoints import Placement, place_task, render_user_config

UIDS = {"alice": 1001, "bob": 1002, "root": 0, "carol_hpc": 1003}


def uid_of(name):
    return UIDS.get(name)


def mapped(username, rules, **io):
    return map_identity({"username": username, "user_id": f"id-{username}"}, rules, uid_of=uid_of, **io)


def test_rules_are_parsed_from_the_config_and_bad_ones_named():
    rules = parse_rules([{"source": "{username}", "match": "a", "output": "alice", "literal": True},
                         {"mapping_file": "/etc/map"}, {"command": ["/bin/map", "-v"]}])
    assert rules == [ExpressionRule("a", "alice", literal=True), FileRule("/etc/map"), CommandRule(("/bin/map", "-v"))]
    for bad in ([], "x", [{"match": "("}], [{"match": "a"}], [{"source": "{nope}", "match": "a", "output": "b"}],
                [{"command": "ls"}], [{"mapping_file": "/m", "extra": 1}], ["x"]):
        with pytest.raises(MappingConfigError) as info:
            parse_rules(bad)
        assert info.value.code == "invalid_identity_mapping"


def test_exact_regex_file_and_command_rules_first_match_wins():
    exact = ExpressionRule(match="alice@uni.edu", output="alice", literal=True)
    regex = ExpressionRule(match=r"(.*)@uni\.edu", output="{0}")
    assert mapped("alice@uni.edu", [exact, regex]) == "alice"
    assert mapped("bob@uni.edu", [exact, regex]) == "bob"
    assert mapped("BOB@UNI.EDU", [ExpressionRule(match=r"(.*)@uni\.edu", output="bob", ignore_case=True)]) == "bob"
    files = {"/m": "# identity account\nid-carol carol_hpc\nbob@x bob extra\n"}
    assert mapped("carol", [FileRule("/m")], read=files.__getitem__) == "carol_hpc"  # by identity id
    calls = []
    assert mapped("dave", [regex, CommandRule(("/map",))], run=lambda argv, stdin: calls.append(stdin) or "alice\n") == "alice"
    assert '"username": "dave"' in calls[0]
    # A regex must match the whole source: "evil@uni.edu.attacker.org" is not of uni.edu.
    with pytest.raises(IdentityNotMapped):
        mapped("evil@uni.edu.attacker.org", [regex])


def test_no_account_root_or_a_missing_account_is_refused_with_its_code():
    for username, rules in (("zed", [ExpressionRule(match="a", output="alice", literal=True)]),
                            ("x", [ExpressionRule(match="x", output="root", literal=True)]),
                            ("x", [ExpressionRule(match="x", output="nosuch", literal=True)]),
                            ("x", [ExpressionRule(match="(.*)", output="../{0}")])):
        with pytest.raises(IdentityNotMapped) as info:
            mapped(username, rules)
        assert info.value.code == "identity_not_mapped" and info.value.http_status == 403


SCHEMA = {"type": "object", "additionalProperties": False, "properties": {
    "partition": {"enum": ["debug", "batch"]}, "workers": {"type": "integer", "minimum": 1, "maximum": 4},
    "walltime": {"type": "string", "pattern": "^[0-9]{2}:[0-9]{2}:[0-9]{2}$"}}}


def test_values_are_checked_against_the_schema_naming_the_field():
    assert check_values({"partition": "debug", "workers": 2}, SCHEMA) == {"partition": "debug", "workers": 2}
    assert check_values(None, SCHEMA) == {}
    for bad, field in (({"workers": 9}, "user_endpoint_config.workers"), ({"partition": "gpu"}, "user_endpoint_config.partition"),
                       ({"other": 1}, "user_endpoint_config"), ({"walltime": "1h"}, "user_endpoint_config.walltime"),
                       ([1], "user_endpoint_config"), ({"x": "y" * 5000}, "user_endpoint_config")):
        with pytest.raises(InvalidUserEndpointConfig) as info:
            check_values(bad, SCHEMA if isinstance(bad, dict) and "x" not in bad else None)
        assert info.value.code == "invalid_user_endpoint_config" and info.value.details["field"] == field, info.value


def test_the_service_stamps_identity_and_values_beside_the_tasks_own_spec():
    spec = stamp({"cores": 2}, {"username": "a", "user_id": "1"}, {"workers": 1})
    assert spec[ROUTING_KEY] == {"identity": {"username": "a", "user_id": "1"}, "config": {"workers": 1}}
    assert unstamp(spec) == ({"cores": 2}, spec[ROUTING_KEY])
    assert unstamp(stamp(None, {"username": "a", "user_id": "1"}, {}))[0] is None
    assert unstamp({"cores": 1}) == ({"cores": 1}, None)
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1}) != config_hash({"a": 1})


def test_a_task_goes_to_the_user_endpoint_of_its_account_and_values():
    rules = [ExpressionRule(match=r"(.*)@uni\.edu", output="{0}")]
    who = {"identity": {"username": "alice@uni.edu", "user_id": "1"}, "config": {"workers": 2}}
    placed = place_task(who, rules, SCHEMA, uid_of=uid_of)
    assert placed == Placement("alice", {"workers": 2}) and placed.name == f"alice.{config_hash({'workers': 2})}"
    assert place_task({**who, "config": {}}, rules, SCHEMA, uid_of=uid_of).name != placed.name
    with pytest.raises(IdentityNotMapped):
        place_task(None, rules, SCHEMA, uid_of=uid_of)  # no stamp: refused, never run as anyone
    with pytest.raises(InvalidUserEndpointConfig):
        place_task({**who, "config": {"workers": 7}}, rules, SCHEMA, uid_of=uid_of)
    with pytest.raises(InvalidUserEndpointConfig):  # a newline could add YAML keys to the rendered config
        place_task({**who, "config": {"walltime": "00:10:00\nworker_init: x"}}, rules, None, uid_of=uid_of)


def test_the_template_renders_with_the_values_and_cannot_set_who_the_endpoint_is():
    template = ("engine:\n  max_workers_per_node: {{ workers | default(1) }}\nprovider:\n  type: slurm\n"
                "  partition: {{ partition }}\nrun_dir: /elsewhere\nendpoint_id: stolen\n")
    forced = {"forwarder": "ipc:///s", "endpoint_id": "e.alice", "secret": "-", "run_dir": "/u/alice/run"}
    cfg = render_user_config(template, {"partition": "debug"}, forced)
    assert cfg["engine"] == {"max_workers_per_node": 1} and cfg["provider"]["partition"] == "debug"
    assert cfg["run_dir"] == "/u/alice/run" and cfg["endpoint_id"] == "e.alice"
    with pytest.raises(InvalidUserEndpointConfig) as info:  # every name the template uses must be given
        render_user_config(template, {}, forced)
    assert "partition" in info.value.message
    with pytest.raises(InvalidUserEndpointConfig):  # the sandbox: no reaching into Python objects
        render_user_config("x: {{ ''.__class__.__mro__[1].__subclasses__() }}", {}, forced)


def test_frames_between_the_multi_user_endpoint_and_a_user_endpoint_round_trip_and_end_cleanly():
    import io

    from site_manager.user_processes import read_frame, write_frame

    buf = io.BytesIO()
    write_frame(buf, b"task-1", b"\x00" * 70_000, b"")
    whole = buf.getvalue()
    stream = io.BytesIO(whole)
    assert [read_frame(stream) for _ in range(4)] == [b"task-1", b"\x00" * 70_000, b"", None]
    assert read_frame(io.BytesIO(whole[:20])) == b"task-1" and read_frame(io.BytesIO(whole[:3])) is None
    cut = io.BytesIO(whole[10:40])  # a frame cut short (the other side died mid-write): the end, not garbage
    assert read_frame(cut) is None


def test_user_endpoints_idle_for_the_timeout_are_stopped_and_the_next_deadline_is_the_earliest_other():
    from site_manager.user_endpoints import idle_children

    assert idle_children({"a.1": 100.0, "b.2": 150.0, "c.3": 170.0}, now=200.0, timeout=50.0) == (["a.1", "b.2"], 220.0)
    assert idle_children({"a.1": 190.0}, now=200.0, timeout=50.0) == ([], 240.0)  # used 10 s ago: not yet
    assert idle_children({}, now=200.0, timeout=50.0) == ([], None)  # nothing idle: no deadline (busy ones are left out)


def test_idle_timeout_defaults_to_half_an_hour_and_must_be_positive(tmp_path):
    from site_manager.config import ConfigError
    from site_manager.multi_user_config import MultiUserConfig

    (tmp_path / "t.j2").write_text("engine: {}\n")
    base = {"identity_mapping": [{"source": "{username}", "match": "a", "output": "a", "literal": True}],
            "user_config_template": str(tmp_path / "t.j2")}
    assert MultiUserConfig.from_dict(base).idle_timeout == 1800.0
    assert MultiUserConfig.from_dict({**base, "idle_timeout": 2}).idle_timeout == 2
    with pytest.raises(ConfigError) as info:
        MultiUserConfig.from_dict({**base, "idle_timeout": 0})
    assert info.value.details["key"] == "multi_user.idle_timeout"


def test_a_user_endpoint_answers_a_task_past_its_walltime_once_and_never_as_a_retriable_loss(tmp_path):
    from fnserve.messages import decode_result
    from site_manager.user_endpoint import _Walltimes

    w = _Walltimes(tmp_path)  # no worker notes here: start times given, the kill finds no process
    w.limits.update({"late": (2.0, 5.0), "lost": (2.0, 5.0), "early": (60.0, 5.0)})
    w.started.update({"late": 100.0, "lost": 103.0, "early": 100.0})
    [(tid, sent)] = w.overdue(now=108.0)  # late: 8 s > 2 + 5; lost: 5 s, not yet
    assert tid == "late" and decode_result(sent).error.code == "walltime_exceeded"  # type: ignore[union-attr]
    assert w.finished("late", b"lost-report", True, now=108.5) is None  # its killed worker's report: dropped
    # Killed by its own watchdog first: a loss past walltime + grace is walltime_exceeded, not worker_lost.
    answer = decode_result(w.finished("lost", b"lost-report", True, now=109.5))  # type: ignore[arg-type]
    assert not answer.ok and answer.error is not None and answer.error.code == "walltime_exceeded"
    assert w.finished("early", b"lost-report", True, now=110.0) == b"lost-report"  # lost well before: retriable
    assert w.overdue(now=200.0) == [] and not w.limits  # all settled, nothing left to watch

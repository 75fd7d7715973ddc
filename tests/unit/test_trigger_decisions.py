"""The trigger decisions, without services: config validation, due schedule times, filters,
argument templates, firing task ids, concurrency admission, webhook signatures."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fnserve import webhooks
from fnserve.errors import BadRequest
from web_service.triggers import config, rules, schedule
from web_service.triggers.config import Schedule

UTC = timezone.utc


def t(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC) if "+" not in s else datetime.fromisoformat(s)


# -- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg, field", [
    ({}, "config"),
    ({"cron": "* * * * *", "every": 5}, "config"),
    ({"cron": "every minute"}, "config.cron"),
    ({"cron": "61 * * * *"}, "config.cron"),
    ({"every": 0.5}, "config.every"),
    ({"every": True}, "config.every"),
    ({"every": "5"}, "config.every"),
    ({"every": 5, "timezone": "Mars/Olympus"}, "config.timezone"),
    ({"every": 5, "catch_up": -1}, "config.catch_up"),
    ({"every": 5, "catch_up": 1000}, "config.catch_up"),
    ({"every": 5, "at": "noon"}, "config"),
])
def test_a_bad_schedule_is_refused_naming_the_field(cfg, field):
    with pytest.raises(BadRequest) as exc:
        config.parse_config("schedule", cfg)
    assert exc.value.code == "invalid_request"
    assert exc.value.details["field"] == field
    assert exc.value.message.startswith(field)


def test_a_good_schedule_is_stored_with_its_defaults():
    assert config.parse_config("schedule", {"cron": "0 3 * * *", "timezone": "Europe/Berlin"}) == {
        "cron": "0 3 * * *", "timezone": "Europe/Berlin", "catch_up": config.DEFAULT_CATCH_UP}
    assert config.schedule_of('{"every": 2.0, "timezone": "UTC", "catch_up": 0}') == Schedule(every=2.0, catch_up=0)


def test_unknown_kinds_and_webhook_settings_are_refused():
    with pytest.raises(BadRequest) as exc:
        config.parse_kind("cron")
    assert exc.value.details["field"] == "kind"
    with pytest.raises(BadRequest):
        config.parse_config("webhook", {"secret": "mine"})
    assert config.parse_config("webhook", None) == {}


@pytest.mark.parametrize("rule, field", [
    ({"endpoint_id": "e"}, "function_id"),
    ({"function_id": "f"}, "endpoint_id"),
    ({"function_id": "f", "endpoint_id": "e", "args_template": ["$"]}, "args_template"),
    ({"function_id": "f", "endpoint_id": "e", "args_template": {"args": "$"}}, "args_template.args"),
    ({"function_id": "f", "endpoint_id": "e", "filters": [{"field": "data.x", "op": "like", "value": 1}]}, "filters[0].op"),
    ({"function_id": "f", "endpoint_id": "e", "filters": [{"field": "data.x", "op": "eq"}]}, "filters[0].value"),
    ({"function_id": "f", "endpoint_id": "e", "filters": [{"field": "data.x", "op": "in", "value": 3}]}, "filters[0].value"),
    ({"function_id": "f", "endpoint_id": "e", "max_concurrency": 0}, "max_concurrency"),
    ({"function_id": "f", "endpoint_id": "e", "priority": 1}, "priority"),
])
def test_a_bad_rule_is_refused_naming_the_field(rule, field):
    with pytest.raises(BadRequest) as exc:
        config.parse_rule(rule)
    assert exc.value.details["field"] == field


def test_a_rule_without_a_template_passes_the_whole_event():
    spec = config.parse_rule({"function_id": "f", "endpoint_id": "e"})
    assert spec.template == {"args": ["$"], "kwargs": {}}
    assert spec.max_concurrency is None and spec.filters == ()


# -- schedules ----------------------------------------------------------------------------------


def test_interval_times_sit_on_a_grid_every_replica_computes_alike():
    every2 = Schedule(every=2.0)
    last = t("2026-12-01T10:00:00.500")
    now = t("2026-12-01T10:00:07.900")
    assert schedule.due_times(every2, last, now) == [t("2026-12-01T10:00:02"), t("2026-12-01T10:00:04"), t("2026-12-01T10:00:06")]
    # Asking again from the last time fired gives nothing until the next grid point.
    assert schedule.due_times(every2, t("2026-12-01T10:00:06"), now) == []
    assert schedule.due_times(every2, t("2026-12-01T10:00:06"), t("2026-12-01T10:00:08")) == [t("2026-12-01T10:00:08")]


def test_a_long_outage_fires_only_the_latest_catch_up_times():
    sched = Schedule(every=1.0, catch_up=2)
    got = schedule.due_times(sched, t("2026-01-01T00:00:00"), t("2026-12-01T00:00:00"))
    assert got == [t("2026-11-30T23:59:58"), t("2026-11-30T23:59:59"), t("2026-12-01T00:00:00")]
    cron = Schedule(cron="* * * * *", catch_up=0)
    assert schedule.due_times(cron, t("2026-01-01T00:00:00"), t("2026-12-01T00:00:30")) == [t("2026-12-01T00:00:00")]


def test_cron_times_follow_the_time_zone_including_its_daylight_saving_change():
    berlin_3am = Schedule(cron="0 3 * * *", timezone="Europe/Berlin")
    # 03:00 in Berlin is 02:00 UTC in winter and 01:00 UTC in summer (DST ends 2026-10-25).
    got = schedule.due_times(berlin_3am, t("2026-10-23T12:00:00"), t("2026-10-26T12:00:00"))
    assert got == [t("2026-10-24T01:00:00"), t("2026-10-25T02:00:00"), t("2026-10-26T02:00:00")]


def test_a_cron_time_equal_to_now_is_due_and_one_equal_to_last_is_not():
    every_minute = Schedule(cron="* * * * *")
    assert schedule.due_times(every_minute, t("2026-12-01T10:00:00"), t("2026-12-01T10:01:00")) == [t("2026-12-01T10:01:00")]
    six_fields = Schedule(cron="* * * * * */2")  # croniter: seconds as a sixth field
    assert schedule.due_times(six_fields, t("2026-12-01T10:00:00"), t("2026-12-01T10:00:05")) == [
        t("2026-12-01T10:00:02"), t("2026-12-01T10:00:04")]


def test_the_event_key_of_a_time_is_the_same_in_any_zone():
    a = t("2026-12-01T10:00:02")
    assert schedule.event_key(a) == schedule.event_key(a.astimezone(timezone(timedelta(hours=5))))
    assert schedule.next_time(Schedule(every=2.0), a) == t("2026-12-01T10:00:04")


# -- rules ------------------------------------------------------------------------------------------


EVENT = {"trigger_id": "t1", "event_id": "e1", "kind": "webhook", "time": "2026-12-01T10:00:00+00:00",
         "data": {"path": "/data/scan7/img_0001.tif", "size": 2048, "tags": ["a", "b"], "beam": {"energy": 12.4}}}


@pytest.mark.parametrize("f, holds", [
    ({"field": "data.path", "op": "glob", "value": "/data/*/img_*.tif"}, True),
    ({"field": "data.path", "op": "glob", "value": "*.h5"}, False),
    ({"field": "data.size", "op": "gt", "value": 1024}, True),
    ({"field": "data.size", "op": "le", "value": 1024}, False),
    ({"field": "data.size", "op": "gt", "value": "big"}, False),  # type mismatch: does not hold
    ({"field": "data.tags.1", "op": "eq", "value": "b"}, True),
    ({"field": "data.beam.energy", "op": "in", "value": [12.4, 8.0]}, True),
    ({"field": "data.missing", "op": "ne", "value": 1}, False),  # a missing field holds nothing
    ({"field": "data.missing", "op": "exists"}, False),
    ({"field": "kind", "op": "eq", "value": "webhook"}, True),
])
def test_filters(f, holds):
    assert rules.matches([f], EVENT) is holds


def test_templates_fill_typed_values_from_the_event():
    args, kwargs = rules.render({"args": ["$data.path", "$data.size"], "kwargs": {"beam": "$data.beam", "lit": "$$data",
                                                                                  "n": 3, "ev": "$event_id"}}, EVENT)
    assert args == ["/data/scan7/img_0001.tif", 2048]
    assert kwargs == {"beam": {"energy": 12.4}, "lit": "$data", "n": 3, "ev": "e1"}
    assert rules.render(config.DEFAULT_TEMPLATE, EVENT) == ([EVENT], {})


def test_a_template_naming_a_missing_field_fires_as_an_error_not_a_task():
    firings = rules.fire(EVENT, [("r1", {"args": ["$data.nope"]}, []), ("r2", {"args": ["$data.size"]}, []),
                                 ("r3", {"args": []}, [{"field": "data.size", "op": "lt", "value": 0}])])
    assert [f.rule_id for f in firings] == ["r1", "r2"]  # r3 filtered out
    assert firings[0].error and "data.nope" in firings[0].error and firings[0].args is None
    assert firings[1].args == [2048] and firings[1].error is None


def test_a_firing_task_id_is_fixed_by_event_and_rule():
    a = rules.firing_task_id("e1", "r1")
    assert a == rules.firing_task_id("e1", "r1")
    assert len({a, rules.firing_task_id("e1", "r2"), rules.firing_task_id("e2", "r1")}) == 3


@pytest.mark.parametrize("pending, active, limit, admitted", [
    (5, 0, None, 5), (5, 0, 2, 2), (5, 1, 2, 1), (5, 2, 2, 0), (5, 7, 2, 0), (0, 0, 3, 0), (1, 0, 3, 1),
])
def test_admission_keeps_a_rule_within_its_concurrency(pending, active, limit, admitted):
    assert rules.admit(pending, active, limit) == admitted


# -- webhook signatures ---------------------------------------------------------------------------


def test_a_signed_delivery_checks_and_any_change_breaks_it():
    body = b'{"scan": 7}'
    h = webhooks.sign("s3cret", body, now=1_000_000)
    ts, sig = h[webhooks.TIMESTAMP_HEADER], h[webhooks.SIGNATURE_HEADER]
    assert webhooks.check("s3cret", ts, sig, body, now=1_000_010) is None
    assert "does not match" in webhooks.check("other", ts, sig, body, now=1_000_010)
    assert "does not match" in webhooks.check("s3cret", ts, sig, b'{"scan": 8}', now=1_000_010)
    assert "does not match" in webhooks.check("s3cret", str(int(ts) + 1), sig, body, now=1_000_010)
    assert "clock" in webhooks.check("s3cret", ts, sig, body, now=1_000_000 + webhooks.MAX_SKEW + 1)
    assert "headers" in webhooks.check("s3cret", None, sig, body, now=1_000_000)
    assert "Unix seconds" in webhooks.check("s3cret", "yesterday", sig, body, now=1_000_000)


# -- file triggers ----------------------------------------------------------------------------------


def test_a_bad_file_trigger_config_is_refused_naming_the_field():
    for cfg, field in [({"folder": "/d"}, "config.endpoint_id"), ({"endpoint_id": "e", "folder": "data"}, "config.folder"),
                       ({"endpoint_id": "e", "folder": "/d/../etc"}, "config.folder"),
                       ({"endpoint_id": "e", "folder": "/d", "pattern": "a/*.h5"}, "config.pattern"),
                       ({"endpoint_id": "e", "folder": "/d", "settle": -1}, "config.settle"),
                       ({"endpoint_id": "e", "folder": "/d", "poll": "yes"}, "config.poll")]:
        with pytest.raises(BadRequest) as exc:
            config.parse_config("file", cfg)
        assert exc.value.details["field"] == field, cfg


def test_the_service_allows_only_folders_under_the_admins_list():
    from web_service.triggers.files import folder_allowed

    assert folder_allowed("/data/beamline/scan7", ["/data/beamline"])
    assert folder_allowed("/data/beamline", ["/data/beamline/"])
    assert not folder_allowed("/data/beamline2", ["/data/beamline"])
    assert not folder_allowed("/etc", [])


def test_the_site_manager_judges_a_folder_by_where_its_links_lead(tmp_path):
    from site_manager.file_watch import folder_allowed

    allowed = tmp_path / "data"
    (allowed / "scans").mkdir(parents=True)
    outside = tmp_path / "private"
    outside.mkdir()
    (allowed / "escape").symlink_to(outside)
    assert folder_allowed(str(allowed / "scans"), [str(allowed)])
    assert not folder_allowed(str(allowed / "escape"), [str(allowed)])
    assert not folder_allowed(str(allowed / ".." / "private"), [str(allowed)])


def test_a_file_is_taken_once_it_is_unchanged_for_its_settle_time():
    from site_manager.file_watch import Settler

    s = Settler()
    s.observe("t", "/d/a.h5", 100, 1.0, now=10.0)
    assert s.due(10.4, {"t": 0.5}) == []
    s.observe("t", "/d/a.h5", 200, 1.5, now=10.4)  # still growing: its settle time starts again
    s.touch("t", "/d/a.h5", now=10.6)  # a write seen without a stat
    assert s.due(11.0, {"t": 0.5}) == []
    assert s.due(11.1, {"t": 0.5}) == [("t", "/d/a.h5", 200, 1.5)]
    assert s.due(20.0, {"t": 0.5}) == []  # taken once
    s.observe("t", "/d/a.h5", 200, 1.5, now=21.0)  # the same version seen again (a poll, a scan)
    assert s.pending == {}
    s.observe("t", "/d/a.h5", 300, 2.0, now=22.0)  # rewritten: a new version, a new event
    assert s.due(22.0, {"t": 0.0}) == [("t", "/d/a.h5", 300, 2.0)]


def test_a_watch_takes_matching_files_directly_in_its_folder_unless_recursive():
    from fnserve.messages import FolderWatch
    from site_manager.file_watch import matches

    w = FolderWatch(trigger_id="t", folder="/d", pattern="*.h5")
    assert matches(w, "/d/a.h5") and not matches(w, "/d/a.tif") and not matches(w, "/d/.a.h5.part")
    assert not matches(w, "/d/sub/a.h5") and not matches(w, "/other/a.h5") and not matches(w, "/d/../x/a.h5")
    assert matches(FolderWatch(trigger_id="t", folder="/d", pattern="*.h5", recursive=True), "/d/sub/a.h5")


def test_the_key_of_a_file_version_is_the_same_on_both_sides_and_new_for_a_rewrite():
    from fnserve.messages import file_event_key

    assert file_event_key("/d/a.h5", 10, 1.25) == file_event_key("/d/a.h5", 10, 1.25)
    assert file_event_key("/d/a.h5", 10, 1.25) != file_event_key("/d/a.h5", 11, 1.25)
    assert len(file_event_key("/d/" + "x" * 4000, 10, 1.0)) <= 200  # fits the event key column

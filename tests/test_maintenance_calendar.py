"""The maintenance calendar (S11): the policy's Monday, 22:00 data-centre time, across DST."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from typer.testing import CliRunner

from erpcloud import policy
from erpcloud.output import EXIT_BAD_INPUT
from frontdoor.cli import app
from maintenance.calendar import (
    CALENDAR_FILE,
    CalendarChange,
    WindowOrigin,
    calendar_change_errors,
    effective_windows,
    load_calendar_changes,
    local_instant,
    nth_monday,
    standard_window,
    standard_windows,
    window_containing,
    window_covering,
)
from maintenance.errors import ChangeFileError

from .conftest import REPO_ROOT

runner = CliRunner()
N = policy.MAINTENANCE_MONDAY_OF_MONTH


def test_nth_monday_of_every_month():
    for year in range(2025, 2036):
        for month in range(1, 13):
            day = nth_monday(year, month)
            assert day.weekday() == 0 and day.month == month
            assert 7 * (N - 1) < day.day <= 7 * N


@pytest.mark.parametrize("region", sorted(policy.REGION_TIMEZONES))
def test_every_window_starts_at_the_local_start_on_a_monday(region: str):
    zone = ZoneInfo(policy.REGION_TIMEZONES[region])
    for year in (2026, 2027, 2028):
        windows = standard_windows(year, region)
        assert len(windows) == 12
        for window in windows:
            local = window.starts_at.astimezone(zone)
            assert local.time() == policy.MAINTENANCE_START_LOCAL
            assert local.weekday() == 0
            assert window.ends_at - window.starts_at == policy.MAINTENANCE_WINDOW
            assert window.starts_at.utcoffset() is not None


@pytest.mark.parametrize(
    ("region", "year", "month", "utc_start", "zone_name"),
    [
        # New York: EST in February, EDT from the second Sunday of March. In 2027 that Sunday is
        # the 14th, so the March window (Monday 15th) is the very next evening.
        ("us-east-1", 2027, 2, datetime(2027, 2, 16, 3, 0, tzinfo=UTC), "EST"),
        ("us-east-1", 2027, 3, datetime(2027, 3, 16, 2, 0, tzinfo=UTC), "EDT"),
        # 2026: the US switched on March 8, Europe only on March 29. In the week between, the
        # two data centres are four hours apart instead of five.
        ("us-east-1", 2026, 3, datetime(2026, 3, 17, 2, 0, tzinfo=UTC), "EDT"),
        ("eu-west-1", 2026, 3, datetime(2026, 3, 16, 22, 0, tzinfo=UTC), "GMT"),
        ("eu-west-1", 2026, 4, datetime(2026, 4, 20, 21, 0, tzinfo=UTC), "IST"),
        # Autumn: Europe falls back on October 25, the US on November 1.
        ("eu-west-1", 2026, 10, datetime(2026, 10, 19, 21, 0, tzinfo=UTC), "IST"),
        ("eu-west-1", 2026, 11, datetime(2026, 11, 16, 22, 0, tzinfo=UTC), "GMT"),
        ("us-east-1", 2026, 10, datetime(2026, 10, 20, 2, 0, tzinfo=UTC), "EDT"),
        ("us-east-1", 2026, 11, datetime(2026, 11, 17, 3, 0, tzinfo=UTC), "EST"),
        # The copy regions keep their own calendars (S6 second location, S11 local time).
        ("eu-central-1", 2026, 3, datetime(2026, 3, 16, 21, 0, tzinfo=UTC), "CET"),
        ("eu-central-1", 2026, 4, datetime(2026, 4, 20, 20, 0, tzinfo=UTC), "CEST"),
    ],
)
def test_dst_edges(region: str, year: int, month: int, utc_start: datetime, zone_name: str):
    window = standard_window(year, month, region)
    assert window.starts_at == utc_start
    assert window.local_start.strftime("%H:%M %Z") == f"22:00 {zone_name}"
    assert window.local_start.strftime("%A") == "Monday"
    assert window.summary()["utc_start"] == utc_start.isoformat()


def test_us_and_eu_windows_are_four_hours_apart_in_the_switch_week():
    dublin = standard_window(2026, 3, "eu-west-1")
    new_york = standard_window(2026, 3, "us-east-1")
    assert (new_york.starts_at - dublin.starts_at).total_seconds() == 4 * 3600
    april = (
        standard_window(2026, 4, "us-east-1").starts_at
        - standard_window(2026, 4, "eu-west-1").starts_at
    )
    assert april.total_seconds() == 5 * 3600


def test_a_local_time_inside_a_dst_gap_resolves_forward():
    # 02:30 does not exist in New York on 2027-03-14: it is 03:30 EDT, 07:30 UTC.
    assert local_instant(date(2027, 3, 14), time(2, 30), "us-east-1") == datetime(
        2027, 3, 14, 7, 30, tzinfo=UTC
    )


def test_window_lookup_by_instant():
    window = standard_window(2027, 3, "us-east-1")
    inside = datetime(2027, 3, 16, 2, 30, tzinfo=UTC)
    assert window_containing(inside, "us-east-1") == window
    assert window_containing(inside, "eu-west-1") is None
    assert window_covering(inside, datetime(2027, 3, 16, 2, 59, tzinfo=UTC), "us-east-1") == window
    assert window_covering(inside, datetime(2027, 3, 16, 3, 1, tzinfo=UTC), "us-east-1") is None


def moved(**overrides: object) -> CalendarChange:
    data: dict[str, object] = {
        "id": "cal-2027-12-holidays",
        "action": "moved",
        "regions": ["eu-west-1"],
        "replaces": "2027-12-20",
        "date": "2027-12-13",
        "reason": "Christmas trading week",
        "announced_at": "2027-11-15T09:00:00+00:00",
    }
    data.update(overrides)
    return CalendarChange.model_validate(data)


def test_a_moved_and_an_extra_window_change_the_calendar():
    extra = CalendarChange.model_validate(
        {
            "id": "cal-2027-06-extra",
            "action": "extra",
            "date": "2027-06-07",
            "reason": "Second window for the storage upgrade",
            "announced_at": "2027-05-01T09:00:00+00:00",
        }
    )
    assert calendar_change_errors("cal.yaml", [moved(), extra]) == []
    dublin = {w.local_date: w for w in effective_windows(2027, "eu-west-1", [moved(), extra])}
    assert date(2027, 12, 20) not in dublin
    assert dublin[date(2027, 12, 13)].origin is WindowOrigin.MOVED
    assert dublin[date(2027, 12, 13)].calendar_change == "cal-2027-12-holidays"
    assert dublin[date(2027, 6, 7)].origin is WindowOrigin.EXTRA
    new_york = {w.local_date for w in effective_windows(2027, "us-east-1", [moved(), extra])}
    assert date(2027, 12, 20) in new_york and date(2027, 6, 7) in new_york  # extra: all regions


def test_calendar_change_rules_name_field_and_rule():
    late = calendar_change_errors("cal.yaml", [moved(announced_at="2027-12-01T09:00:00+00:00")])
    assert [e.field for e in late] == ["changes[0].announced_at"]
    assert f"at least {policy.CALENDAR_CHANGE_NOTICE.days} days ahead (S11)" in late[0].rule
    wrong = calendar_change_errors("cal.yaml", [moved(replaces="2027-12-06")])
    assert wrong[0].field == "changes[0].replaces" and "not a standard window" in wrong[0].rule
    clash = calendar_change_errors(
        "cal.yaml", [moved(action="extra", replaces=None, date="2027-12-20")]
    )
    assert clash[0].field == "changes[0].date" and "already a standard window" in clash[0].rule


def test_calendar_file_errors_are_reported_all_at_once(tmp_path: Path):
    path = tmp_path / "calendar.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "changes": [
                    {"id": "x1", "action": "moved", "date": "2027-12-13", "reason": "r"},
                    {"id": "cal-ok", "action": "sideways", "date": "2027-12-13", "reason": "ok!",
                     "announced_at": "2027-11-01T00:00:00Z", "colour": "red"},
                ]
            }
        )
    )  # fmt: skip
    with pytest.raises(ChangeFileError) as error:
        load_calendar_changes(path)
    fields = {e.field for e in error.value.errors}
    assert {"changes[0].id", "changes[0].announced_at", "changes[1].action"} <= fields
    assert "changes[1].colour" in fields
    assert all(e.file == str(path) for e in error.value.errors)


def test_the_repository_calendar_file_is_valid():
    assert load_calendar_changes(REPO_ROOT / CALENDAR_FILE) is not None


def test_calendar_command_json(tmp_path: Path):
    result = runner.invoke(
        app, ["maintenance", "calendar", "--year", "2027", "--region", "us-east-1", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    march = next(w for w in document["windows"] if w["local_date"] == "2027-03-15")
    assert march["utc_start"] == "2027-03-16T02:00:00+00:00"
    assert march["local_zone"] == "EDT" and march["weekday"] == "Monday"
    assert len(document["windows"]) == 12

    calendar = tmp_path / "calendar.yaml"
    calendar.write_text(yaml.safe_dump({"changes": [moved().model_dump(mode="json")]}))
    result = runner.invoke(
        app,
        ["maintenance", "calendar", "--year", "2027", "--calendar", str(calendar), "--json"],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert {"eu-west-1", "us-east-1", "eu-central-1", "us-east-2", "eu-west-3"} <= set(
        document["regions"]
    )  # the defaults, their copy regions, and the fleet's exception region
    dublin = [w for w in document["windows"] if w["region"] == "eu-west-1"]
    assert [w["origin"] for w in dublin if w["local_date"] == "2027-12-13"] == ["moved"]

    result = runner.invoke(app, ["maintenance", "calendar", "--region", "mars-north-1"])
    assert result.exit_code == EXIT_BAD_INPUT and "mars-north-1" in result.output

"""An offer's deadline: Ontario business days (weekends and public holidays skipped, across
daylight-saving changes), seconds for tests, and the settings that choose between them."""

import datetime
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import pytest

from services.router.deadlines import (
    TORONTO,
    business_days_deadline,
    deadline_policy,
    is_business_day,
    offer_deadline,
    ontario_holidays,
    seconds_deadline,
)
from services.router.settings import RouterSettings

UTC = datetime.UTC
ROOT = Path(__file__).parents[2]


def toronto(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime.datetime:
    return datetime.datetime(year, month, day, hour, minute, tzinfo=TORONTO)


def two_days(offered_at: datetime.datetime) -> datetime.datetime:
    """The deadline with the default two business days, back in Toronto time to read it."""
    return offer_deadline(offered_at, business_days=2).astimezone(TORONTO)


def test_the_library_gives_ontarios_nine_public_holidays_with_observed_days() -> None:
    # 2026: Boxing Day is a Saturday, observed on Monday the 28th. Easter Monday (April 6), the
    # Civic Holiday (August 3), Truth and Reconciliation (September 30) and Remembrance Day
    # (November 11) are not public holidays in Ontario.
    assert ontario_holidays(2026) == {
        datetime.date(2026, 1, 1),  # New Year's Day
        datetime.date(2026, 2, 16),  # Family Day
        datetime.date(2026, 4, 3),  # Good Friday
        datetime.date(2026, 5, 18),  # Victoria Day
        datetime.date(2026, 7, 1),  # Canada Day
        datetime.date(2026, 9, 7),  # Labour Day
        datetime.date(2026, 10, 12),  # Thanksgiving
        datetime.date(2026, 12, 25),  # Christmas Day
        datetime.date(2026, 12, 26),  # Boxing Day
        datetime.date(2026, 12, 28),  # Boxing Day (observed)
    }
    # 2027: Christmas on a Saturday and Boxing Day on a Sunday close Monday and Tuesday.
    assert {datetime.date(2027, 12, 27), datetime.date(2027, 12, 28)} <= ontario_holidays(2027)


def test_weekends_and_holidays_are_not_business_days() -> None:
    assert is_business_day(datetime.date(2026, 3, 11))  # a Wednesday
    assert not is_business_day(datetime.date(2026, 3, 14))  # a Saturday
    assert not is_business_day(datetime.date(2026, 3, 15))  # a Sunday
    assert not is_business_day(datetime.date(2026, 7, 1))  # Canada Day, a Wednesday


def test_an_ordinary_weekday_gives_the_same_time_two_business_days_later() -> None:
    assert two_days(toronto(2026, 3, 11, 14, 30)) == toronto(2026, 3, 13, 14, 30)


def test_the_deadline_is_in_utc() -> None:
    deadline = offer_deadline(toronto(2026, 3, 11, 14, 30), business_days=2)
    assert deadline.tzinfo is UTC
    assert deadline == datetime.datetime(2026, 3, 13, 18, 30, tzinfo=UTC)  # EDT, UTC-4


def test_friday_gives_tuesday() -> None:
    assert two_days(toronto(2026, 3, 13, 15, 0)) == toronto(2026, 3, 17, 15, 0)


def test_one_business_day() -> None:
    assert offer_deadline(toronto(2026, 3, 9, 9, 0), business_days=1) == toronto(2026, 3, 10, 9)
    assert offer_deadline(toronto(2026, 3, 13, 9, 0), business_days=1) == toronto(2026, 3, 16, 9)


def test_late_evening_offers_keep_their_time_of_day() -> None:
    assert two_days(toronto(2026, 3, 13, 23, 30)) == toronto(2026, 3, 17, 23, 30)


def test_the_local_date_counts_not_the_utc_date() -> None:
    # Saturday 03:00 UTC is Friday 23:00 in Toronto: a Friday offer, due Tuesday 23:00.
    offered_at = datetime.datetime(2026, 3, 14, 3, 0, tzinfo=UTC)
    deadline = offer_deadline(offered_at, business_days=2)
    assert deadline == datetime.datetime(2026, 3, 18, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("offered_on", "due_on", "why"),
    [
        ((2026, 12, 24), (2026, 12, 30), "Christmas Fri, weekend, Boxing Day observed Mon"),
        ((2026, 12, 30), (2027, 1, 4), "New Year's Day Fri, weekend"),
        ((2027, 12, 24), (2027, 12, 30), "Christmas Sat and Boxing Day Sun, observed Mon+Tue"),
        ((2026, 4, 2), (2026, 4, 7), "Good Friday; Easter Monday is a business day"),
        ((2026, 2, 13), (2026, 2, 18), "Family Day, third Monday of February"),
        ((2026, 5, 15), (2026, 5, 20), "Victoria Day"),
        ((2026, 6, 30), (2026, 7, 3), "Canada Day, a Wednesday"),
        ((2026, 7, 31), (2026, 8, 4), "Civic Holiday is a business day in Ontario"),
        ((2026, 9, 4), (2026, 9, 9), "Labour Day"),
        ((2026, 9, 29), (2026, 10, 1), "Truth and Reconciliation is a business day in Ontario"),
        ((2026, 10, 9), (2026, 10, 14), "Thanksgiving"),
        ((2026, 11, 10), (2026, 11, 12), "Remembrance Day is a business day in Ontario"),
    ],
)
def test_holidays_are_skipped(
    offered_on: tuple[int, int, int], due_on: tuple[int, int, int], why: str
) -> None:
    assert two_days(toronto(*offered_on, 10, 0)) == toronto(*due_on, 10, 0), why


def test_a_weekend_offer_counts_from_the_start_of_the_next_business_day() -> None:
    # Saturday 10:00: Monday and Tuesday in full, so the offer expires as Wednesday begins.
    assert two_days(toronto(2026, 3, 14, 10, 0)) == toronto(2026, 3, 18, 0, 0)
    assert two_days(toronto(2026, 3, 15, 23, 59)) == toronto(2026, 3, 18, 0, 0)


def test_a_holiday_offer_counts_from_the_start_of_the_next_business_day() -> None:
    # Good Friday 15:00: Monday (Easter Monday) and Tuesday in full.
    assert two_days(toronto(2026, 4, 3, 15, 0)) == toronto(2026, 4, 8, 0, 0)


def test_the_local_time_survives_the_spring_change() -> None:
    # Clocks go forward on Sunday 2026-03-08: Friday 10:00 EST, Tuesday 10:00 EDT.
    deadline = offer_deadline(toronto(2026, 3, 6, 10, 0), business_days=2)
    assert deadline == datetime.datetime(2026, 3, 10, 14, 0, tzinfo=UTC)
    assert deadline - toronto(2026, 3, 6, 10, 0) == datetime.timedelta(days=4, hours=-1)


def test_the_local_time_survives_the_autumn_change() -> None:
    # Clocks go back on Sunday 2026-11-01: Friday 10:00 EDT, Tuesday 10:00 EST.
    deadline = offer_deadline(toronto(2026, 10, 30, 10, 0), business_days=2)
    assert deadline == datetime.datetime(2026, 11, 3, 15, 0, tzinfo=UTC)


def test_an_offer_during_the_changing_night_counts_from_monday() -> None:
    # 01:30 happens twice on Sunday 2026-11-01; either way the count starts Monday 00:00 EST.
    for fold in (0, 1):
        offered_at = toronto(2026, 11, 1, 1, 30).replace(fold=fold)
        deadline = offer_deadline(offered_at, business_days=2)
        assert deadline == datetime.datetime(2026, 11, 4, 5, 0, tzinfo=UTC)


def test_another_ontario_time_zone() -> None:
    # Kenora keeps Central time: Friday 23:30 there is already Saturday in Toronto.
    winnipeg = ZoneInfo("America/Winnipeg")
    offered_at = datetime.datetime(2026, 3, 13, 23, 30, tzinfo=winnipeg)
    deadline = offer_deadline(offered_at, business_days=2, timezone=winnipeg)
    assert deadline == datetime.datetime(2026, 3, 17, 23, 30, tzinfo=winnipeg)
    assert two_days(offered_at) == toronto(2026, 3, 18, 0, 0)


def test_naive_times_and_fewer_than_one_day_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        offer_deadline(datetime.datetime(2026, 3, 11, 9, 0), business_days=2)
    with pytest.raises(ValueError, match="at least 1"):
        offer_deadline(toronto(2026, 3, 11, 9, 0), business_days=0)
    with pytest.raises(ValueError, match="at least 1"):
        business_days_deadline(0)
    with pytest.raises(ValueError, match="timezone-aware"):
        seconds_deadline(1.0)(datetime.datetime(2026, 3, 11, 9, 0))


def test_seconds_are_elapsed_time_whatever_the_day() -> None:
    saturday = datetime.datetime(2026, 3, 14, 15, 0, tzinfo=UTC)
    assert seconds_deadline(0.5)(saturday) == saturday + datetime.timedelta(seconds=0.5)
    # Two days from Saturday 12:00 EST, across the spring change: 48 hours, in UTC.
    before_change = toronto(2026, 3, 7, 12, 0)
    deadline = seconds_deadline(2 * 24 * 3600)(before_change)
    assert deadline.tzinfo is UTC
    assert deadline == datetime.datetime(2026, 3, 9, 17, 0, tzinfo=UTC)  # Monday 13:00 EDT


def test_importing_the_rule_loads_no_io_library() -> None:
    # The holiday library (which loads socket through importlib.metadata) waits for first use,
    # so a decision module may import ``Deadline`` (tests/unit/test_architecture.py).
    io_libraries = ["asyncpg", "nats", "litestar", "httpx", "uvicorn", "socket", "holidays"]
    code = (
        "import sys, services.router.deadlines\n"
        f"print(','.join(m for m in {io_libraries!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""


# -- settings -----------------------------------------------------------------------------------


def settings(env: dict[str, str]) -> RouterSettings:
    return RouterSettings.from_env("postgresql://db", "nats://nats", env)


def test_two_business_days_by_default() -> None:
    defaults = settings({})
    assert (defaults.offer_business_days, defaults.offer_timeout_s) == (2, None)
    friday = toronto(2026, 3, 13, 15, 0)
    assert deadline_policy(defaults)(friday) == toronto(2026, 3, 17, 15, 0)


def test_business_days_from_the_environment() -> None:
    three = settings({"ROUTER_OFFER_BUSINESS_DAYS": "3"})
    assert three.offer_business_days == 3
    assert deadline_policy(three)(toronto(2026, 3, 13, 15, 0)) == toronto(2026, 3, 18, 15, 0)


def test_seconds_from_the_environment_override_business_days() -> None:
    env = {"ROUTER_OFFER_TIMEOUT_S": "0.5", "ROUTER_OFFER_BUSINESS_DAYS": "3"}
    quick = settings(env)
    assert quick.offer_timeout_s == 0.5
    friday = toronto(2026, 3, 13, 15, 0)
    assert deadline_policy(quick)(friday) == friday + datetime.timedelta(seconds=0.5)


def test_an_empty_timeout_means_business_days() -> None:
    assert settings({"ROUTER_OFFER_TIMEOUT_S": ""}).offer_timeout_s is None


@pytest.mark.parametrize(
    "env",
    [
        {"ROUTER_OFFER_BUSINESS_DAYS": "0"},
        {"ROUTER_OFFER_BUSINESS_DAYS": "two"},
        {"ROUTER_OFFER_TIMEOUT_S": "0"},
        {"ROUTER_OFFER_TIMEOUT_S": "-1"},
    ],
)
def test_nonsense_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(msgspec.ValidationError):
        settings(env)

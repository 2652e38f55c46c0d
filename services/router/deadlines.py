"""When an offer expires: business days in Ontario (DESIGN.md section 3c), or plain seconds.

This module owns the deadline rule and nothing else; it reads no clock and does no I/O (the
holiday library reads its bundled translation files once per year it computes, which changes
nothing here: the same input gives the same deadline).

**A business day** is a whole calendar day in Ontario's local time that is neither a Saturday,
a Sunday nor one of Ontario's public holidays. Office hours are not modelled: a provider gets
whole days, whatever time the offer came in.

**The rule.** An offer made on a business day expires at the same local wall-clock time,
``business_days`` business days later: Friday 15:00 with two business days gives Tuesday 15:00
(Monday and Tuesday counted). An offer made on a weekend or a holiday counts from the start
(00:00) of the next business day, so the provider still gets the full days: Saturday 10:00
gives Wednesday 00:00, which is the end of Tuesday. Both rules are one: the deadline is
``business_days`` business days of elapsed business time after the offer.

**Ontario's holidays** come from the ``holidays`` package,
``country_holidays("CA", subdiv="ON", categories="public")``: the nine public holidays of
Ontario's Employment Standards Act, 2000 (New Year's Day, Family Day, Good Friday, Victoria
Day, Canada Day, Labour Day, Thanksgiving, Christmas Day, Boxing Day), with the library's
observed days (New Year's Day, Christmas Day and Boxing Day falling on a weekend move to the
next Monday or Tuesday, when offices are closed). Easter Monday, the Civic Holiday (first
Monday of August), Remembrance Day and the National Day for Truth and Reconciliation are not
public holidays in Ontario (the library files them under "optional" or "government") and are
business days here.

**Time zones.** The days are counted in ``timezone`` (America/Toronto by default; a provider in
Ontario's Central-time northwest would pass America/Winnipeg), and the deadline is returned in
UTC, so a deadline across a daylight-saving change keeps its local time of day. Toronto's
clocks change on Sundays, never on a business day; elsewhere, a wall-clock time that falls in
a gap or an overlap on the deadline's day resolves as ``zoneinfo`` does by default (fold=0).
"""

import datetime
import functools
from collections.abc import Callable
from typing import TypeAlias
from zoneinfo import ZoneInfo

from services.router.settings import RouterSettings

TORONTO = ZoneInfo("America/Toronto")

#: An offer's deadline from the moment it was made (both timezone-aware; the deadline in UTC).
Deadline: TypeAlias = Callable[[datetime.datetime], datetime.datetime]


@functools.cache
def ontario_holidays(year: int) -> frozenset[datetime.date]:
    """Ontario's public holidays of ``year``, observed days included."""
    # Imported on first use: the package takes a fifth of a second to import and loads the
    # standard library's socket module (through importlib.metadata), which the router's
    # decision modules must not load (tests/unit/test_architecture.py) should they import
    # this one, if only for ``Deadline``.
    import holidays

    calendar = holidays.country_holidays(
        "CA", subdiv="ON", years=year, categories=holidays.PUBLIC, observed=True
    )
    return frozenset(calendar)


def is_business_day(day: datetime.date) -> bool:
    return day.weekday() < 5 and day not in ontario_holidays(day.year)


def next_business_day(day: datetime.date) -> datetime.date:
    """The first business day after ``day`` (never ``day`` itself)."""
    day += datetime.timedelta(days=1)
    while not is_business_day(day):
        day += datetime.timedelta(days=1)
    return day


def offer_deadline(
    offered_at: datetime.datetime, *, business_days: int, timezone: ZoneInfo = TORONTO
) -> datetime.datetime:
    """The moment an offer made at ``offered_at`` expires, in UTC: the same local time
    ``business_days`` Ontario business days later (the module docstring has the rule)."""
    _require_aware(offered_at)
    if business_days < 1:
        raise ValueError(f"business_days must be at least 1, not {business_days}")
    local = offered_at.astimezone(timezone)
    day, time_of_day = local.date(), local.time().replace(fold=0)
    if not is_business_day(day):
        day, time_of_day = next_business_day(day), datetime.time(0)
    for _ in range(business_days):
        day = next_business_day(day)
    deadline = datetime.datetime.combine(day, time_of_day, tzinfo=timezone)
    return deadline.astimezone(datetime.UTC)


def business_days_deadline(business_days: int, timezone: ZoneInfo = TORONTO) -> Deadline:
    if business_days < 1:
        raise ValueError(f"business_days must be at least 1, not {business_days}")

    def deadline(offered_at: datetime.datetime) -> datetime.datetime:
        return offer_deadline(offered_at, business_days=business_days, timezone=timezone)

    return deadline


def seconds_deadline(seconds: float) -> Deadline:
    """A fixed span of elapsed time, whatever the day (tests use fractions of a second)."""
    timeout = datetime.timedelta(seconds=seconds)

    def deadline(offered_at: datetime.datetime) -> datetime.datetime:
        _require_aware(offered_at)
        # In UTC: adding to a local time would add wall-clock time across a DST change.
        return offered_at.astimezone(datetime.UTC) + timeout

    return deadline


def deadline_policy(settings: RouterSettings) -> Deadline:
    """``offer_timeout_s`` seconds when it is set, else ``offer_business_days`` business days."""
    if settings.offer_timeout_s is not None:
        return seconds_deadline(settings.offer_timeout_s)
    return business_days_deadline(settings.offer_business_days)


def _require_aware(moment: datetime.datetime) -> None:
    if moment.utcoffset() is None:
        raise ValueError(f"a deadline needs a timezone-aware time, not {moment.isoformat()}")

"""Per-adapter sending limits: messages per second, per hour, and a warm-up schedule.

* ``rate_per_second``: a token bucket (bursts of at most one second's worth);
  the limiter *sleeps* to pace, since waits are short.
* ``rate_per_hour``: a sliding one-hour window, so no hour ever holds more
  than the figure. When it is full the limiter does not sleep for minutes:
  the rest of the batch comes back ``deferred`` until a slot frees.
* ``warmup``: for a new sending domain, a daily cap that grows by day
  (``warmup = [[1, 500], [2, 1000], [4, 2500]]``: day 1 up to 500, days 2-3
  up to 1000, day 4 up to 2500, then no warm-up cap), counting days from
  ``warmup_start`` (day 1). The count of messages already sent today can
  come from the ledger (``sent_since``), so separate runs on one day share
  the cap; otherwise the limiter counts what it admitted itself.

The clock and sleep are injected: tests run without waiting.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from ..errors import ConfigError

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


class RateLimiter:
    """Admits messages for sending; see the module docstring for the rules."""

    def __init__(
        self,
        per_second: float | None = None,
        per_hour: int | None = None,
        warmup: list[tuple[int, int]] | None = None,
        warmup_start: datetime | None = None,
        *,
        clock: Callable[[], datetime],
        sleep: Callable[[float], None],
        sent_since: Callable[[datetime], int] | None = None,
    ):
        if warmup and warmup_start is None:
            raise ConfigError("relmail.toml [delivery]: 'warmup' needs 'warmup_start' (the first sending day)")
        if warmup_start is not None and warmup_start.tzinfo is None:
            raise ConfigError("relmail.toml [delivery]: 'warmup_start' needs a time zone offset")
        self.per_second = per_second
        self.per_hour = per_hour
        self.warmup = sorted(warmup or [])
        self.warmup_start = warmup_start
        self.clock = clock
        self.sleep = sleep
        self.sent_since = sent_since
        self._lock = threading.Lock()
        self._tokens = float(per_second or 0)
        self._last = clock()
        self._hour: deque[tuple[datetime, int]] = deque()
        self._day_start: datetime | None = None
        self._day_count = 0

    @classmethod
    def from_config(cls, config: Any, *, clock, sleep, sent_since=None) -> RateLimiter:
        """Build from an adapter :class:`~relmail.delivery.config.Config`."""
        per_second = config.number("rate_per_second", None)
        if per_second is not None and per_second <= 0:
            raise ConfigError(f"{config.where}: key 'rate_per_second' must be above 0")
        per_hour = config.integer("rate_per_hour", None, minimum=1)
        warmup = parse_warmup(config.get("warmup"), config.where)
        start = parse_start(config.get("warmup_start"), config.where)
        return cls(per_second, per_hour, warmup, start, clock=clock, sleep=sleep, sent_since=sent_since)

    def daily_cap(self, now: datetime) -> tuple[int | None, datetime | None, int]:
        """(cap, start of the current warm-up day, day number); cap ``None`` once warm-up is over."""
        if not self.warmup or self.warmup_start is None:
            return None, None, 0
        day = (now - self.warmup_start) // DAY + 1
        if day > self.warmup[-1][0]:
            return None, None, day  # warm-up is over
        cap = self.warmup[0][1]
        for d, c in self.warmup:
            if d <= day:
                cap = c
        start = self.warmup_start + (max(day, 1) - 1) * DAY
        return cap, start, day

    def acquire(self, n: int) -> tuple[int, datetime | None, str]:
        """Admit up to ``n`` messages now.

        Returns ``(granted, resume_at, reason)``. ``resume_at`` is set when an
        hourly or daily cap stops the batch: messages beyond ``granted`` wait
        until then. With ``resume_at`` ``None`` a smaller ``granted`` only
        paces (call again for the rest).
        """
        with self._lock:
            now = self.clock()
            granted = n
            resume_at: datetime | None = None
            reason = ""
            cap, day_start, day = self.daily_cap(now)
            if cap is not None:
                if self._day_start != day_start:
                    self._day_start, self._day_count = day_start, 0
                used = self.sent_since(day_start) if self.sent_since else self._day_count
                left = max(cap - used, 0)
                if left < granted:
                    granted = left
                    resume_at = day_start + DAY
                    reason = f"warm-up cap of {cap} messages on day {day} reached"
            if self.per_hour:
                while self._hour and self._hour[0][0] <= now - HOUR:
                    self._hour.popleft()
                used = sum(c for _, c in self._hour)
                left = max(self.per_hour - used, 0)
                if left < granted:
                    granted = left
                    # The window frees its oldest entry (or what is admitted now) one hour after it was sent.
                    free_at = (self._hour[0][0] if self._hour else now) + HOUR
                    if resume_at is None or free_at < resume_at:
                        resume_at, reason = free_at, f"rate limit of {self.per_hour} messages per hour reached"
            if self.per_second and granted:
                granted = min(granted, max(int(self.per_second), 1))
                self._refill(now)
                if self._tokens < granted:
                    wait = (granted - self._tokens) / self.per_second
                    self.sleep(wait)
                    now = self.clock()
                    self._refill(now)
                    # A coarse sleep may not cover it all: pace on what there is.
                    granted = max(min(granted, math.floor(self._tokens + 1e-9)), 1)
                self._tokens -= granted
            if granted:
                self._hour.append((now, granted))
                self._day_count += granted
            return granted, resume_at, reason

    def _refill(self, now: datetime) -> None:
        elapsed = max((now - self._last).total_seconds(), 0.0)
        self._last = now
        cap = max(float(self.per_second or 0), 1.0)
        self._tokens = min(cap, self._tokens + elapsed * float(self.per_second or 0))


def parse_warmup(value: Any, where: str) -> list[tuple[int, int]] | None:
    """``[[day, daily_cap], ...]`` with increasing days from 1 and positive caps."""
    if value is None:
        return None
    bad = ConfigError(f"{where}: 'warmup' must be a list of [day, daily_cap] pairs, e.g. [[1, 500], [2, 1000]]")
    if not isinstance(value, list) or not value:
        raise bad
    out: list[tuple[int, int]] = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
            raise bad
        day, cap = item
        if day < 1 or cap < 1:
            raise ConfigError(f"{where}: 'warmup' entry {item}: day and cap must be at least 1")
        if out and day <= out[-1][0]:
            raise ConfigError(f"{where}: 'warmup' days must increase; {day} follows {out[-1][0]}")
        out.append((day, cap))
    return out


def parse_start(value: Any, where: str) -> datetime | None:
    """``warmup_start``: a TOML date (midnight UTC), an offset datetime, or such a string."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00")) if "T" in value else date.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"{where}: 'warmup_start' {value!r} is not a date (2026-11-01) or offset datetime") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ConfigError(f"{where}: 'warmup_start' {value.isoformat()} needs a time zone offset (e.g. +01:00 or Z)")
        return value
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=UTC)
    raise ConfigError(f"{where}: 'warmup_start' must be a date, got {type(value).__name__}")

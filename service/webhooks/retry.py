"""When to try a failed delivery again, and when to give up: exponential backoff with jitter,
for up to the retry window after the first attempt. Pure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    first_delay: float = 1.0        # seconds before the first retry
    max_delay: float = 3600.0       # backoff stops growing here
    window: float = 86_400.0        # no attempt starts later than this after the first one


def next_attempt_at(policy: RetryPolicy, failures: int, first_attempt_at: float, now: float,
                    jitter: float) -> float | None:
    """After `failures` failed attempts (≥ 1): when to try again, or None to dead-letter.
    `jitter` in [0, 1) spreads retries of many deliveries (half to full delay), so a receiver that
    comes back is not hit by all of them at once."""
    delay = min(policy.max_delay, policy.first_delay * 2 ** min(failures - 1, 40))
    at = now + delay * (0.5 + jitter / 2)
    if at - first_attempt_at > policy.window:
        return None
    return at

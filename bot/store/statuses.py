"""Delivery statuses only move forward: a late "sent" never overwrites "delivered"."""

RANK = {
    "queued": 0, "accepted": 0, "scheduled": 0, "sending": 1, "sent": 2,
    "delivered": 3, "partially_delivered": 2.5, "read": 4, "undelivered": 5, "failed": 5, "canceled": 5, "cancelled": 5,
}

# The message never reached the phone (final, as RANK says).
FAILED = ("failed", "undelivered")


def advance_status(current: str | None, new: str) -> str:
    """The status to keep when `new` arrives for a message now at `current`."""
    if current is None or current not in RANK:
        return new
    if new not in RANK:
        return current
    # Failures are final; otherwise keep the furthest point reached.
    if RANK[current] == 5:
        return current
    return new if RANK[new] >= RANK[current] else current

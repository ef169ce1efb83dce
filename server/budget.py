"""A connection's budget: messages and bytes per second, as token buckets.

Every websocket message (text or binary, a ping too) spends one message and its size in bytes.
Over budget, the message is dropped and the client is told once (``rate_limited``, naming the
limit); a client that goes on flooding is closed.  Pure logic: the caller passes the clock.
"""
from __future__ import annotations

from dataclasses import dataclass

BURST_S = 2.0          # a bucket holds this many seconds of its rate: bursts (a TTS reply at once) pass
GRACE_S = 1.0          # after the warning, going on over budget this long closes the connection
GRACE_MESSAGES = 100   # ... or this many more dropped messages, whichever comes first
CALM_S = 10.0          # a client within budget this long is forgiven: a later burst gets a new warning


@dataclass
class Bucket:
    rate: float          # units per second
    capacity: float
    level: float = -1.0
    at: float = 0.0

    def take(self, n: float, now: float) -> bool:
        if self.level < 0:
            self.level, self.at = self.capacity, now
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now
        if n > self.level:
            return False
        self.level -= n
        return True


class MessageBudget:
    def __init__(self, messages_per_s: float, bytes_per_s: float, min_bytes_burst: int = 0):
        self.messages = Bucket(messages_per_s, messages_per_s * BURST_S)
        # One message may be large (an offer carries the photo): the byte burst holds at least that.
        self.bytes = Bucket(bytes_per_s, max(bytes_per_s * BURST_S, min_bytes_burst))
        self.limits = {"messages": f"{messages_per_s:g} messages/s (max_messages_per_s)",
                       "bytes": f"{bytes_per_s:g} bytes/s (max_bytes_per_s)"}
        self.warned_at: float | None = None
        self.last_over = 0.0
        self.dropped = 0

    def admit(self, size: int, now: float) -> str | None:
        """None if the message may be handled; else the limit it broke (the message is to be dropped)."""
        if not self.messages.take(1, now):
            broke = "messages"
        elif not self.bytes.take(size, now):
            broke = "bytes"
        else:
            return None
        if self.warned_at is not None and now - self.last_over > CALM_S:
            self.warned_at = None
        self.last_over = now
        self.dropped += 1
        return self.limits[broke]

    def warn(self, now: float) -> bool:
        """True the first time: the client is to be told (once)."""
        first = self.warned_at is None
        if first:
            self.warned_at, self.dropped = now, 0
        return first

    def exhausted(self, now: float) -> bool:
        """Still flooding after the warning: close the connection."""
        return self.warned_at is not None and (now - self.warned_at >= GRACE_S or self.dropped >= GRACE_MESSAGES)

"""Counters for /metrics (Prometheus text exposition format)."""
from __future__ import annotations

import collections
from dataclasses import dataclass, field, fields


@dataclass
class Metrics:
    sessions_started: int = 0
    sessions_rejected_busy: int = 0
    connections: int = 0
    frames_sent: int = 0
    frames_duplicated: int = 0
    frames_dropped: int = 0
    errors: collections.Counter = field(default_factory=collections.Counter)
    refused: collections.Counter = field(default_factory=collections.Counter)   # handshakes, by reason
    idle_closed: int = 0               # websockets holding no session, and sessions idle too long
    rate_limited_closed: int = 0       # connections closed for flooding past their budget
    bad_requests: int = 0              # HTTP requests answered 400 (malformed paths and the like)

    def snapshot(self) -> dict:
        """Plain data (JSON-able) for the other workers of a --workers server."""
        return {f.name: dict(getattr(self, f.name)) if isinstance(getattr(self, f.name), dict)
                else getattr(self, f.name) for f in fields(self)}

    @classmethod
    def total(cls, snapshots: list[dict]) -> "Metrics":
        out = cls()
        for snap in snapshots:
            for f in fields(out):
                value = snap.get(f.name)
                if isinstance(value, dict):
                    getattr(out, f.name).update(value)
                elif value is not None:
                    setattr(out, f.name, getattr(out, f.name) + value)
        return out

    def render(self, active: int, max_sessions: int, latency_ms: list[float]) -> str:
        lines = []

        def metric(name, kind, help_, value, labels=""):
            if not any(line.startswith(f"# TYPE {name} ") for line in lines):
                lines.append(f"# HELP {name} {help_}")
                lines.append(f"# TYPE {name} {kind}")
            lines.append(f"{name}{labels} {value}")

        metric("float_rt_sessions_active", "gauge", "Avatar sessions streaming now.", active)
        metric("float_rt_sessions_max", "gauge", "Configured --max-sessions.", max_sessions)
        metric("float_rt_sessions_started_total", "counter", "Sessions started.", self.sessions_started)
        metric("float_rt_sessions_rejected_busy_total", "counter", "Offers refused at max sessions.",
               self.sessions_rejected_busy)
        metric("float_rt_connections_total", "counter", "Signalling websocket connections.", self.connections)
        metric("float_rt_frames_sent_total", "counter", "Video frames handed to WebRTC.", self.frames_sent)
        metric("float_rt_frames_duplicated_total", "counter", "Frames repeated because compute was late.",
               self.frames_duplicated)
        metric("float_rt_frames_dropped_total", "counter", "Frames or input skipped to bound latency.",
               self.frames_dropped)
        for reason, n in sorted(self.refused.items()):
            metric("float_rt_handshakes_refused_total", "counter",
                   "Websocket handshakes refused, by reason (origin, token, rate, connections_per_ip).", n,
                   f'{{reason="{reason}"}}')
        metric("float_rt_idle_websockets_closed_total", "counter",
               "Websockets closed for holding no session, or a session idle past idle_timeout_s.", self.idle_closed)
        metric("float_rt_rate_limited_closed_total", "counter", "Connections closed for flooding past their budget.",
               self.rate_limited_closed)
        metric("float_rt_bad_requests_total", "counter", "HTTP requests answered 400.", self.bad_requests)
        for code, n in sorted(self.errors.items()):
            metric("float_rt_errors_total", "counter", "Errors sent to clients, by code.", n, f'{{code="{code}"}}')
        if latency_ms:
            lat = sorted(latency_ms)
            for q in (0.5, 0.95):
                metric("float_rt_latency_ms", "gauge", "Audio arrival to frame ready, recent frames of active sessions.",
                       f"{lat[min(len(lat) - 1, int(q * len(lat)))]:.1f}", f'{{quantile="{q}"}}')
        return "\n".join(lines) + "\n"

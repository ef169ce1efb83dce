"""ICE host-candidate control.

aioice gathers host candidates on every interface and skips loopback, so in a
network namespace with only ``lo`` it finds none.  ``use_host_addresses`` pins the
addresses offered (process-wide: aioice has no per-connection option for it).
"""
from __future__ import annotations

import aioice.ice

_original = aioice.ice.get_host_addresses


def use_host_addresses(addresses: list[str] | None) -> None:
    """Offer exactly these host addresses (None or empty: aioice's own choice)."""
    if not addresses:
        aioice.ice.get_host_addresses = _original
        return
    pinned = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in pinned if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses


def rtc_configuration(ice_servers: list[str]):
    from aiortc import RTCConfiguration, RTCIceServer
    # An explicit empty list: aiortc would otherwise add a public STUN server.
    return RTCConfiguration(iceServers=[RTCIceServer(urls=u) for u in ice_servers])

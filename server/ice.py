"""ICE host-candidate control.

aioice gathers host candidates on every interface and skips loopback, so in a
network namespace with only ``lo`` it finds none.  ``use_host_addresses`` pins the
addresses offered (process-wide: aioice has no per-connection option for it).
"""
from __future__ import annotations

import aioice.ice

from .policy import is_loopback

_original = aioice.ice.get_host_addresses


def use_host_addresses(addresses: list[str] | None, keep_default: bool = False) -> None:
    """Offer exactly these host addresses (None or empty: aioice's own choice).

    ``keep_default``: offer them in addition to the addresses aioice finds itself.
    """
    if not addresses:
        aioice.ice.get_host_addresses = _original
        return
    pinned = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        own = _original(use_ipv4, use_ipv6) if keep_default else []
        return own + [a for a in pinned if a not in own and ((":" in a and use_ipv6) or (":" not in a and use_ipv4))]

    aioice.ice.get_host_addresses = host_addresses


def configure_host_candidates(host: str, pinned: list[str] | None) -> list[str] | None:
    """The server's ICE host addresses: ``--ice-host`` when given; for a loopback listener also
    127.0.0.1 (aioice skips loopback, so a machine with no other interface would offer nothing);
    otherwise aioice's own.  Returns the extra addresses offered, if any."""
    if pinned:
        use_host_addresses(pinned)
        return list(pinned)
    if is_loopback(host):
        extra = ["::1"] if host == "::1" else ["127.0.0.1"]
        use_host_addresses(extra, keep_default=True)
        return extra
    use_host_addresses(None)
    return None


def rtc_configuration(ice_servers: list):
    """aiortc's configuration: STUN/TURN servers as URLs or ``{urls, username, credential}`` dicts."""
    from aiortc import RTCConfiguration, RTCIceServer
    servers = [RTCIceServer(urls=s) if isinstance(s, str) else
               RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
               for s in ice_servers]
    # An explicit empty list: aiortc would otherwise add a public STUN server.
    return RTCConfiguration(iceServers=servers)

"""WebRTC avatar service (to be built on streaming; see the server issue)."""

"""WebRTC avatar service: signalling, media tracks and limits around the streaming engine."""

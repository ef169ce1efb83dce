"""Real-time session engine (to be built on float_rt; see the streaming issue)."""

"""Real-time session engine: one Engine, many Sessions, audio in, paced frames out."""

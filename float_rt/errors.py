class FloatRTError(Exception):
    """A problem with the user's input or files, reported as one clear line (CLI exit code 2)."""


class CheckpointError(FloatRTError):
    pass

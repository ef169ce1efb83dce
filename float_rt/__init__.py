"""FLOAT-RT: the FLOAT talking-avatar model and its offline pipeline."""
import os

# OpenMP threads that wait for work sleep instead of spinning.  Spinning costs nothing on idle
# cores, but when another process holds one of them (a server's media threads, a neighbour) the
# spinning threads and the busy one take turns at every parallel region.  Measured with
# `float-rt bench --config float-512 --busy-core` on a 2-core AMD EPYC: one core busy made a 512
# decode 2.9x and a guided FMT evaluation 2.6x slower with spinning, 1.7x and 1.9x with this;
# idle within 2 % at 512 (the tiny ops of the 128-px `small` model pay 10-20 % idle).  libgomp
# reads it when torch loads, so it is set before any torch import (the commands import torch
# only after this package); a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .config import EMOTIONS, FloatConfig, ModelConfig, SamplingConfig, load_config  # noqa: E402
from .errors import CheckpointError, FloatRTError  # noqa: E402

__all__ = ["EMOTIONS", "FloatConfig", "ModelConfig", "SamplingConfig", "load_config",
           "FloatRTError", "CheckpointError"]
__version__ = "0.1.0"

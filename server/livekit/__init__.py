"""FLOAT-RT as the face of a LiveKit Agents voice agent (extra ``float-rt[livekit]``).

- ``FloatVideoGenerator``: a ``VideoGenerator`` over one live session of a shared engine.
- ``AvatarSession``: the agent side, in-process (``QueueAudioOutput`` + ``AvatarRunner`` on the
  agent's room) or dispatched to ``float-rt livekit-worker`` processes that join the room.
"""
try:
    import livekit.agents  # noqa: F401
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError("the LiveKit integration needs the livekit extra: pip install 'float-rt[livekit]'") from exc

from .avatar import AvatarSession
from .generator import FloatVideoGenerator, GeneratorStats
from .job import AvatarJob
from .worker import AvatarWorker, Capacity

__all__ = ["AvatarSession", "AvatarJob", "AvatarWorker", "Capacity", "FloatVideoGenerator", "GeneratorStats"]

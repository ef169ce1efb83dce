"""Each avatar control (float_rt/controls.py) through each door: the same names everywhere, the
family's support checked with one clear line.  One parametrised test per door, over every control."""
import asyncio

import pytest

from float_rt.errors import FloatRTError
from float_rt.media import load_image

# A non-default value of each control (video_size needs paste_back).
ASKS = {
    "paste_back": {"paste_back": True},
    "video_size": {"paste_back": True, "video_size": (640, 360)},
    "motion_scale": {"motion_scale": 0.5},
    "expression_scale": {"expression_scale": 0.5},
    "pose": {"pose": (10.0, -5.0, 0.0)},
    "pose_mode": {"pose": (10.0, 0.0, 0.0), "pose_mode": "fixed"},
    "blink": {"blink": False},
    "blink_rate": {"blink_rate": 20.0},
    "gaze_camera": {"gaze_camera": True},
    "state": {"state": "listening"},
}
FIXED = {"paste_back", "video_size"}      # chosen at the start of a session


@pytest.fixture(scope="module", params=("float", "ditto"))
def door(request, small_engine, ditto_engine, portrait_png):
    engine = small_engine if request.param == "float" else ditto_engine
    photo = load_image(portrait_png)
    return engine, photo, engine.prepare(photo)


def _expect(engine, ask):
    """Whether the family can express every control in ``ask``."""
    return set(ask) <= set(engine.control_names)


def _check(controls, ask):
    for name, value in ask.items():
        assert getattr(controls, name) == value, name


@pytest.mark.parametrize("name", ASKS)
def test_python_session_options(door, name):
    engine, _, image = door
    ask = ASKS[name]
    if not _expect(engine, ask):
        with pytest.raises(FloatRTError, match=f"the {engine.family} family cannot express"):
            engine.default_options(**ask)
        return
    s = engine.open_session(image, engine.default_options(**ask))
    try:
        _check(s.options.controls, ask)
        change = {k: v for k, v in ask.items() if k not in FIXED}
        if change:                       # and mid-session, keeping the other controls
            s.update(**{k: v for k, v in change.items()})
            _check(s.options.controls, ask)
        else:
            with pytest.raises(FloatRTError, match="when the session starts"):
                s.update(**ask)
    finally:
        s.close()


@pytest.mark.parametrize("name", ASKS)
def test_protocol_offer_and_set(name):
    from server.protocol import ProtocolError, parse_offer, parse_set
    ask = ASKS[name]
    msg = {k: list(v) if isinstance(v, tuple) else v for k, v in ask.items()}
    _check(parse_offer({"sdp": "v=0", **msg}).session["controls"], ask)
    if name in FIXED:
        return
    assert parse_set({"type": "set", **msg}) == ask
    with pytest.raises(ProtocolError):
        parse_set({"type": "set", name: "??"})


@pytest.mark.parametrize("name", ASKS)
def test_pipecat_service_and_update_frame(door, name):
    from server.pipecat import FloatAvatarService
    engine, photo, image = door
    ask = ASKS[name]
    if not _expect(engine, ask):
        with pytest.raises(FloatRTError, match="cannot express"):
            FloatAvatarService(engine, image, photo=photo, **ask)
        return
    svc = FloatAvatarService(engine, image, photo=photo, **ask)
    _check(svc.options.controls, ask)
    if "video_size" in ask:
        assert svc.video_size == ask["video_size"]
    change = {k: v for k, v in ask.items() if k not in FIXED}
    if change:
        plain = FloatAvatarService(engine, image)
        plain.update(**change)                      # what a FloatAvatarUpdateFrame(options=...) does
        _check(plain.options.controls, change)


def test_pipecat_follows_the_user_speaking(family_engine):
    """UserStartedSpeakingFrame: listening; UserStoppedSpeakingFrame: thinking; a reply: speaking."""
    import time

    from pipecat.frames.frames import (TextFrame, TTSStartedFrame, TTSStoppedFrame, UserStartedSpeakingFrame,
                                       UserStoppedSpeakingFrame)
    from pipecat.pipeline.worker import PipelineParams
    from pipecat.processors.frame_processor import FrameDirection
    from pipecat.tests.utils import SleepFrame, run_test

    from server.pipecat import FloatAvatarService
    engine, portrait = family_engine
    seen = {}

    class Recording(FloatAvatarService):
        async def push_frame(self, frame, direction=FrameDirection.DOWNSTREAM):
            if isinstance(frame, TextFrame):
                seen[frame.text] = self.session.options.controls.state
            await super().push_frame(frame, direction)

    def after(text):          # the next frame goes once ``text`` has passed (an event, not a delay)
        deadline = time.monotonic() + 300
        while text not in seen:
            assert time.monotonic() < deadline
            yield SleepFrame(0.05)

    def frames():
        yield UserStartedSpeakingFrame()
        yield TextFrame("user speaks")
        yield from after("user speaks")
        yield UserStoppedSpeakingFrame()
        yield TextFrame("user stopped")
        yield from after("user stopped")
        yield TTSStartedFrame()
        yield TTSStoppedFrame()
        yield TextFrame("reply")

    asyncio.run(run_test(Recording(engine, portrait), frames_to_send=frames(),
                         pipeline_params=PipelineParams(audio_out_sample_rate=24000)))
    assert seen == {"user speaks": "listening", "user stopped": "thinking", "reply": "speaking"}


@pytest.mark.parametrize("name", ASKS)
def test_livekit_generator_and_job(door, name):
    from server.livekit import FloatVideoGenerator
    from server.livekit.job import AvatarJob
    engine, photo, image = door
    ask = ASKS[name]
    msg = {k: list(v) if isinstance(v, tuple) else v for k, v in ask.items()}
    job = AvatarJob("agent", preset="astronaut", options=msg).validate()      # a worker's job takes them
    assert job.options == msg
    if not _expect(engine, ask):
        with pytest.raises(FloatRTError, match="cannot express"):
            engine.default_options(**job.options)
        return
    gen = FloatVideoGenerator(engine, image, engine.default_options(**job.options), photo=photo)
    try:
        _check(gen.session.options.controls, ask)
        if "video_size" in ask:
            assert gen.video_size == ask["video_size"]
        elif "paste_back" in ask:
            assert gen.video_size == (photo.shape[1] // 2 * 2, photo.shape[0] // 2 * 2)
    finally:
        gen.close()


def test_livekit_follows_lk_agent_state(small_engine, small_portrait):
    from livekit.agents.types import ATTRIBUTE_AGENT_STATE

    from server.livekit import FloatVideoGenerator
    from server.livekit.worker import follow_agent_state

    class Room:
        def __init__(self):
            self.handlers, self.remote_participants = {}, {}

        def on(self, event, fn):
            self.handlers[event] = fn

    class Participant:
        identity, attributes = "agent", {}

    gen = FloatVideoGenerator(small_engine, small_portrait)
    try:
        room = Room()
        follow_agent_state(room, "agent", gen)
        for state in ("listening", "thinking", "speaking", "initializing"):
            room.handlers["participant_attributes_changed"]({ATTRIBUTE_AGENT_STATE: state}, Participant())
            assert gen.session.options.controls.state == ("idle" if state == "initializing" else state)
    finally:
        gen.close()

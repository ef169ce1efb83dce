"""Both families on one server: two engines (FLOAT's small config and ditto-tiny), one client each,
at the same time; each gets its avatar's video and its own speech back."""
import asyncio

import numpy as np
import pytest
from helpers import ROOT, make_server

from float_rt.media import load_audio


@pytest.fixture(scope="module")
def two_family_server(small_ckpt, ditto_ckpt):
    s = make_server(small_ckpt, max_sessions=2, also=[f"{ROOT / 'configs' / 'ditto-tiny.yaml'}={ditto_ckpt}"])
    yield s
    s.stop()


def test_one_client_per_family_at_once(two_family_server, client_mod, speech_wav):
    import json

    import websockets
    speech = load_audio(speech_wav)[:48000]

    async def hello():
        async with websockets.connect(two_family_server.url) as ws:
            return json.loads(await ws.recv())

    async def both():
        return await asyncio.gather(
            client_mod.measure(two_family_server.url, speech, emotion="happy", model="small"),
            client_mod.measure(two_family_server.url, speech, emotion="Sad", model="ditto-tiny"))

    h = asyncio.run(hello())
    assert [(m["model"], m["family"]) for m in h["models"]] == [("small", "float"), ("ditto-tiny", "ditto")]
    assert "Contempt" in h["models"][1]["emotions"] and "steps" in h["models"][1]["options"]
    float_run, ditto_run = asyncio.run(both())
    for r, labels in ((float_run, "happy"), (ditto_run, "Sad")):
        assert not r["errors"], r["errors"]
        assert r["frames"] >= 2 and r["shapes"] == [(512, 512, 3)]
        assert r["shown_fraction"] > 0
        assert r["lipsync_ms"], "its speech did not come back with the video"
        assert labels in r["stats"][-1]["emotion"]          # each family's own emotion labels
        print(f"\n{labels}: {r['frames']} frames, {r['shown_fraction']:.0%} of speech frames shown, lip sync "
              f"median {np.median(r['lipsync_ms']):+.0f} ms")


def test_an_option_of_the_other_family_is_refused(two_family_server, client_mod):
    async def offer():
        client = client_mod.AvatarClient(two_family_server.url, None, model="ditto-tiny", nfe=4)
        try:
            await client.connect(timeout=60)
        except Exception:       # noqa: BLE001 - the refusal ends the offer
            pass
        await client.close(bye=False)
        return client.errors

    errors = asyncio.run(offer())
    assert errors and errors[0]["code"] == "bad_option" and "ditto family" in errors[0]["message"]


def test_controls_through_the_server(two_family_server, client_mod, speech_wav):
    """Paste-back at a chosen size in the offer; state and intensity changed with ``set``; a control
    the family cannot express refused with the family named."""
    speech = load_audio(speech_wav)[:24000]

    async def run(model, offer, sets):
        client = client_mod.AvatarClient(two_family_server.url, client_mod.FileAudioTrack(speech), model=model,
                                         on_video=lambda f, t: shapes.add(f.to_ndarray(format="rgb24").shape),
                                         **offer)
        await client.connect(timeout=120)
        replies = []
        for msg in sets:
            client.errors.clear()
            await client.send({"type": "set", **msg})
            await asyncio.sleep(0.5)
            replies.append(list(client.errors))
        deadline = asyncio.get_running_loop().time() + 300
        while not shapes and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        await client.close()
        return replies

    shapes = set()
    replies = asyncio.run(run("small", {"paste_back": True, "video_size": "640x360"},
                              [{"state": "listening"}, {"motion_scale": 0.5}, {"pose": [10, 0, 0]}]))
    assert shapes == {(360, 640, 3)}                       # the whole picture, at the size asked
    assert replies[0] == [] and replies[1] == []
    assert replies[2] and replies[2][0]["code"] == "bad_option" and "float family" in replies[2][0]["message"]
    shapes = set()
    replies = asyncio.run(run("ditto-tiny", {"gaze_camera": True}, [{"pose": [10, 0, 0], "blink_rate": 20}]))
    assert shapes == {(512, 512, 3)} and replies == [[]]

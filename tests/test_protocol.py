"""Signalling message validation, video stamps, metrics text and server config (no network)."""
import base64
import json

import numpy as np
import pytest

from server.config import ServerConfig, load_server_config
from server.metrics import Metrics
from server.protocol import MAX_OFFER_BYTES, MAX_TEXT_BYTES, ProtocolError, parse, parse_offer, parse_set
from server.stamp import draw_stamp, read_stamp

from conftest import ROOT


def code_of(fn, *a):
    with pytest.raises(ProtocolError) as info:
        fn(*a)
    return info.value.code


def test_parse_rejects_bad_messages():
    assert code_of(parse, "{") == "bad_json"
    assert code_of(parse, "3") == "bad_message"
    assert code_of(parse, json.dumps({"type": "x"})) == "unknown_type"
    assert code_of(parse, json.dumps({"type": "set", "x": "y" * MAX_TEXT_BYTES})) == "too_large"
    assert parse(json.dumps({"type": "bye"})) == {"type": "bye"}


def test_parse_answers_hostile_messages_with_their_codes():
    assert code_of(parse, "x" * (2 * 2**20)) == "too_large"                  # 2 MB that is no offer
    assert code_of(parse, "{" + "x" * (2 * 2**20)) == "too_large"
    assert code_of(parse, "x" * (MAX_TEXT_BYTES - 10)) == "bad_json"
    assert code_of(parse, "[" * 100_000 + "]" * 100_000) == "bad_json"      # 100,000 levels
    assert code_of(parse, '{"a":' * 100_000 + "1" + "}" * 100_000) == "bad_json"
    assert code_of(parse, '{"type": "offer", "x": ' + "[" * 5000 + "]" * 5000 + "}") == "bad_json"
    assert code_of(parse, "x" * (MAX_OFFER_BYTES + 1)) == "too_large"


def test_offer_options():
    png = base64.b64encode(b"\x89PNG fake").decode()
    o = parse_offer({"type": "offer", "sdp": "v=0\r\n", "avatar": "data:image/png;base64," + png,
                     "emotion": "Happy", "nfe": 3, "chunk_frames": 10, "a_cfg_scale": 1.5, "stamp": True})
    assert o.image == b"\x89PNG fake" and o.stamp and o.audio_input == "track"
    assert o.session == {"emotion": "Happy", "nfe": 3, "chunk_frames": 10, "a_cfg_scale": 1.5}
    assert parse_offer({"sdp": "v=0", "emotion": "auto"}).session == {"emotion": None}
    for bad in ({"sdp": 3}, {"sdp": "hello"}):
        assert code_of(parse_offer, bad) == "bad_sdp"
    for bad in ({"nfe": 1}, {"nfe": 2.5}, {"nfe": True}, {"chunk_frames": 51}, {"a_cfg_scale": float("nan")},
                {"emotion": 7}, {"steps": 0}, {"seed": -1}, {"audio_input": "carrier pigeon"}, {"pcm_rate": 11025}):
        assert code_of(parse_offer, {"sdp": "v=0", **bad}) == "bad_option"
    assert code_of(parse_offer, {"sdp": "v=0", "avatar": "!!"}) == "bad_image"
    assert code_of(parse_set, {"type": "set"}) == "bad_option"
    assert parse_set({"type": "set", "emotion": "auto", "e_cfg_scale": 2}) == {"emotion": None, "e_cfg_scale": 2.0}
    assert code_of(parse_set, {"type": "set", "sdp": "v=0"}) == "bad_option"     # not a session option


@pytest.mark.parametrize("index", [0, 1, 255, 4097, 65535])
def test_stamp_survives_lossy_video_coding(index):
    import av
    rng = np.random.default_rng(index)
    img = draw_stamp(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8), index)
    codec = av.CodecContext.create("libvpx", "w")
    codec.width = codec.height = 512
    codec.pix_fmt = "yuv420p"
    codec.bit_rate = 300_000
    frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
    packets = codec.encode(frame) + codec.encode(None)
    dec = av.CodecContext.create("libvpx", "r")
    out = [f for p in packets for f in dec.decode(p)]
    assert read_stamp(out[0].to_ndarray(format="rgb24")) == index


def test_metrics_text():
    m = Metrics(sessions_started=3)
    m.errors["busy"] += 2
    text = m.render(active=1, max_sessions=4, latency_ms=[100.0, 200.0, 300.0])
    assert "float_rt_sessions_active 1" in text and "float_rt_sessions_started_total 3" in text
    assert 'float_rt_errors_total{code="busy"} 2' in text
    assert 'float_rt_latency_ms{quantile="0.5"} 200.0' in text
    assert text.count("# TYPE float_rt_errors_total") == 1


def test_server_config():
    cfg = load_server_config(ROOT / "configs" / "server.yaml", port=9000)
    assert cfg.host == "127.0.0.1" and cfg.port == 9000 and cfg.ice_servers == []
    with pytest.raises(ValueError):
        ServerConfig(video_codec="av1")
    with pytest.raises(ValueError, match="even"):
        ServerConfig(video_size=511)
    with pytest.raises(ValueError, match="nope"):
        load_server_config(None, nope=1)


def test_origin_policy_rules():
    from server.policy import OriginPolicy, normalise_origin
    assert normalise_origin("https://Kiosk.Example.com:443/") == "https://kiosk.example.com"
    assert normalise_origin("http://[::1]:8080") == "http://[::1]:8080"
    assert normalise_origin("null") is None and normalise_origin("ftp://x") is None
    own = OriginPolicy([])
    assert own.refuse(None, "a:1", "http") is None                        # native clients
    assert own.refuse("http://a:1", "a:1", "http") is None                # the page's own origin
    assert own.refuse("https://a", "a:443", "https") is None              # default ports
    assert own.refuse("http://a:1", "a:1", "https") and own.refuse("http://b:1", "a:1", "http")
    assert "not a web origin" in own.refuse("null", "a:1", "http")
    extra = OriginPolicy(["https://kiosk.example.com"])
    assert extra.refuse("https://kiosk.example.com", "a:1", "http") is None
    assert OriginPolicy(["*"]).refuse("http://evil.example", "a:1", "http") is None
    with pytest.raises(ValueError, match="allowed origin"):
        OriginPolicy(["kiosk.example.com"])


def test_client_address_through_proxies():
    from server.policy import client_address
    assert client_address("10.0.0.5", "1.2.3.4", []) == "10.0.0.5"                     # no proxy trusted
    assert client_address("10.0.0.5", "1.2.3.4", ["10.0.0.0/8"]) == "1.2.3.4"
    assert client_address("10.0.0.5", "9.9.9.9, 1.2.3.4, 10.0.0.7", ["10.0.0.0/8"]) == "1.2.3.4"
    assert client_address("8.8.8.8", "1.2.3.4", ["10.0.0.0/8"]) == "8.8.8.8"           # spoofed header


def test_address_limits_count_and_forget():
    from server.policy import AddressLimits, Limits
    now = [0.0]
    lim = AddressLimits(Limits(max_connections=1, max_sessions=1, handshakes_per_minute=2), clock=lambda: now[0])
    assert lim.refuse_rate("a") is None and lim.refuse_connection("a") is None
    assert "max_connections_per_ip" in lim.refuse_connection("a")
    assert lim.refuse_connection("b") is None
    assert lim.refuse_rate("a") is None and "handshakes_per_minute" in lim.refuse_rate("a")
    now[0] += 60.0
    assert lim.refuse_rate("a") is None                                   # a minute later
    assert lim.refuse_session("a") is None and "max_sessions_per_ip" in lim.refuse_session("a")
    lim.session_ended("a")
    lim.closed("a")
    assert lim.refuse_session("a") is None and lim.refuse_connection("a") is None
    assert dict(lim.connections) == {"a": 1, "b": 1}


def test_video_track_sends_i420_with_the_frames_colours_and_stamp():
    import asyncio

    import cv2
    import numpy as np

    from server.stamp import read_stamp
    from streaming.frames import FrameShaper
    from server.tracks import AvatarVideoTrack
    from streaming.session import Frame

    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur((rng.random((128, 128, 3)) * 255).astype(np.uint8), (15, 15), 4)
    track = AvatarVideoTrack(FrameShaper(size=256), fps=25, stamp=True)
    for i in (41, 42):
        track.push(Frame(pts=i, index=i, image=img, audio=np.zeros(640, np.float32), motion=None,
                         features=None, arrived=0.0, ready=0.0))

    async def take():
        return [await track.recv() for _ in range(2)]
    frames = asyncio.run(take())
    assert [f.format.name for f in frames] == ["yuv420p", "yuv420p"] and frames[0].width == 256
    assert [f.pts for f in frames] == [0, 3600]
    back = frames[1].to_ndarray(format="rgb24")
    assert read_stamp(back) == 42
    want = cv2.resize(img, (256, 256), interpolation=cv2.INTER_LINEAR)
    assert np.abs(back[:200].astype(int) - want[:200]).mean() < 3      # swscale reads our I420 as BT.601


def test_worker_balancing_rule():
    from server.workers import Load, should_accept, split_sessions
    assert split_sessions(5, 2) == [3, 2] and split_sessions(4, 4) == [1, 1, 1, 1]
    idle, one, full, dead = Load(True, 0, 0, 2), Load(True, 1, 1, 2), Load(True, 2, 2, 2), Load(False, 0, 0, 0)
    assert should_accept(0, [idle, idle]) and should_accept(1, [idle, idle])        # ties: both listen
    assert not should_accept(1, [idle, one]) and should_accept(0, [idle, one])      # the least loaded only
    assert not should_accept(0, [full, one]) and should_accept(1, [full, one])      # a full one steps aside
    assert should_accept(0, [full, full]) and should_accept(1, [full, full])        # all full: answer `busy`
    assert should_accept(1, [dead, one]) and should_accept(0, [dead, dead])         # a dead one is no rival
    assert not should_accept(0, [Load(True, 2, 1, 2), Load(True, 1, 1, 2)])         # open websockets count


def test_each_worker_gets_its_share_of_the_sessions():
    from server.config import ServerConfig
    from server.workers import Supervisor
    sup = Supervisor(ServerConfig(port=0, max_sessions=3, workers=2), 2)     # shares below the worker count
    try:
        assert [sup.worker_config(i).max_sessions for i in range(2)] == [2, 1]
        assert {sup.worker_config(i).workers for i in range(2)} == {1}
    finally:
        sup.sock.close()


def test_worker_board_shares_loads_and_counters():
    import multiprocessing
    from server.metrics import Metrics
    from server.workers import Board, Load
    board = Board(2, multiprocessing.get_context("spawn"))
    board.set_load(1, Load(True, 3, 2, 4))
    assert board.loads() == [Load(False, 0, 0, 0), Load(True, 3, 2, 4)]
    a, b = Metrics(sessions_started=2), Metrics(sessions_started=5, frames_sent=7)
    a.errors["busy"] += 1
    b.errors["busy"] += 2
    b.refused["origin"] += 1
    board.publish(0, {"metrics": a.snapshot(), "latencies": [1.0] * 10_000})      # too big: samples dropped
    board.publish(1, {"metrics": b.snapshot(), "latencies": [2.5]})
    assert board.read(0)["latencies"] == [] and board.read(1)["latencies"] == [2.5]
    total = Metrics.total([board.read(0)["metrics"], board.read(1)["metrics"]])
    assert total.sessions_started == 7 and total.frames_sent == 7
    assert total.errors == {"busy": 3} and total.refused == {"origin": 1}
    board.clear(1)
    assert board.read(1) is None and not board.loads()[1].alive


def test_message_budget_passes_bursts_refuses_floods_and_forgives_calm():
    from server.budget import CALM_S, GRACE_MESSAGES, MessageBudget
    b = MessageBudget(messages_per_s=10, bytes_per_s=1000)
    assert all(b.admit(10, 0.0) is None for _ in range(20))        # 2 s of burst at once
    broke = b.admit(10, 0.0)
    assert "10 messages/s (max_messages_per_s)" in broke
    assert b.warn(0.0) and not b.warn(0.0)                          # told once
    assert not b.exhausted(0.5)
    for _ in range(GRACE_MESSAGES + 5):                             # 5 of them are within the refill
        b.admit(10, 0.5)
    assert b.exhausted(0.5)                                         # goes on flooding: closed
    calm = MessageBudget(messages_per_s=10, bytes_per_s=1000)
    for _ in range(21):
        calm.admit(1, 0.0)
    assert calm.warn(0.0)
    assert calm.admit(1, 0.0) is not None
    assert all(calm.admit(1, 1.0) is None for _ in range(10))      # refilled at 10/s
    assert calm.admit(1, 1.0) is not None
    assert calm.admit(1, 1.0 + CALM_S + 1) is None                  # within budget again: forgiven
    for _ in range(20):
        calm.admit(1, 1.0 + CALM_S + 1)
    assert calm.warn(1.0 + CALM_S + 1)                              # a new warning, not a close
    big = MessageBudget(messages_per_s=10, bytes_per_s=1000, min_bytes_burst=50_000)
    assert big.admit(40_000, 0.0) is None and "bytes/s (max_bytes_per_s)" in big.admit(20_000, 0.0)


def test_host_policy_and_option_limits():
    from server.policy import HostPolicy, host_name, option_limit
    loop = HostPolicy(loopback=True, allowed=["kiosk.example.com"])
    for ok in ("127.0.0.1:8080", "localhost", "LOCALHOST:1", "[::1]:8080", "127.1.2.3", "app.localhost:8080",
               "kiosk.example.com:8443"):
        assert loop.refuse(ok) is None, ok
    for bad in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example", None, "", "[bad"):
        assert "--allowed-host" in loop.refuse(bad), bad
    assert HostPolicy(loopback=False).refuse("evil.example") is None     # a token guards public servers
    assert host_name("Example.COM.:80") == "example.com"
    assert option_limit("nfe", 4, [2, 10]) is None and option_limit("nfe", None, [2, 10]) is None
    assert option_limit("nfe", 50, [2, 10]) == "nfe 50 is beyond this server's limit: allowed 2..10 " \
                                              "(nfe_range in the server config)"


def test_upload_header_is_checked_before_decoding():
    import io

    from PIL import Image

    from server.protocol import ProtocolError as Refused
    from server.upload import check_header, decode_upload

    def encoded(fmt, size):
        buf = io.BytesIO()
        Image.new("RGB", size, (200, 10, 10)).save(buf, fmt)
        return buf.getvalue()

    for fmt, name in (("PNG", "PNG"), ("JPEG", "JPEG"), ("WEBP", "WebP")):
        assert check_header(encoded(fmt, (40, 30)), 10_000) == (name, 40, 30)
    assert decode_upload(encoded("PNG", (40, 30)), 10_000).shape == (30, 40, 3)
    with pytest.raises(Refused) as info:
        check_header(encoded("PNG", (200, 100)), 10_000)
    assert info.value.code == "image_too_large" and "200x100" in info.value.message
    for fmt in ("TIFF", "PPM", "BMP", "GIF"):
        with pytest.raises(Refused) as info:
            check_header(encoded(fmt, (8, 8)), 10_000)
        assert info.value.code == "bad_image", fmt
    with pytest.raises(Refused) as info:
        check_header(b"\x89PNG\r\n\x1a\n garbage", 10_000)
    assert info.value.code == "bad_image"


def test_a_certificates_names_are_host_names_of_the_server(tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from server.startup import certificate_names
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cn.example")])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)))
    plain = builder.sign(key, hashes.SHA256())
    with_san = builder.add_extension(x509.SubjectAlternativeName(
        [x509.DNSName("kiosk.example"), x509.DNSName("avatar.example")]), critical=False).sign(key, hashes.SHA256())
    for cert, names in ((with_san, ["kiosk.example", "avatar.example"]), (plain, ["cn.example"])):
        path = tmp_path / "cert.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        assert certificate_names(str(path)) == names
    assert certificate_names(None) == [] and certificate_names(str(tmp_path / "missing.pem")) == []

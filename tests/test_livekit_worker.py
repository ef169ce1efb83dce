"""`float-rt livekit-worker` against a stand-in of the LiveKit server's agent protocol (loopback).

The stand-in speaks the protocol's protobuf messages over the `/agent` websocket: it registers
the worker, offers it avatar jobs and reads its answers and load reports.  Joining a room needs
a real LiveKit server (its SFU), which cannot run here: jobs are offered, not assigned.
"""
import asyncio
import json
import os
import socket
import sys

import websockets
from livekit.protocol import agent, models

from conftest import ROOT, SMALL
from server.livekit import AvatarJob


def test_worker_registers_accepts_reports_load_and_refuses_when_full(small_ckpt):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seen: dict = {"updates": []}

    def job(job_id: str, metadata: str) -> agent.ServerMessage:
        return agent.ServerMessage(availability=agent.AvailabilityRequest(job=agent.Job(
            id=job_id, agent_name="float-rt-avatar", metadata=metadata, type=agent.JobType.JT_ROOM,
            room=models.Room(name="room-1", sid="RM_1"))))

    async def answer(ws, job_id: str) -> agent.AvailabilityResponse:
        while True:
            msg = agent.WorkerMessage()
            msg.ParseFromString(await asyncio.wait_for(ws.recv(), 60))
            if msg.HasField("update_worker"):
                seen["updates"].append(msg.update_worker)
            if msg.HasField("availability") and msg.availability.job_id == job_id:
                return msg.availability

    async def full(ws) -> agent.UpdateWorkerStatus:
        while True:
            msg = agent.WorkerMessage()
            msg.ParseFromString(await asyncio.wait_for(ws.recv(), 30))
            if msg.HasField("update_worker") and msg.update_worker.status == agent.WorkerStatus.WS_FULL:
                return msg.update_worker

    async def livekit(ws):
        assert ws.request.path.startswith("/agent")
        assert ws.request.headers["Authorization"].startswith("Bearer ")
        msg = agent.WorkerMessage()
        msg.ParseFromString(await ws.recv())
        seen["register"] = msg.register
        await ws.send(agent.ServerMessage(register=agent.RegisterWorkerResponse(
            worker_id="W_test", server_info=models.ServerInfo(version="test"))).SerializeToString())
        good = AvatarJob("agent-AJ_0", "avatar-1", "Ava", preset="astronaut", options={"emotion": "happy"})
        await ws.send(job("AJ_bad", json.dumps({"v": 1, "agent_identity": "x", "preset": "nobody"})).SerializeToString())
        seen["bad"] = await answer(ws, "AJ_bad")
        await ws.send(job("AJ_1", good.to_json()).SerializeToString())
        seen["first"] = await answer(ws, "AJ_1")
        seen["full"] = await full(ws)                # its load report: one session of one
        await ws.send(job("AJ_2", good.to_json()).SerializeToString())
        seen["second"] = await answer(ws, "AJ_2")
        seen["done"].set()
        await ws.wait_closed()

    async def main():
        seen["done"] = asyncio.Event()
        async with websockets.serve(livekit, "127.0.0.1", port):
            env = dict(os.environ, LIVEKIT_URL=f"ws://127.0.0.1:{port}", LIVEKIT_API_KEY="devkey",
                       LIVEKIT_API_SECRET="secret-secret-secret-secret-secret")
            worker = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "server.cli", "livekit-worker", "--checkpoints", str(small_ckpt),
                "--config", str(SMALL), "--max-sessions", "1", cwd=ROOT, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            try:
                done = asyncio.ensure_future(seen["done"].wait())
                exited = asyncio.ensure_future(worker.wait())
                await asyncio.wait({done, exited}, timeout=120, return_when=asyncio.FIRST_COMPLETED)
            finally:
                worker.terminate()
                out = (await asyncio.wait_for(worker.communicate(), 60))[0].decode()
        return out

    out = asyncio.run(main())
    assert "float-rt livekit-worker: agent name 'float-rt-avatar', 1 sessions" in out, out[-2000:]
    assert seen["register"].agent_name == "float-rt-avatar"
    assert not seen["bad"].available and seen["bad"].terminate          # invalid metadata: refused for good
    first = seen["first"]
    assert first.available and first.participant_identity == "avatar-1" and first.participant_name == "Ava"
    assert first.participant_attributes["lk.publish_on_behalf"] == "agent-AJ_0"
    assert seen["full"].load == 1.0
    assert not seen["second"].available and not seen["second"].terminate   # full: another worker may take it

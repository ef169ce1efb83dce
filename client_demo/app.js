// FLOAT-RT demo page: microphone -> WebRTC -> avatar video.  No build step.
// Signalling protocol: server/PROTOCOL.md.  No STUN/TURN servers: the server
// offers host candidates only (configure ice_servers on both sides for the internet).
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = { ws: null, pc: null, mic: null, timer: null, lastFrames: 0, lastTime: 0 };
// Read by tests (and handy in the console).
window.avatarStats = { framesDecoded: 0, connected: false, errors: [], serverStats: null };

function wsUrl() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const token = params.get("token");
  return `${proto}//${location.host}/ws` + (token ? `?token=${encodeURIComponent(token)}` : "");
}

function showError(text) {
  $("error").textContent = text;
  window.avatarStats.errors.push(text);
}

function connectSignalling() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl());
    ws.onmessage = (ev) => onMessage(JSON.parse(ev.data), resolve);
    ws.onerror = () => reject(new Error("cannot reach the server"));
    ws.onclose = (ev) => { if (state.ws === ws) { setState(`closed (${ev.code})`); stop(false); } };
    state.ws = ws;
  });
}

let answerWaiter = null;
function onMessage(msg, onHello) {
  if (msg.type === "hello") {
    $("notice").style.display = msg.demo_weights ? "block" : "none";
    fillSelect($("preset"), msg.presets);
    fillSelect($("emotion"), msg.emotions);
    $("s-model").textContent = msg.family ? `${msg.model} (${msg.family} family)` : msg.model;
    onHello(msg);
  } else if (msg.type === "answer" && answerWaiter) {
    answerWaiter.resolve(msg);
  } else if (msg.type === "error") {
    showError(`${msg.code}: ${msg.message}`);
    if (answerWaiter) answerWaiter.reject(new Error(msg.message));
  } else if (msg.type === "stats") {
    window.avatarStats.serverStats = msg;
    const f = (x) => (x == null ? "-" : `${Math.round(x)} ms`);
    $("s-latency").textContent = `${f(msg.latency_p50_ms)} / ${f(msg.latency_p95_ms)}`;
    $("s-drops").textContent = `${msg.dropped} / ${msg.duplicated}`;
    const top = Object.entries(msg.emotion || {}).sort((a, b) => b[1] - a[1])[0];
    if (top) $("s-emotion").textContent = `${top[0]} (${top[1].toFixed(2)})`;
  }
}

function fillSelect(sel, values) {
  if (sel.options.length) return;
  for (const v of values) sel.add(new Option(v, v));
}

function setState(text) { $("s-state").textContent = text; }

async function readUpload() {
  const file = $("upload").files[0];
  if (!file) return null;
  if (file.size > 10 * 1024 * 1024) throw new Error("the image is over 10 MB");
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);  // data: URL, accepted by the server
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

function waitIceGathering(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", check); resolve(); } };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(resolve, 3000);  // host candidates only: gathering is quick
  });
}

async function start() {
  $("error").textContent = "";
  $("start").disabled = true;
  try {
    setState("connecting");
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) await connectSignalling();
    state.mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
    const pc = new RTCPeerConnection({ iceServers: [] });
    state.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTrack(state.mic.getAudioTracks()[0], state.mic);
    pc.ontrack = (ev) => {
      if (ev.track.kind === "video") {
        $("video").srcObject = ev.streams[0] || new MediaStream([ev.track]);
      } else {
        const v = $("video");
        const stream = v.srcObject || new MediaStream();
        stream.addTrack(ev.track);
        v.srcObject = stream;
      }
    };
    pc.onconnectionstatechange = () => {
      setState(pc.connectionState);
      window.avatarStats.connected = pc.connectionState === "connected";
    };
    await pc.setLocalDescription(await pc.createOffer());
    await waitIceGathering(pc);
    const offer = { type: "offer", sdp: pc.localDescription.sdp, no_crop: $("nocrop").checked };
    const upload = await readUpload();
    if (upload) offer.avatar = upload; else offer.preset = $("preset").value;
    offer.emotion = $("emotion").value;
    if ($("pasteback").checked) offer.paste_back = true;
    offer.state = $("state").value;
    offer.motion_scale = Number($("motion").value);
    const answer = await new Promise((resolve, reject) => {
      answerWaiter = { resolve, reject };
      state.ws.send(JSON.stringify(offer));
    });
    answerWaiter = null;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    $("stop").disabled = false;
    $("interrupt").disabled = false;
    state.timer = setInterval(pollStats, 1000);
  } catch (err) {
    showError(err.message || String(err));
    stop(true);
  }
}

async function pollStats() {
  if (!state.pc) return;
  const report = await state.pc.getStats();
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      const now = s.timestamp;
      window.avatarStats.framesDecoded = s.framesDecoded || 0;
      $("s-frames").textContent = s.framesDecoded;
      if (state.lastTime) {
        const fps = (s.framesDecoded - state.lastFrames) / ((now - state.lastTime) / 1000);
        $("s-fps").textContent = fps.toFixed(1);
      }
      state.lastFrames = s.framesDecoded; state.lastTime = now;
      if (s.jitterBufferEmittedCount) {
        $("s-jitter").textContent = `${Math.round(1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount)} ms`;
      }
    } else if (s.type === "candidate-pair" && s.state === "succeeded" && s.currentRoundTripTime != null) {
      $("s-rtt").textContent = `${Math.round(s.currentRoundTripTime * 1000)} ms`;
    }
  });
}

function stop(sendBye) {
  clearInterval(state.timer);
  if (sendBye && state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify({ type: "bye" }));
  if (state.pc) state.pc.close();
  if (state.mic) state.mic.getTracks().forEach((t) => t.stop());
  state.pc = null; state.mic = null;
  if (sendBye) state.ws = null;
  $("start").disabled = false; $("stop").disabled = true; $("interrupt").disabled = true;
  window.avatarStats.connected = false;
}

$("start").onclick = start;
$("stop").onclick = () => { stop(true); setState("stopped"); };
$("interrupt").onclick = () => state.ws && state.ws.send(JSON.stringify({ type: "interrupt" }));
function sendSet(fields) {
  if (state.pc && state.ws) state.ws.send(JSON.stringify({ type: "set", ...fields }));
}
$("emotion").onchange = () => sendSet({ emotion: $("emotion").value });
$("state").onchange = () => sendSet({ state: $("state").value });
$("motion").onchange = () => sendSet({ motion_scale: Number($("motion").value) });

connectSignalling().then(() => { if (params.get("autostart")) start(); })
  .catch((err) => showError(err.message));

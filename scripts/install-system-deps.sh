#!/usr/bin/env bash
# Debian packages the tests and the demo use: espeak-ng makes real test speech, Chromium runs the
# browser test, iproute2/util-linux give `ip`/`unshare` for the private network namespace, and a C
# compiler (gcc, libc6-dev) builds the compiled Winograd transforms (float_rt/native.py; without one
# the PyTorch path runs, and the tests that check the compiled one fail).
#
# Opt-in (the tests do not need it): --portaudio, or FLOAT_RT_PORTAUDIO=1, also installs PortAudio
# (libportaudio2), which a microphone and speaker on this machine need: the console mode of
# examples/livekit_agent.py, and client_demo/mic_client.py through sounddevice.
set -euo pipefail
portaudio="${FLOAT_RT_PORTAUDIO:-0}"
for arg in "$@"; do
  case "$arg" in
    --portaudio) portaudio=1 ;;
    -h|--help) echo "usage: $0 [--portaudio]   (installs espeak-ng, chromium, iproute2, util-linux, gcc; PortAudio on request)"; exit 0 ;;
    *) echo "error: unknown option $arg (the only option is --portaudio)" >&2; exit 2 ;;
  esac
done
need=()
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
[ -e /usr/include/stdio.h ] || need+=(libc6-dev)
if [ "$portaudio" = 1 ]; then
  ldconfig_bin="$(command -v ldconfig || echo /sbin/ldconfig)"
  "$ldconfig_bin" -p 2>/dev/null | grep -q 'libportaudio\.so\.2' || need+=(libportaudio2)
fi
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi

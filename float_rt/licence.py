"""What the published weights are licensed as, and whether the user has accepted it.

Kept apart from the downloader (and free of heavy imports) so that ``float-rt download`` can
refuse at once, before it loads anything.
"""
from __future__ import annotations

import os

ACCEPT_ENV = "FLOAT_RT_ACCEPT_LICENSE"

LICENSE = """FLOAT's weights (float.pth) are (c) DeepBrain AI and licensed CC BY-NC-ND 4.0:
  non-commercial use only, no derivatives - https://creativecommons.org/licenses/by-nc-nd/4.0/
The two wav2vec2 models are Apache-2.0 (facebook/wav2vec2-base-960h,
  r-f/wav2vec-english-speech-emotion-recognition)."""


def accepted(flag: bool) -> bool:
    return flag or os.environ.get(ACCEPT_ENV, "").strip().lower() in ("1", "true", "yes")

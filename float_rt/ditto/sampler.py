"""One LMDM window: classifier-free guided DDIM from x_T to the clean motion window."""
from __future__ import annotations

import torch

from .ddim import DDIMScheduler
from .lmdm import AudioContext, MotionDecoder


def guided_prediction(model: MotionDecoder, x: torch.Tensor, cond_frame: torch.Tensor, audio: AudioContext,
                      t: torch.Tensor, weight: float, batched: bool = True) -> torch.Tensor:
    """``unc + (cond - unc) * weight``.

    The published sampler runs the two predictions as separate forwards, unconditional first
    (``batched=False``); by default they run as one forward of twice the batch, which computes the
    same rows (within float rounding: the products are blocked differently) in about half the
    calls and with weights read once.
    """
    if not batched:
        unc = model(x, cond_frame, model.null_context(x.shape[0]), t)
        cond = model(x, cond_frame, audio, t)
        return unc + (cond - unc) * weight
    b = x.shape[0]
    null = model.null_context(b)
    both = AudioContext(torch.cat([null.tokens.to(audio.tokens.dtype), audio.tokens]),
                        torch.cat([null.pooled.to(audio.pooled.dtype), audio.pooled]))
    unc, cond = model(torch.cat([x, x]), torch.cat([cond_frame, cond_frame]), both, torch.cat([t, t])).split(b)
    return unc + (cond - unc) * weight


@torch.no_grad()
def sample_window(model: MotionDecoder, scheduler: DDIMScheduler, cond_frame: torch.Tensor, cond: torch.Tensor,
                  x_T: torch.Tensor, step_noises: torch.Tensor) -> torch.Tensor:
    """(B, 265) conditioning frames, (B, L, 1103) conditions, (B, L, 265) start noises,
    (S-1, L, 265) or (S-1, B, L, 265) step noises -> (B, L, 265) motion windows."""
    audio = model.audio_context(cond)   # fixed for the whole window
    x = x_T
    for k in range(len(scheduler.time_pairs)):
        t = scheduler.timestep(k, x.shape[0], x.device)
        x_start = guided_prediction(model, x, cond_frame, audio, t, scheduler.options.guidance_weight)
        noise = None
        if k < scheduler.num_noises:   # (S-1, L, D) shared by the batch, or (S-1, B, L, D) one per row
            noise = step_noises[k] if step_noises.dim() == 4 else step_noises[k].unsqueeze(0)
        x = scheduler.step(x, x_start, k, noise)
    return x

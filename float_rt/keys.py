"""Name tables between the published checkpoint layouts and this package's modules.

``float_keys`` lists every tensor of the official ``float.pth`` with its shape and
the parameter of ``FloatModel`` it fills (None: stored in the checkpoint but not
used at inference).  ``hf_keys`` does the same for the two transformers folders.
"""
from __future__ import annotations

from dataclasses import dataclass

from .model import FloatModel


@dataclass(frozen=True)
class KeyEntry:
    official: str
    shape: tuple[int, ...]         # shape in the published file
    ours: str | None               # parameter name in FloatModel (None: unused)
    optional: bool = False         # may be absent from a file (training-only tensors)


def float_keys(model: FloatModel) -> list[KeyEntry]:
    out: list[KeyEntry] = []

    def add(official: str, ours: str | None, shape: tuple[int, ...] | None = None):
        if shape is None:
            shape = tuple(model.get_parameter(ours).shape)
        out.append(KeyEntry(official, tuple(shape), ours))

    def modulated(prefix: str, ours: str):
        # The official modulated-conv weight carries a leading batch axis of 1.
        add(f"{prefix}.weight", f"{ours}.weight", (1, *model.get_parameter(f"{ours}.weight").shape))
        add(f"{prefix}.modulation.weight", f"{ours}.modulation.weight")
        add(f"{prefix}.modulation.bias", f"{ours}.modulation.bias")

    me, md = "motion_autoencoder.enc", "motion_autoencoder.dec"
    enc = model.motion.encoder
    add(f"{me}.net_app.convs.0.0.weight", "motion.encoder.stem.conv.weight")
    add(f"{me}.net_app.convs.0.1.bias", "motion.encoder.stem.act_bias")
    for i in range(len(enc.blocks)):
        o, b = f"{me}.net_app.convs.{i + 1}", f"motion.encoder.blocks.{i}"
        add(f"{o}.conv1.0.weight", f"{b}.conv1.conv.weight")
        add(f"{o}.conv1.1.bias", f"{b}.conv1.act_bias")
        add(f"{o}.conv2.1.weight", f"{b}.conv2.conv.weight")
        add(f"{o}.conv2.2.bias", f"{b}.conv2.act_bias")
        add(f"{o}.skip.1.weight", f"{b}.skip.weight")
    add(f"{me}.net_app.convs.{len(enc.blocks) + 1}.weight", "motion.encoder.head.weight")
    for j in range(len(enc.motion_fc)):
        add(f"{me}.fc.{j}.weight", f"motion.encoder.motion_fc.{j}.weight")
        add(f"{me}.fc.{j}.bias", f"motion.encoder.motion_fc.{j}.bias")

    dec = model.motion.decoder
    add(f"{md}.direction.weight", "motion.direction.weight")
    add(f"{md}.input.input", "motion.decoder.const")

    def styled(official: str, ours: str):
        modulated(f"{official}.conv", f"{ours}.conv")
        add(f"{official}.noise.weight", f"{ours}.noise_weight")
        add(f"{official}.activate.bias", f"{ours}.act_bias")

    styled(f"{md}.conv1", "motion.decoder.first")
    c4 = model.cfg.width(4)
    # The published decoder has an initial RGB head that inference never uses.
    add(f"{md}.to_rgb1.bias", None, (1, 3, 1, 1))
    add(f"{md}.to_rgb1.conv.0.weight", None, (3, c4, 1, 1))
    add(f"{md}.to_rgb1.conv.1.bias", None, (1, 3, 1, 1))
    for j in range(len(dec.convs)):
        styled(f"{md}.convs.{2 * j}", f"motion.decoder.up_convs.{j}")
        styled(f"{md}.convs.{2 * j + 1}", f"motion.decoder.convs.{j}")
    for j in range(len(dec.to_rgbs)):
        add(f"{md}.to_rgbs.{j}.bias", f"motion.decoder.to_rgbs.{j}.bias")
        add(f"{md}.to_rgbs.{j}.conv.0.weight", f"motion.decoder.to_rgbs.{j}.weight")
        add(f"{md}.to_rgbs.{j}.conv.1.bias", f"motion.decoder.to_rgbs.{j}.act_bias")
    for j in range(len(dec.to_flows)):
        add(f"{md}.to_flows.{j}.bias", f"motion.decoder.to_flows.{j}.bias")
        modulated(f"{md}.to_flows.{j}.conv", f"motion.decoder.to_flows.{j}.conv")

    for part, ours in (("0", "proj"), ("1", "norm")):
        for p in ("weight", "bias"):
            add(f"audio_encoder.audio_projection.{part}.{p}", f"audio.{ours}.{p}")

    add("fmt.pos_embed", "fmt.pos_embed")
    linears = [("x_embedder.proj", "x_proj"), ("t_embedder.mlp.0", "t_fc1"), ("t_embedder.mlp.2", "t_fc2"),
               ("c_embedder", "cond_proj")]
    for i in range(len(model.fmt.blocks)):
        linears += [(f"blocks.{i}.attn.qkv", f"blocks.{i}.qkv"), (f"blocks.{i}.attn.proj", f"blocks.{i}.attn_out"),
                    (f"blocks.{i}.mlp.fc1", f"blocks.{i}.fc1"), (f"blocks.{i}.mlp.fc2", f"blocks.{i}.fc2"),
                    (f"blocks.{i}.adaLN_modulation.1", f"blocks.{i}.ada")]
    linears += [("decoder.adaLN_modulation.1", "final_ada"), ("decoder.linear", "out")]
    for official, ours in linears:
        add(f"fmt.{official}.weight", f"fmt.{ours}.weight")
        add(f"fmt.{official}.bias", f"fmt.{ours}.bias")
    return out


# Weight-norm tensors: the legacy names of published folders and torch's parametrization names.
_WEIGHT_NORM = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
_TRAINING_ONLY = ("masked_spec_embed",)


def legacy_name(name: str) -> str:
    for new, old in _WEIGHT_NORM.items():
        if name.endswith(new):
            return name[: -len(new)] + old
    return name


def hf_keys(model: FloatModel, which: str) -> list[KeyEntry]:
    """Entries of the audio ('audio') or emotion ('emotion') transformers folder, legacy names."""
    module = model.audio if which == "audio" else model.emotion
    out = []
    for name, tensor in module.wav2vec2.state_dict().items():
        out.append(KeyEntry(f"wav2vec2.{legacy_name(name)}", tuple(tensor.shape), f"{which}.wav2vec2.{name}",
                            optional=name in _TRAINING_ONLY))
    if which == "emotion":
        for ours, official in (("dense", "classifier.dense"), ("out_proj", "classifier.out_proj")):
            for p in ("weight", "bias"):
                out.append(KeyEntry(f"{official}.{p}", tuple(module.get_parameter(f"{ours}.{p}").shape),
                                    f"emotion.{ours}.{p}"))
    return out


def alternative_names(official: str) -> list[str]:
    """Names under which a tensor may be stored: legacy and parametrization weight-norm names."""
    names = [official]
    for new, old in _WEIGHT_NORM.items():
        if official.endswith(old):
            names.append(official[: -len(old)] + new)
    return names

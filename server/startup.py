"""What `float-rt serve` settles before any model loads: exposure and token, TLS, the weights.

Nothing here imports torch, so a refusal (no token on a public address, an unreadable
certificate, a wrong checkpoint folder) is one line within a moment of the command starting.
"""
from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

from float_rt.cli import checkpoints_arg, load_config_arg
from float_rt.config import load_config
from float_rt.errors import FloatRTError
from float_rt.family import family_of
from float_rt.resources import cache_dir, config_path

from .config import ServerConfig
from .policy import is_loopback

log = logging.getLogger(__name__)

DEMO_CONFIG = "small"   # FLOAT's; each family names its own (``Family.demo_config``)


def demo_config(cfg: ServerConfig) -> str:
    """The small config ``--demo`` serves: that of the family ``--config`` names."""
    return family_of(load_config_arg(cfg.config)).demo_config


def split_also(entry: str) -> tuple[str, str | None]:
    """``--also CONFIG[=DIR]`` -> (config, checkpoints or None)."""
    config, _, folder = str(entry).partition("=")
    return config, folder or None


def also_models(cfg: ServerConfig) -> list[ServerConfig]:
    """The ``--also`` models as configs of their own (the server's other fields shared)."""
    import dataclasses
    out = []
    for entry in cfg.also:
        config, folder = split_also(entry)
        out.append(dataclasses.replace(cfg, config=config, checkpoints=folder, also=[]))
    return out


def ensure_demo_weights(folder: Path | None = None, config: str = DEMO_CONFIG) -> Path:
    """Recipe weights of a small config, written once into the cache."""
    model_cfg = load_config(config_path(config))
    folder = folder or cache_dir() / f"demo-{config}"
    if not (folder / "RECIPE_WEIGHTS.txt").is_file():
        print(f"writing demo (recipe) weights of the {config} config to {folder} (first start only)")
        family_of(model_cfg).write_demo_weights(model_cfg, folder)
    return folder


TOKEN_ENV = "FLOAT_RT_TOKEN"


def resolve_token(cfg: ServerConfig) -> str | None:
    """--token, else --token-file, else $FLOAT_RT_TOKEN (the last two keep it out of `ps`)."""
    if cfg.token:
        return cfg.token
    if cfg.token_file:
        try:
            token = Path(cfg.token_file).read_text().strip()
        except OSError as exc:
            raise FloatRTError(f"cannot read the token file: {exc}") from exc
        if not token:
            raise FloatRTError(f"the token file {cfg.token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def check_exposure(cfg: ServerConfig) -> None:
    """A server reachable from other machines must ask for a token, unless told otherwise."""
    cfg.token = resolve_token(cfg)
    if is_loopback(cfg.host) or cfg.token:
        return
    if not cfg.insecure_no_token:
        raise FloatRTError(
            f"refusing to serve {cfg.host} without a token: anyone who reaches it could use this machine's GPU\n"
            f"set one with --token-file FILE or {TOKEN_ENV}=... (or --token T, visible in `ps`);\n"
            "clients then add ?token=... to the page's address. --insecure-no-token serves it open anyway")
    log.warning("SERVING %s WITH NO TOKEN (--insecure-no-token): anyone who reaches this port can start "
                "avatar sessions", cfg.host)


def check_weights(cfg: ServerConfig) -> Path | None:
    """The model config (its family must run live) and the checkpoint folder, by names alone;
    returns the folder (None for --demo: its weights are written later, by ``prepare``)."""
    model_cfg = load_config_arg(demo_config(cfg) if cfg.demo else cfg.config)
    if cfg.demo:
        return None
    try:
        return checkpoints_arg(cfg.checkpoints, family_of(model_cfg))
    except FloatRTError as exc:
        if cfg.checkpoints:
            raise
        raise FloatRTError(f"{exc}\nOr serve the embedded demo weights: float-rt serve --demo") from None


def refuse_early(cfg: ServerConfig) -> Path | None:
    """Every refusal, in a moment and before the port or the model: exposure, TLS, the weights'
    folder (returned, None for --demo)."""
    check_exposure(cfg)
    tls_context(cfg)
    for other in also_models(cfg):
        check_weights(other)
    return check_weights(cfg)


def prepare(cfg: ServerConfig) -> None:
    """Everything that can refuse to start, before any model loads; then the weights settled
    (demo weights written, the downloaded folder when none was given)."""
    folder = refuse_early(cfg)
    also = []
    for other in also_models(cfg):
        _settle(other, check_weights(other))
        also.append(f"{other.config}={other.checkpoints}")
    cfg.also = also
    _settle(cfg, folder)


def _settle(cfg: ServerConfig, folder: Path | None) -> None:
    if cfg.demo:
        cfg.config = demo_config(cfg)
        cfg.checkpoints = str(ensure_demo_weights(Path(cfg.checkpoints) if cfg.checkpoints else None, cfg.config))
    else:
        cfg.checkpoints = str(folder)


def engine_threads(cfg: ServerConfig, workers: int = 1) -> int | None:
    """The torch threads of this process's engine on CPU (float_rt.cpu.intra_op_threads): ``threads``
    if set, else the cores this process may use minus ``cpu_reserve`` (the media threads and the
    event loop), split between ``workers`` processes.  None on a GPU (torch's default kept)."""
    import torch

    from float_rt.cpu import use_threads
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not device.startswith("cpu"):
        return None
    return use_threads(cfg.cpu_reserve, cfg.threads or None, workers)


def tls_context(cfg: ServerConfig) -> ssl.SSLContext | None:
    if cfg.certfile is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cfg.certfile, cfg.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise FloatRTError(f"cannot use the TLS certificate {cfg.certfile} / key {cfg.keyfile}: {exc}") from exc
    return ctx


def certificate_names(certfile: str | None) -> list[str]:
    """The DNS names a TLS certificate is for (its subject alternative names, else its common name):
    a server with that certificate is reached by those names."""
    if not certfile:
        return []
    from cryptography import x509       # aiortc's own dependency (DTLS)
    try:
        cert = x509.load_pem_x509_certificate(Path(certfile).read_bytes())
    except (OSError, ValueError):
        return []                        # tls_context reports an unusable file
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                    .get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        return [a.value for a in cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)]


def is_recipe(cfg: ServerConfig) -> bool:
    return cfg.checkpoints is not None and (Path(cfg.checkpoints) / "RECIPE_WEIGHTS.txt").is_file()


def banner(cfg: ServerConfig, model: str, port: int, workers: int = 1) -> str:
    tls = cfg.certfile is not None
    where = f"{cfg.host}:{port}"
    return (f"FLOAT-RT serving {model} on {'https' if tls else 'http'}://{where}/ "
            f"(signalling at {'wss' if tls else 'ws'}://{where}/ws)"
            + (f", {workers} worker processes" if workers > 1 else "")
            + ("  [demo weights: output is noise, not a face]" if is_recipe(cfg) else ""))

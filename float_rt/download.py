"""``float-rt download``: the published checkpoint folder from a Hugging Face repo, then verified.

huggingface_hub does the talking to the Hub (listing, ``HF_ENDPOINT`` and tokens, redirects,
retries that resume a cut connection, progress bars).  Since huggingface_hub 2 every run
downloads into a fresh temporary file, so a run that is stopped half way through a 2.4 GB
file would start it again from zero; the files therefore go to ``DIR/.partial/<content
hash>.part``, which the next run continues.  A file takes its final name only once its size
and hash match the repo's listing, so a failed download never passes for a complete one.
Only the files of the official layout are fetched (one weights file per wav2vec2 folder),
and the folder then goes through the loader's key and shape check.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import AUDIO_DIR, EMOTION_DIR, FLOAT_FILES, HF_WEIGHTS, LoadReport, check_folder, hf_config
from .config import EMOTIONS, ModelConfig
from .errors import FloatRTError

log = logging.getLogger(__name__)

DEFAULT_REPO = "yuvraj108c/float"    # the mirror the ComfyUI FLOAT wrapper downloads from
PARTIAL = ".partial"
MANIFEST = ".download.json"          # path -> content id of every file finished here

@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None      # LFS files: the content hash
    blob_id: str            # git blob id (of the content, or of the LFS pointer)

    @property
    def content_id(self) -> str:
        return self.sha256 or self.blob_id


@dataclass
class Plan:
    repo: str
    revision: str           # the resolved commit
    files: list[RemoteFile]


def choose_files(listing: list[str], where: str) -> list[str]:
    """The published layout's files in a repo listing: float weights, and per wav2vec2 folder its
    config, preprocessor config and one weights file (safetensors preferred)."""
    have = set(listing)
    chosen, missing = [], []
    weights = next((f for f in FLOAT_FILES if f in have), None)
    if weights is None:
        missing.append(" or ".join(FLOAT_FILES))
    else:
        chosen.append(weights)
    for sub in (AUDIO_DIR, EMOTION_DIR):
        if f"{sub}/config.json" in have:
            chosen.append(f"{sub}/config.json")
        else:
            missing.append(f"{sub}/config.json")
        if f"{sub}/preprocessor_config.json" in have:
            chosen.append(f"{sub}/preprocessor_config.json")
        found = next((f"{sub}/{w}" for w in HF_WEIGHTS if f"{sub}/{w}" in have), None)
        if found is None:
            missing.append(f"{sub}/{' or '.join(HF_WEIGHTS)}")
        else:
            chosen.append(found)
    if missing:
        raise FloatRTError(f"{where} is not a FLOAT checkpoint folder: it has no {', no '.join(missing)}")
    return chosen


def _hub_error(exc: Exception, repo: str, revision: str) -> FloatRTError:
    from huggingface_hub import constants
    from huggingface_hub.errors import (GatedRepoError, OfflineModeIsEnabled, RepositoryNotFoundError,
                                        RevisionNotFoundError)
    where = f"{repo}@{revision} on {constants.ENDPOINT}"
    if isinstance(exc, OfflineModeIsEnabled) or constants.HF_HUB_OFFLINE:
        return FloatRTError("downloads are disabled because HF_HUB_OFFLINE is set; unset it to download")
    if isinstance(exc, RevisionNotFoundError):
        return FloatRTError(f"no revision {revision!r} in {repo} on {constants.ENDPOINT}")
    if isinstance(exc, GatedRepoError):
        return FloatRTError(f"{where} is gated: log in with `hf auth login` or set HF_TOKEN")
    if isinstance(exc, RepositoryNotFoundError):
        return FloatRTError(f"repository {repo} not found on {constants.ENDPOINT} (or it is private: set HF_TOKEN)")
    reason = " ".join(str(exc).split())[:300] or type(exc).__name__
    return FloatRTError(f"cannot download {where}: {type(exc).__name__}: {reason} "
                        "(check the network, or set HF_ENDPOINT to a mirror; run again to resume)")


def plan(repo: str, revision: str | None, choose=choose_files) -> Plan:
    """List the repo at ``revision`` (resolved to its commit) and choose the files to fetch
    (``choose(listing, where)``: the family's file choice, FLOAT's by default)."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile
    revision = revision or "main"
    api = HfApi()
    try:
        sha = api.repo_info(repo, revision=revision).sha
        tree = [f for f in api.list_repo_tree(repo, recursive=True, revision=sha) if isinstance(f, RepoFile)]
    except Exception as exc:  # noqa: BLE001 - every hub or network failure becomes one clear line
        raise _hub_error(exc, repo, revision) from exc
    by_path = {f.path: f for f in tree}
    chosen = choose(list(by_path), f"{repo}@{revision}")
    files = [RemoteFile(p, by_path[p].size, by_path[p].lfs.sha256 if by_path[p].lfs else None, by_path[p].blob_id)
             for p in chosen]
    return Plan(repo, sha, files)


def _matches(f: RemoteFile, path: Path) -> bool:
    """Size and content hash against the listing (sha256 for LFS files, the git blob id otherwise)."""
    if path.stat().st_size != f.size:
        return False
    if f.sha256 is not None:
        h = hashlib.sha256()
    else:
        h = hashlib.sha1(f"blob {f.size}\0".encode())
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest() == f.content_id


def fetch(p: Plan, dest: Path, log_line=print) -> Path:
    """Download the planned files into ``dest``, continuing partial files of earlier runs."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers
    dest.mkdir(parents=True, exist_ok=True)
    partial = dest / PARTIAL
    manifest_path = dest / MANIFEST
    done = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    wanted = {f.content_id for f in p.files}
    for stale in partial.glob("*.part") if partial.is_dir() else []:
        if stale.stem not in wanted:      # the repo changed since: that content is not coming back
            stale.unlink()
    headers = build_hf_headers()
    for f in p.files:
        target = dest / f.path
        if target.is_file() and done.get(f.path) == f.content_id and target.stat().st_size == f.size:
            continue
        part = partial / f"{f.content_id}.part"
        part.parent.mkdir(exist_ok=True)
        have = part.stat().st_size if part.is_file() else 0
        if have > f.size:
            part.unlink()
            have = 0
        if have:
            log_line(f"resuming {f.path} at {have / 2**20:,.1f} of {f.size / 2**20:,.1f} MiB")
        try:
            with part.open("ab") as fh:
                http_get(hf_hub_url(p.repo, f.path, revision=p.revision), fh, resume_size=have,
                         headers=headers, expected_size=f.size, displayed_filename=f.path)
        except Exception as exc:  # noqa: BLE001 - what arrived stays in the .part file for the next run
            raise _hub_error(exc, p.repo, p.revision) from exc
        if not _matches(f, part):
            part.unlink()
            raise FloatRTError(f"{f.path} does not match the repo's size and hash; it was discarded - run again")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, target)
        done[f.path] = f.content_id
        manifest_path.write_text(json.dumps(done, indent=1))
    shutil.rmtree(partial, ignore_errors=True)
    return dest


def describe(cfg_name: str, folder: Path, report: LoadReport) -> list[str]:
    """What was found, one line per file, for the user."""
    lines = []
    for file, count in report.used.items():
        size = (folder / file).stat().st_size
        extra = report.ignored.get(file) or []
        more = ", ..." if len(extra) > 3 else ""
        note = f", {len(extra)} unused ignored ({', '.join(extra[:3])}{more})" if extra else ""
        lines.append(f"  {file}: {size / 2**20:,.0f} MiB, {count} tensors match {cfg_name}{note}")
    audio, emotion = hf_config(folder / AUDIO_DIR), hf_config(folder / EMOTION_DIR, classifier=True)
    lines.append(f"  audio encoder: wav2vec2, {audio.num_hidden_layers} layers x {audio.hidden_size}")
    labels = [emotion.id2label[i] for i in range(emotion.num_labels)]
    lines.append(f"  emotion classifier: {emotion.num_hidden_layers} layers x {emotion.hidden_size}, "
                 f"labels {', '.join(labels)}")
    if [label.lower() for label in labels] != list(EMOTIONS):
        lines.append(f"  warning: the labels differ from FLOAT's order ({', '.join(EMOTIONS)})")
    return lines


def fetch_chosen(repo: str, revision: str | None, dest: Path, choose=choose_files, log_line=print) -> Plan:
    """Plan and fetch (resumable, hash-checked) the files ``choose`` picks from the repo."""
    p = plan(repo, revision, choose)
    total = sum(f.size for f in p.files)
    log_line(f"{p.repo}@{p.revision[:12]}: {len(p.files)} files, {total / 2**20:,.0f} MiB -> {dest}")
    fetch(p, dest, log_line)
    return p


def download(repo: str, revision: str | None, dest: Path, cfg: ModelConfig, cfg_name: str,
             log_line=print) -> Path:
    fetch_chosen(repo, revision, dest, choose_files, log_line)
    report = check_folder(cfg, dest)
    log_line(f"checked {dest} against {cfg_name} with the loader's key and shape check:")
    for line in describe(cfg_name, dest, report):
        log_line(line)
    return dest

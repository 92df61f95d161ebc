"""Files that are whole or absent: atomic writes, and safetensors files checked for format and version."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``: a reader sees the old file or the new one.
    A write that fails (a full disk, an I/O error, a read-only folder) raises OSError naming the
    file, and the previous file is left as it was."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a result file is as readable as any other
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, SafetensorError) as exc:  # safetensors reports a full disk as its own error
        kept = "the previous version is kept" if path.exists() else "nothing was written"
        raise OSError(getattr(exc, "errno", None), f"{path} could not be written ({exc}); {kept}") from None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the half-written temporary files a killed writer left in ``folder``; call it only
    while holding the folder's lock."""
    for stale in folder.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_safetensors(path: Path, fmt: str, version: int, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a qnnlab safetensors file of format ``fmt``; a missing, unreadable,
    foreign or newer file raises ValueError saying which."""
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; name the file itself")
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist")
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{what} {path} is not a readable safetensors file ({exc}); truncated or corrupt?") from None
    if metadata.get("format") != fmt:
        raise ValueError(f"{path} is not a {fmt} file (format {metadata.get('format')!r})")
    if int(metadata.get("version", "0")) > version:
        raise ValueError(
            f"{path} has {fmt} format version {metadata['version']}; this qnnlab reads up to {version}: upgrade qnnlab"
        )
    return tensors, metadata


def tensors_digest(text: str, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over ``text`` and every tensor's name, dtype, shape and bytes: it tells a damaged or
    edited file from the one written (it is stored in the file, so it is no defence against a
    forger who rewrites it too)."""
    h = hashlib.sha256(text.encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(name.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()

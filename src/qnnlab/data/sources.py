"""Where data files come from: a root the user names, the cache, system locations, or a download.

Downloads use pooch with the publisher's checksum; files found on disk are checked by their
payload (the decompressed bytes), so a re-compressed copy (Debian's dataset packages) is accepted
and a corrupt or truncated one is named.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from qnnlab.data.errors import DatasetError


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One file of a data set: its name, where to download it, and how to check it.

    ``known_hash`` is pooch's form (``sha256:...`` or ``md5:...``) for the file as published;
    ``payload_sha256`` is the SHA-256 of its decompressed payload, checked wherever it was found.
    """

    name: str
    url: str
    known_hash: str | None = None
    payload_sha256: str | None = None


def cache_dir() -> Path:
    return Path(os.environ.get("QNNLAB_DATA", Path.home() / ".cache" / "qnnlab"))


def locate(
    dataset: str,
    files: Sequence[RemoteFile],
    root: str | os.PathLike | None,
    system_dirs: Sequence[str] = (),
    download: bool = True,
    hint: str = "",
) -> dict[str, Path]:
    """Find every file of ``dataset``: in ``root``, the cache, then ``system_dirs``; else download."""
    places = ([Path(root)] if root else []) + [cache_dir() / dataset] + [Path(d) for d in system_dirs]
    for place in places:
        found = {f.name: place / f.name for f in files}
        if all(p.is_file() for p in found.values()):
            return found
    offline = os.environ.get("QNNLAB_OFFLINE") == "1"
    if download and not offline:
        return {f.name: _download(dataset, f) for f in files}
    folders = [str(place / f.name) for place in places for f in files if (place / f.name).is_dir()]
    if folders:
        raise DatasetError(f"{dataset}: {folders[0]} is a folder where the data file {Path(folders[0]).name} belongs")
    looked = "\n  ".join(str(p) for p in places)
    names = ", ".join(f.name for f in files)
    raise DatasetError(
        f"{dataset}: files not found ({names}). Looked in:\n  {looked}\n"
        f"Put them in one of those folders or pass --data-root DIR"
        + (f"; {hint}" if hint else "")
        + (
            "; downloading is off (unset QNNLAB_OFFLINE to allow it)"
            if offline
            else "; this data set is not downloaded automatically"
            if not download
            else ""
        )
    )


def _download(dataset: str, f: RemoteFile) -> Path:
    import pooch

    try:
        path = pooch.retrieve(
            f.url, known_hash=f.known_hash, fname=f.name, path=cache_dir() / dataset, progressbar=False
        )
    except ValueError as exc:  # pooch's checksum mismatch
        raise DatasetError(f"{dataset}: {f.name} downloaded from {f.url} fails its checksum ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - any network failure ends in the same advice
        raise DatasetError(
            f"{dataset}: could not download {f.url} ({type(exc).__name__}: {exc}); "
            f"fetch it by hand into {cache_dir() / dataset}"
        ) from None
    return Path(path)


def check_payload(f: RemoteFile, path: Path, payload: bytes) -> None:
    if f.payload_sha256 and hashlib.sha256(payload).hexdigest() != f.payload_sha256:
        raise DatasetError(
            f"{path}: contents differ from the published {f.name} (SHA-256 mismatch); "
            f"the file is corrupt or a different version, delete it and fetch it again"
        )

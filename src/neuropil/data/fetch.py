"""Downloading a catalog dataset's files with pooch: checksums verified, partial downloads resumed.

Each file goes to ``<destination>/<name>`` (default: the dataset's folder in the download
cache, :func:`neuropil.data.catalog.cache_root`). While it downloads, the bytes land in
``<name>.part``; an interrupted download continues from there with an HTTP range request
the next time. pooch checks the sha256 the catalog gives; a file the catalog has no
checksum for is only downloaded with ``verify=False``, and its checksum is logged so a
user catalog can pin it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

from neuropil.data.catalog import DatasetEntry, FileEntry, cache_root, get_dataset
from neuropil.errors import NeuropilError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20


class ResumingDownloader:
    """A pooch downloader that keeps partial downloads in ``<file>.part`` and resumes them."""

    def __init__(self, part_file: Path, *, timeout: float = 30.0, progress: bool = False):
        self.part_file = Path(part_file)
        self.timeout = timeout
        self.progress = progress

    def __call__(self, url: str, output_file, pooch_instance=None, check_only: bool = False):
        import requests

        if check_only:
            response = requests.head(url, allow_redirects=True, timeout=self.timeout)
            return response.ok
        have = self.part_file.stat().st_size if self.part_file.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout, allow_redirects=True) as response:
            if response.status_code == 416:  # the part file is already complete
                pass
            else:
                response.raise_for_status()
                resumed = response.status_code == 206
                if have and not resumed:
                    logger.info("%s: server ignored the range request; downloading from the start", url)
                length = response.headers.get("Content-Length")
                total = int(length) + (have if resumed else 0) if length else None
                progress = None
                if self.progress:
                    from neuropil.progress import progress as progress_bar

                    progress = progress_bar(
                        total=total,
                        initial=have if resumed else 0,
                        unit="B",
                        unit_scale=True,
                        desc=self.part_file.name.removesuffix(".part"),
                    )
                with open(self.part_file, "ab" if resumed else "wb") as part:
                    for block in response.iter_content(CHUNK_BYTES):
                        part.write(block)
                        if progress is not None:
                            progress.update(len(block))
                if progress is not None:
                    progress.close()
        # pooch hashes output_file and moves it into place; the part file is done.
        if hasattr(output_file, "write"):
            with open(self.part_file, "rb") as part:
                shutil.copyfileobj(part, output_file)
        else:
            shutil.copyfile(self.part_file, output_file)
        self.part_file.unlink()


def fetch_file(file: FileEntry, destination: Path, *, verify: bool = True, progress: bool = False) -> Path:
    """Download one catalog file into ``destination`` (skipped when present and matching)."""
    import pooch
    import requests

    if file.sha256 is None and verify:
        raise NeuropilError(
            f"{file.name}: the catalog has no checksum for it; fetch with --no-verify to download it unverified"
        )
    destination.mkdir(parents=True, exist_ok=True)
    known_hash = f"sha256:{file.sha256}" if file.sha256 else None
    downloader = ResumingDownloader(destination / f"{file.name}.part", progress=progress)
    # pooch announces every download on stderr; neuropil's own progress and errors say enough
    pooch.get_logger().setLevel(logging.WARNING)
    try:
        path = Path(
            pooch.retrieve(
                file.url,
                known_hash=known_hash,
                fname=file.name,
                path=destination,
                downloader=downloader,
                progressbar=False,
            )
        )
    except requests.exceptions.ConnectionError as error:
        part = downloader.part_file
        kept = f"; partial data kept in {part.name}, run fetch again to resume" if part.exists() else ""
        raise NeuropilError(f"{file.url}: cannot connect (offline?){kept}") from error
    except requests.exceptions.Timeout as error:
        raise NeuropilError(f"{file.url}: timed out; run fetch again to resume") from error
    except requests.exceptions.HTTPError as error:
        # raise_for_status always attaches the response; an HTTPError raised elsewhere may not.
        answer = error.response
        reason = f"{answer.status_code} {answer.reason}" if answer is not None else str(error).splitlines()[0]
        raise NeuropilError(f"{file.url}: download failed: {reason}") from error
    except ValueError as error:  # pooch: hash mismatch; it has deleted the bad file
        raise NeuropilError(f"{destination / file.name}: checksum mismatch: {str(error).splitlines()[0]}") from error
    if known_hash is None:
        logger.warning("%s downloaded without a checksum; its sha256 is %s", path, pooch.file_hash(str(path)))
    if file.unpack:
        _unpack(path, file.unpack, destination)
    return path


def _unpack(path: Path, kind: str, destination: Path) -> None:
    marker = destination / f".{path.name}.unpacked"
    if marker.exists():
        return
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as archive:
                archive.extractall(destination)
        elif kind == "tar":
            with tarfile.open(path) as archive:
                archive.extractall(destination, filter="data")
        else:
            raise NeuropilError(f"{path}: unknown unpack kind '{kind}' (zip, tar)")
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as error:
        raise NeuropilError(f"{path}: cannot unpack: {error}") from error
    marker.touch()


def fetch(
    dataset: str | DatasetEntry,
    *,
    destination: str | os.PathLike | None = None,
    verify: bool = True,
    progress: bool = False,
) -> Path:
    """Download every file of ``dataset``; returns the folder they are in.

    Raises
    ------
    NeuropilError
        Offline or unreachable server, HTTP errors, a checksum mismatch, a file without
        a checksum while ``verify`` is True, or a dataset without downloadable files.
    """
    entry = get_dataset(dataset) if isinstance(dataset, str) else dataset
    if not entry.files:
        raise NeuropilError(
            f"dataset '{entry.name}' lists no files to download; its data lives in {entry.base_folder()}"
        )
    folder = Path(destination) if destination is not None else cache_root() / (entry.folder or entry.name)
    for file in entry.files:
        fetch_file(file, folder, verify=verify, progress=progress)
    logger.info("dataset '%s' is in %s", entry.name, folder)
    return folder

"""Listing a plate folder: every file, recursively, as a ``/``-separated relative path."""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import PlateLayoutError, PlateReadError


def check_folder(path: str | Path) -> Path:
    """``path`` as a :class:`Path` if it is an existing folder; a clear error otherwise."""
    folder = Path(path).expanduser()
    if folder.is_symlink() and not folder.exists():
        raise PlateReadError(
            f"{folder} is a symbolic link that leads nowhere (its target is missing, or the "
            "link points back to itself): open the folder the link should point to."
        )
    if not folder.exists():
        raise PlateReadError(
            f"{folder} does not exist: check the path (a plate is a folder of images or an "
            "OME-Zarr plate folder)."
        )
    if not folder.is_dir():
        raise PlateLayoutError(
            f"{folder} is a file, not a folder: open the folder that holds the plate's images "
            f"({folder.parent}), not one image."
        )
    return folder


def entry_kind(entry: os.DirEntry, follow_dirs: bool = True) -> str | None:
    """``"dir"``, ``"file"`` or None (a broken or looping link, a socket...) for an entry.

    A symbolic link that loops (``a -> b -> a``, or a link to itself) makes
    ``is_dir`` raise "Too many levels of symbolic links"; such an entry is no
    image and no folder of images, so it is skipped like any other stray file.
    """
    try:
        if entry.is_dir(follow_symlinks=follow_dirs):
            return "dir"
        if entry.is_file(follow_symlinks=True):
            return "file"
    except OSError:
        return None
    return None


def list_files(folder: Path) -> list[str]:
    """All files under ``folder`` (hidden ones skipped), relative, sorted, ``/``-separated.

    Only names are listed (``os.scandir`` reads directory entries, not files), so
    this costs one directory read per folder however large the images.
    """
    found: list[str] = []
    stack = [("", folder)]
    seen: set[str] = set()  # real paths, so that a symbolic link loop is listed once
    while stack:
        prefix, directory = stack.pop()
        real = os.path.realpath(directory)
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            raise PlateReadError(f"Cannot list {directory}: {exc}.") from exc
        for entry in entries:
            if entry.name.startswith("."):
                continue  # .DS_Store, ._AppleDouble files, editor leftovers
            rel = f"{prefix}{entry.name}"
            kind = entry_kind(entry)
            if kind == "dir":
                stack.append((rel + "/", Path(entry.path)))
            elif kind == "file":
                found.append(rel)
    found.sort()
    return found


# Image files, whether phenoadapt reads them (TIFF) or not (a PNG export, a vendor's
# native format): used to say which images a layout or a pattern leaves out.
IMAGE_SUFFIXES = (
    ".tif",
    ".tiff",
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".c01",
    ".dib",
    ".flex",
    ".nd2",
    ".czi",
)


def is_image(path: str) -> bool:
    """True when ``path`` names an image file (by its extension), thumbnails included."""
    return path.lower().endswith(IMAGE_SUFFIXES)


def peek_files(folder: Path, max_entries: int = 2000, max_depth: int = 3) -> list[str]:
    """Some files under ``folder``, relative and ``/``-separated, at a bounded cost.

    At most ``max_entries`` directory entries are read, in folders at most
    ``max_depth`` levels down (an Opera Phenix export keeps its images in
    ``Images/``), so that a huge tree is never walked to decide whether it is
    a plate.  Unreadable folders are skipped.
    """
    found: list[str] = []
    queue = [("", folder, 0)]
    budget = max_entries
    while queue and budget > 0:
        prefix, directory, depth = queue.pop(0)
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    budget -= 1
                    if budget < 0:
                        break
                    if entry.name.startswith("."):
                        continue
                    rel = f"{prefix}{entry.name}"
                    kind = entry_kind(entry, follow_dirs=False)
                    if kind == "dir":
                        if depth < max_depth:
                            queue.append((rel + "/", Path(entry.path), depth + 1))
                    elif kind == "file":
                        found.append(rel)
        except OSError:
            continue
    return found

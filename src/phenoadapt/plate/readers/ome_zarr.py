"""OME-Zarr HCS plates (NGFF 0.4 and 0.5): a lazy reader and a writer for conversions.

An NGFF plate is a Zarr group whose ``plate`` metadata lists ``rows``,
``columns`` and ``wells`` (``A/1``...); each well group lists its fields
(``images``), and each field is a multiscale image whose level 0 holds the
pixels, with axes such as ``c, y, x`` or ``t, c, z, y, x``.  NGFF 0.5 (Zarr v3)
keeps this metadata under an ``ome`` key; 0.4 (Zarr v2) at the top level.

Reading opens the level-0 array of a field only when a plane is asked for, and
reads just that plane.  Channel names come from ``omero.channels[].label``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr

from ...errors import Cancelled, PhenoadaptError, PlateLayoutError, PlateReadError
from ...progress import CancelFn, ProgressFn
from ..channel_map import read_channel_map
from ..channels import Channel
from ..model import Plate
from ..wells import row_name, well_name, well_position
from .layouts import position
from .naming import folder_plate_id, resolve_channels, resolve_format
from .tiff_plate import OpenOptions, PlaneChoice

# Hex colours of napari's colormap names, for omero channel metadata.
_HEX = {
    "blue": "0000FF",
    "green": "00FF00",
    "cyan": "00FFFF",
    "yellow": "FFFF00",
    "magenta": "FF00FF",
    "gray": "FFFFFF",
}
# NGFF version -> (ome_zarr.format class name, Zarr format version).
_FORMATS = {"0.4": ("FormatV04", 2), "0.5": ("FormatV05", 3)}
# How many opened field arrays a source keeps (metadata only, a few kB each).
_ARRAY_CACHE = 64


def is_zarr_store(path: Path) -> bool:
    """True when ``path`` is a Zarr group (v2 or v3)."""
    return path.is_dir() and any(
        (path / name).is_file() for name in ("zarr.json", ".zgroup", ".zattrs")
    )


def is_zarr_plate(path: Path) -> bool:
    """True when the Zarr group at ``path`` is an NGFF HCS plate, read from its small JSON.

    Only ``zarr.json`` (v3) or ``.zattrs`` (v2) is read, so this is cheap
    however large the plate.
    """
    for name in ("zarr.json", ".zattrs"):
        meta = path / name
        try:
            if not meta.is_file() or meta.stat().st_size > _MAX_ATTRS_BYTES:
                continue
            data = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            attrs = data.get("attributes", data)
            ome = attrs.get("ome", attrs) if isinstance(attrs, dict) else {}
            if isinstance(ome, dict) and "plate" in ome:
                return True
    return False


# A plate's group metadata lists wells and fields: generous, but bounded.
_MAX_ATTRS_BYTES = 16 * 1024 * 1024


def _ome(group: zarr.Group) -> dict:
    """The NGFF metadata of a group: under ``ome`` (0.5) or at the top (0.4)."""
    attrs = dict(group.attrs)
    return dict(attrs.get("ome", attrs))


class ZarrSource:
    """Reads planes of an OME-Zarr plate from level 0 of each field's multiscale image.

    Parameters
    ----------
    store
        The plate's Zarr folder.
    fields
        Mapping (well, site) -> path of the field's image group (``A/1/0``).
    channel_index
        Mapping channel key -> index along the channel axis.
    plane
        Z-plane to read (1-based), or ``"max"`` for a maximum projection over z.
    """

    def __init__(
        self,
        store: Path,
        fields: dict[tuple[str, int], str],
        channel_index: dict[str, int],
        plane: PlaneChoice = None,
    ) -> None:
        self.store = store
        self.fields = fields
        self.channel_index = channel_index
        self.plane = plane
        self._arrays: dict[str, tuple[zarr.Array, list[str], str]] = {}
        self._lock = threading.Lock()  # napari and dask read planes from several threads

    def __getstate__(self) -> dict:
        # Opened arrays and the lock stay behind when a plate is sent to a worker process.
        state = self.__dict__.copy()
        state["_arrays"] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def field_path(self, well: str, site: int) -> str:
        """The image group of a field; a clear error when the plate has no such field."""
        try:
            return self.fields[(well, site)]
        except KeyError:
            raise PlateReadError(
                f"No field for well {well}, site {site} in {self.store}."
            ) from None

    def field_array(self, path: str) -> tuple[zarr.Array, list[str], str]:
        """Level-0 array, axis names and dataset path of the image group ``path``."""
        with self._lock:
            cached = self._arrays.get(path)
        if cached is None:
            try:
                image = zarr.open_group(str(self.store), path=path, mode="r")
                multiscale = _ome(image)["multiscales"][0]
                dataset = multiscale["datasets"][0]["path"]
                axes = [_axis_name(a) for a in multiscale.get("axes", [])]
                array = zarr.open_array(str(self.store), path=f"{path}/{dataset}", mode="r")
            except Exception as exc:  # zarr raises many types for missing or bad nodes
                raise PlateReadError(
                    f"Cannot open the image {self.store / path}: {exc}. The OME-Zarr plate may "
                    "be incomplete; write it again."
                ) from exc
            if not axes:  # NGFF 0.1-0.3 had no axes: always t, c, z, y, x
                axes = ["t", "c", "z", "y", "x"][-array.ndim :]
            cached = (array, axes, dataset)
            with self._lock:
                if len(self._arrays) >= _ARRAY_CACHE:
                    self._arrays.pop(next(iter(self._arrays)))
                self._arrays[path] = cached
        return cached

    def describe(self, well: str, site: int, channel: Channel) -> str:
        path = self.field_path(well, site)
        return f"{self.store.name}/{path} (channel {self.channel_index[channel.key]})"

    def read_plane(self, well: str, site: int, channel: Channel) -> np.ndarray:
        path = self.field_path(well, site)
        array, axes, dataset = self.field_array(path)
        index: list[int | slice] = []
        for axis, size in zip(axes, array.shape, strict=True):
            if axis in ("y", "x"):
                index.append(slice(None))
            elif axis == "c":
                index.append(self.channel_index[channel.key])
            elif axis == "z" and self.plane == "max":
                index.append(slice(None))
            elif axis == "z" and isinstance(self.plane, int):
                index.append(min(self.plane - 1, size - 1))
            else:
                index.append(0)  # first time point / plane
        try:
            data = np.asarray(array[tuple(index)])
        except Exception as exc:
            raise PlateReadError(
                f"Cannot read {self.store / path / dataset}: {exc}. A chunk may be missing or "
                "corrupt; write the plate again."
            ) from exc
        if data.ndim == 3:  # z kept for the projection
            data = data.max(axis=0)
        return data


def _axis_name(axis: dict | str) -> str:
    return (axis["name"] if isinstance(axis, dict) else str(axis)).lower()


def open_ome_zarr(path: Path, options: OpenOptions) -> Plate:
    """Open an OME-Zarr HCS plate lazily: metadata only, no pixels.

    Raises
    ------
    PlateLayoutError
        When the store is not an HCS plate (an image, or no NGFF metadata).
    PlateReadError
        When a well or image the metadata lists cannot be opened.
    """
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise PlateReadError(f"Cannot open {path} as a Zarr store: {exc}.") from exc
    meta = _ome(root)
    plate_meta = meta.get("plate")
    if plate_meta is None:
        kind = "an OME-Zarr image" if "multiscales" in meta else "a Zarr store without NGFF plate"
        raise PlateLayoutError(
            f"{path} is {kind} metadata, not an HCS plate: phenoadapt opens plates whose root "
            "lists rows, columns and wells (as written by ome-zarr-py's write_plate_metadata "
            "or `phenoadapt convert`)."
        )
    fields = _plate_fields(root, path, plate_meta)
    if not fields:
        raise PlateLayoutError(f"The OME-Zarr plate {path} lists no wells with fields.")
    first = min(fields, key=lambda ws: (well_position(ws[0]), ws[1]))
    source_probe = ZarrSource(path, fields, {}, options.plane)
    array, axes, _ = source_probe.field_array(fields[first])
    n_channels = array.shape[axes.index("c")] if "c" in axes else 1
    image_meta = _ome(zarr.open_group(str(path), path=fields[first], mode="r"))
    extra = dict(root.attrs).get("phenoadapt", {})
    keys = [str(k) for k in extra.get("channel_keys", [])]
    if len(keys) != n_channels:
        keys = [str(i) for i in range(n_channels)]
    labels = [c.get("label") for c in image_meta.get("omero", {}).get("channels", [])]
    # Labels in another number than the channels describe something else: not trusted.
    usable = len(labels) == n_channels and all(labels)
    metadata_names = dict(zip(keys, labels, strict=True)) if usable else None
    sites: dict[str, list[int]] = {}
    for well, site in fields:
        sites.setdefault(well, []).append(site)
    metadata: dict = {"instrument": "OME-Zarr HCS plate", "ngff_axes": axes}
    if extra.get("source_layout"):
        metadata["source_layout"] = extra["source_layout"]
    if "pixel_size_um" in extra:
        metadata["pixel_size_um"] = extra["pixel_size_um"]
    saved = read_channel_map(path)
    if saved is not None:
        metadata["channel_map"] = str(saved[1])
    return Plate(
        plate_id=options.plate_id or plate_meta.get("name") or folder_plate_id(path),
        format=resolve_format(sites, options.plate_format),
        channels=resolve_channels(
            keys, options.channel_names, metadata_names, saved[0] if saved else None
        ),
        sites={w: sorted(s) for w, s in sites.items()},
        field_shape=(int(array.shape[axes.index("y")]), int(array.shape[axes.index("x")])),
        dtype=np.dtype(array.dtype),
        source=ZarrSource(path, fields, {k: i for i, k in enumerate(keys)}, options.plane),
        path=path,
        layout="ome-zarr",
        metadata=metadata,
    )


def _plate_fields(root: zarr.Group, path: Path, plate_meta: dict) -> dict[tuple[str, int], str]:
    """Mapping (well, site) -> image group path, from the plate and well metadata."""
    rows = [r["name"] for r in plate_meta.get("rows", [])]
    columns = [c["name"] for c in plate_meta.get("columns", [])]
    fields: dict[tuple[str, int], str] = {}
    for entry in plate_meta.get("wells", []):
        well_path = entry["path"]
        row_name, column_name = well_path.split("/")[-2:]
        if "rowIndex" in entry and entry["rowIndex"] < len(rows):
            row_name = rows[entry["rowIndex"]]
        if "columnIndex" in entry and entry["columnIndex"] < len(columns):
            column_name = columns[entry["columnIndex"]]
        well = _well_name(row_name, column_name, path)
        try:
            images = _ome(root[well_path])["well"]["images"]
        except Exception as exc:
            raise PlateReadError(
                f"The OME-Zarr plate {path} lists well {well_path} but its group or well "
                f"metadata cannot be read ({exc}); write the plate again."
            ) from exc
        for i, image in enumerate(images):
            name = str(image["path"])
            # Sites keep their instrument numbers when written by phenoadapt ("1", "2"...).
            site = int(name) if name.isdigit() else i
            fields[(well, site)] = f"{well_path}/{name}"
    return fields


def _well_name(row: str, column: str, path: Path) -> str:
    return well_name(position(row, "row", str(path)), position(column, "column", str(path)))


# -- writing -----------------------------------------------------------------------
def write_ome_zarr(
    plate: Plate,
    path: str | Path,
    *,
    wells: Sequence[str] | None = None,
    overwrite: bool = False,
    ngff_version: str = "0.5",
    scale_factors: Sequence[int] = (),
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> Path:
    """Write a plate (or some of its wells) as an OME-Zarr HCS plate.

    Fields are read and written one at a time, so memory holds one field.  Site
    numbers become the field names (``A/1/3`` is site 3 of well A01) and are read
    back as such; channel names go to ``omero.channels[].label``.

    Parameters
    ----------
    plate
        The plate to write.
    path
        Output folder, conventionally ending in ``.zarr``.
    wells
        Wells to write; all imaged wells when None.
    overwrite
        Replace an existing Zarr store at ``path``; without it an existing path
        is an error.  A folder that is not a Zarr store is never deleted.
    ngff_version
        ``"0.5"`` (Zarr v3, the default) or ``"0.4"`` (Zarr v2, for older viewers).
    scale_factors
        Downsampling factors of extra pyramid levels, e.g. ``(2, 4)`` for faster
        viewing of large fields; none by default.
    progress, cancel
        Progress callback ``(stage, done, total)`` and cancel flag, checked per field.

    Returns
    -------
    Path
        The written store.
    """
    path = Path(path)
    _prepare_output(plate, path, overwrite)
    if ngff_version not in _FORMATS:
        raise PlateLayoutError(f"NGFF version {ngff_version!r} is not one of 0.4, 0.5.")
    # Written beside the target and renamed into place: a failed or cancelled
    # conversion leaves neither a half store, nor an empty folder, nor a lost old store.
    created = _missing_parents(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        _write_store(plate, partial, wells, ngff_version, scale_factors, progress, cancel)
        _replace_store(partial, path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return path


def _missing_parents(path: Path) -> list[Path]:
    """Folders above ``path`` that do not exist yet, deepest first."""
    missing, folder = [], path.parent
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    return missing


def _replace_store(partial: Path, path: Path) -> None:
    """Move a finished store to ``path``; an old store there (overwrite) goes only then."""
    if not path.exists():
        os.replace(partial, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    os.replace(path, old / "store")
    os.replace(partial, path)
    shutil.rmtree(old, ignore_errors=True)


def _write_store(
    plate: Plate,
    path: Path,
    wells: Sequence[str] | None,
    ngff_version: str,
    scale_factors: Sequence[int],
    progress: ProgressFn | None,
    cancel: CancelFn | None,
) -> None:
    """Write the OME-Zarr plate into the (empty) folder ``path``."""
    # ome-zarr-py (and its pydantic models) takes a second to import: only writers pay it.
    import ome_zarr.format
    from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

    format_name, zarr_format = _FORMATS[ngff_version]
    fmt = getattr(ome_zarr.format, format_name)()
    chosen = plate.wells if wells is None else [w for w in plate.wells if w in set(wells)]
    if wells is not None and len(chosen) != len(set(wells)):
        unknown = sorted(set(wells) - set(plate.wells))
        raise PlateLayoutError(
            f"Well(s) {', '.join(unknown)} were not imaged on plate {plate.plate_id!r}."
        )
    positions = {w: well_position(w) for w in chosen}
    rows = sorted({r for r, _ in positions.values()})
    columns = sorted({c for _, c in positions.values()})
    # NGFF names rows by letters and columns by unpadded numbers: well C03 is C/3.
    well_paths = [f"{row_name(positions[w][0])}/{positions[w][1]}" for w in chosen]

    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    write_plate_metadata(
        root,
        [row_name(r) for r in rows],
        [str(c) for c in columns],
        well_paths,
        fmt=fmt,
        name=plate.plate_id,
        field_count=max(len(plate.sites_of(w)) for w in chosen),
    )
    extra = {"channel_keys": [c.key for c in plate.channels], "source_layout": plate.layout}
    if "pixel_size_um" in plate.metadata:
        extra["pixel_size_um"] = plate.metadata["pixel_size_um"]
    root.attrs["phenoadapt"] = extra

    total = sum(len(plate.sites_of(w)) for w in chosen)
    done = 0
    for well, well_path in zip(chosen, well_paths, strict=True):
        well_group = root.require_group(well_path)
        sites = plate.sites_of(well)
        write_well_metadata(well_group, [{"path": str(s)} for s in sites], fmt=fmt)
        for site in sites:
            if cancel is not None and cancel():
                raise Cancelled(f"conversion of {plate.plate_id} stopped at well {well}.")
            field = plate.read_field(well, site)
            write_image(
                field,
                well_group.require_group(str(site)),
                scale_factors=tuple(scale_factors),
                axes="cyx",
                fmt=fmt,
                name=f"{well}_{site}",
                storage_options={"chunks": (1, *field.shape[1:])},
                omero={"channels": _omero_channels(plate.channels, field)},
            )
            done += 1
            if progress is not None:
                progress("convert", done, total)


def _omero_channels(channels: Sequence[Channel], field: np.ndarray) -> list[dict]:
    """omero channel entries: label, colour, and a display window from the field's range."""
    if np.issubdtype(field.dtype, np.integer):
        info = np.iinfo(field.dtype)
        lowest, highest = float(info.min), float(info.max)
    else:
        lowest, highest = float(np.min(field)), float(np.max(field))
    entries = []
    for channel, plane in zip(channels, field, strict=True):
        entries.append(
            {
                "label": channel.name,
                "color": _HEX.get(channel.colormap, "FFFFFF"),
                "active": True,
                "window": {
                    "min": lowest,
                    "max": highest,
                    "start": float(plane.min()),
                    "end": float(plane.max()),
                },
            }
        )
    return entries


def _prepare_output(plate: Plate, path: Path, overwrite: bool) -> None:
    """Refuse to overwrite unless asked, and never delete anything but a Zarr store."""
    if plate.path is not None and path.resolve() == Path(plate.path).resolve():
        raise PhenoadaptError(f"The output {path} is the plate's own folder: choose another path.")
    if not path.exists():
        return
    if not overwrite:
        raise PhenoadaptError(
            f"{path} already exists: choose another output path, or pass --overwrite "
            "(overwrite=True) to replace it."
        )
    if not is_zarr_store(path):
        raise PhenoadaptError(
            f"{path} exists and is not a Zarr store; phenoadapt will not delete it. Choose "
            "another output path."
        )

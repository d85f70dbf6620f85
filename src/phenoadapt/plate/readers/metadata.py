"""Instrument metadata: Harmony ``Index.xml`` (Opera Phenix, Operetta) and OME-XML in TIFFs.

Harmony writes one index per measurement, ``Index.idx.xml`` (Harmony 4/5) or
``Index.xml`` (Harmony 6+), next to or above the ``Images/`` folder.  Its root
``EvaluationInputData`` sits in a namespace ending in the Harmony version
(``.../PEHH/HarmonyV5``).  phenoadapt reads:

- ``Plates/Plate/PlateID`` (the barcode; ``Name`` when empty), ``PlateRows``,
  ``PlateColumns``;
- channel names from ``Maps/Map/Entry[@ChannelID]/ChannelName`` (Harmony 6+
  keeps the channel description there) or else from the ``Images/Image``
  entries (``ChannelID``, ``ChannelName``), and the pixel size
  ``ImageResolutionX`` (metres).

The index can be hundreds of megabytes, so it is streamed and left as soon as
every channel of the file names has a name.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import tifffile

from ...errors import PlateReadError

INDEX_NAMES = ("index.xml", "index.idx.xml")


@dataclass
class HarmonyIndex:
    """What phenoadapt takes from a Harmony index file."""

    path: Path
    plate_id: str | None = None
    n_rows: int | None = None
    n_columns: int | None = None
    channel_names: dict[str, str] = field(default_factory=dict)  # ChannelID -> ChannelName
    pixel_size_um: float | None = None


def find_index(folder: Path, paths: list[str]) -> Path | None:
    """The Harmony index among ``paths`` (relative to ``folder``), the shallowest first."""
    found = [p for p in paths if p.rsplit("/", 1)[-1].lower() in INDEX_NAMES]
    if not found:
        return None
    return folder / min(found, key=lambda p: (p.count("/"), p))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _text(element: ET.Element) -> str:
    return (element.text or "").strip()


def read_harmony_index(path: Path, channel_keys: Collection[str] = ()) -> HarmonyIndex:
    """Read plate id, plate size, channel names and pixel size from a Harmony index.

    Parameters
    ----------
    path
        ``Index.xml`` or ``Index.idx.xml``.
    channel_keys
        Channel numbers seen in the file names (``"1"``...); reading stops once
        each has a name.

    Raises
    ------
    PlateReadError
        When the file is not well-formed XML.
    """
    index = HarmonyIndex(path=path)
    wanted = {str(k) for k in channel_keys}
    try:
        for event, element in ET.iterparse(path, events=("start", "end")):
            tag = _local(element.tag)
            if event == "start":
                # Harmony 6+ describes channels in Maps, before the (long) image list.
                if tag == "Images" and wanted and wanted <= index.channel_names.keys():
                    break
                continue
            if tag == "Plate":
                _read_plate(element, index)
            elif tag == "Entry" and element.get("ChannelID") is not None:
                _read_channel(element, element.get("ChannelID"), index)
            elif tag == "Image":
                _read_channel(element, _child_text(element, "ChannelID"), index)
                if wanted and wanted <= index.channel_names.keys():
                    break
            if tag in ("Plate", "Well", "Entry", "Image"):
                element.clear()  # keep memory flat on long indexes
    except ET.ParseError as exc:
        raise PlateReadError(
            f"{path} is not a readable Harmony index ({exc}). Export it again from Harmony, "
            "or move it out of the plate folder to use default channel names."
        ) from None
    return index


def _child_text(element: ET.Element, name: str) -> str | None:
    for child in element:
        if _local(child.tag) == name:
            return _text(child)
    return None


def _read_plate(element: ET.Element, index: HarmonyIndex) -> None:
    name = _child_text(element, "Name")
    plate_id = _child_text(element, "PlateID")
    index.plate_id = plate_id or index.plate_id or name or None
    rows, columns = _child_text(element, "PlateRows"), _child_text(element, "PlateColumns")
    if rows and rows.isdigit() and columns and columns.isdigit():
        index.n_rows, index.n_columns = int(rows), int(columns)


def _read_channel(element: ET.Element, channel_id: str | None, index: HarmonyIndex) -> None:
    if not channel_id or not channel_id.strip().isdigit():
        return
    name = _child_text(element, "ChannelName")
    if name:
        index.channel_names.setdefault(str(int(channel_id)), name)
    resolution = _child_text(element, "ImageResolutionX")
    if resolution and index.pixel_size_um is None:
        try:
            # Harmony stores metres (Unit="m"); an absurd value means another unit.
            metres = float(resolution)
            index.pixel_size_um = metres * 1e6 if metres < 1e-3 else metres
        except ValueError:
            pass


def _ome_root(tiff: tifffile.TiffFile) -> ET.Element | None:
    """The parsed OME-XML of a TIFF, or None when it has none (or it does not parse)."""
    xml = tiff.ome_metadata
    if not xml:
        return None
    try:
        return ET.fromstring(xml)
    except ET.ParseError:
        return None


def ome_channel_names(tiff: tifffile.TiffFile) -> list[str] | None:
    """Channel names of the first OME image in an OME-TIFF, or None when it has none."""
    root = _ome_root(tiff)
    if root is None:
        return None
    for image in root.iter():
        if _local(image.tag) != "Image":
            continue
        names = [
            (channel.get("Name") or "").strip()
            for channel in image.iter()
            if _local(channel.tag) == "Channel"
        ]
        return names if names and all(names) else None
    return None


def ome_pixel_size_um(tiff: tifffile.TiffFile) -> float | None:
    """PhysicalSizeX of the first OME image in micrometres (OME's default unit), if given."""
    root = _ome_root(tiff)
    if root is None:
        return None
    for pixels in root.iter():
        if _local(pixels.tag) == "Pixels" and pixels.get("PhysicalSizeX"):
            unit = pixels.get("PhysicalSizeXUnit", "µm")
            value = float(pixels.get("PhysicalSizeX"))
            return {"nm": value / 1000, "mm": value * 1000, "m": value * 1e6}.get(unit, value)
    return None


# MetaXpress plate descriptions (.HTD) list wavelengths as `"WaveName1", "DAPI"`.
_HTD_WAVE = re.compile(r'^\s*"WaveName(\d+)"\s*,\s*"([^"]*)"', re.MULTILINE)


def find_htd(folder: Path, paths: list[str]) -> Path | None:
    """The MetaXpress ``.HTD`` plate description among ``paths``, the shallowest first."""
    found = [p for p in paths if p.lower().endswith(".htd")]
    if not found:
        return None
    return folder / min(found, key=lambda p: (p.count("/"), p))


def read_htd_channel_names(path: Path) -> dict[str, str]:
    """Channel names of an ImageXpress plate from its ``.HTD`` file: ``{"w1": "DAPI", ...}``.

    An unreadable file gives no names rather than an error: the names are a
    convenience, and the images open without them.
    """
    try:
        text = path.read_text(encoding="latin-1")
    except OSError:
        return {}
    return {f"w{int(n)}": name.strip() for n, name in _HTD_WAVE.findall(text) if name.strip()}

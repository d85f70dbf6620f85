"""Plates: the plate model, readers of instrument layouts, plate maps and synthetic plates."""

from .channels import CELL_PAINTING_ROLES, Channel, ChannelRole, make_channels, role_from_name
from .model import ImageRef, PixelSource, Plate, TiffSource
from .platemap import (
    NotEnoughControlsError,
    PlateMap,
    make_platemap,
    platemap_for_plate,
    read_jump_platemap,
    read_platemap,
    write_platemap,
)
from .readers import open_plate, verify_plate, write_ome_zarr
from .wells import PLATE_96, PLATE_384, PLATE_1536, PlateFormat, normalize_well, plate_format

__all__ = [
    "CELL_PAINTING_ROLES",
    "Channel",
    "ChannelRole",
    "ImageRef",
    "NotEnoughControlsError",
    "PLATE_96",
    "PLATE_384",
    "PLATE_1536",
    "PixelSource",
    "Plate",
    "PlateFormat",
    "PlateMap",
    "TiffSource",
    "make_channels",
    "make_platemap",
    "normalize_well",
    "open_plate",
    "plate_format",
    "platemap_for_plate",
    "read_jump_platemap",
    "read_platemap",
    "role_from_name",
    "verify_plate",
    "write_ome_zarr",
    "write_platemap",
]

"""Plates: the plate model, readers of instrument layouts, plate maps and synthetic plates."""

from .channels import CELL_PAINTING_ROLES, Channel, ChannelRole, make_channels, role_from_name
from .model import ImageRef, PixelSource, Plate, TiffSource
from .wells import PLATE_96, PLATE_384, PLATE_1536, PlateFormat, normalize_well, plate_format

__all__ = [
    "CELL_PAINTING_ROLES",
    "Channel",
    "ChannelRole",
    "ImageRef",
    "PLATE_96",
    "PLATE_384",
    "PLATE_1536",
    "PixelSource",
    "Plate",
    "PlateFormat",
    "TiffSource",
    "make_channels",
    "normalize_well",
    "plate_format",
    "role_from_name",
]

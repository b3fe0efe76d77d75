"""imager: sector-level disk imaging for phones."""

__version__ = "0.2.0"

"""imager: sector-level disk imaging for phones."""

__version__ = "0.1.0"

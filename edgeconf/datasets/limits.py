"""The pixel limit: how large an image edgeconf agrees to decode, checked from the file's header first.

A 20000×20000 PNG is a 1 MB file that decodes into 1.2 GB; the limit refuses it before a byte of pixels is
allocated. Default :data:`DEFAULT_MAX_PIXELS` (50 megapixels: an 8K frame or a 48 MP photo fits); change it with
the environment variable ``EDGECONF_MAX_IMAGE_PIXELS`` or a ``max_pixels`` argument (CLI: ``--max-pixels``).
"""
from __future__ import annotations

import os
from typing import Optional

from edgeconf.errors import ConfigError, DataError

ENV_VAR = "EDGECONF_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 50_000_000


def max_image_pixels(override: Optional[int] = None) -> int:
    """The limit in force: ``override`` if given, else ``$EDGECONF_MAX_IMAGE_PIXELS``, else the default."""
    if override is not None:
        value: object = override
        where = "max_pixels"
    else:
        raw = os.environ.get(ENV_VAR, "").strip()
        if not raw:
            return DEFAULT_MAX_PIXELS
        where = ENV_VAR
        try:
            value = int(raw.replace("_", ""))
        except ValueError:
            raise ConfigError("%s must be a whole number of pixels, got %r" % (ENV_VAR, raw)) from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("%s must be a whole number of pixels >= 1, got %r" % (where, value))
    return value


def check_pixels(width: int, height: int, what: str, limit: Optional[int] = None) -> None:
    """Raise :class:`DataError` when a ``width``×``height`` image is over the limit (or has no pixels)."""
    cap = max_image_pixels(limit)
    if width < 1 or height < 1:
        raise DataError("%s is %d×%d pixels: an image needs at least one pixel" % (what, width, height))
    if width * height > cap:
        raise DataError("%s is %d×%d = %d pixels, over the limit of %d; refusing to decode it (raise the limit "
                        "with --max-pixels or %s if the image is genuine)" % (what, width, height, width * height,
                                                                           cap, ENV_VAR))


__all__ = ["ENV_VAR", "DEFAULT_MAX_PIXELS", "max_image_pixels", "check_pixels"]

"""Colours given by users: names, ``#rrggbb[aa]``, ``r,g,b[,a]``."""

from __future__ import annotations

Color = tuple[int, int, int, int]
WHITE: Color = (255, 255, 255, 255)


def parse_color(text: str | tuple | list) -> Color:
    """RGBA from a colour name, ``#rgb``, ``#rrggbb[aa]``, ``r,g,b[,a]`` or a 3/4-tuple.

    Raises ValueError with the reason (to follow the value in a message).
    """
    if isinstance(text, tuple | list):
        parts = [int(v) for v in text]
    else:
        text = text.strip()
        if "," in text:
            try:
                parts = [int(v) for v in text.split(",")]
            except ValueError:
                raise ValueError("is not r,g,b[,a] with integers 0-255") from None
        else:
            from PIL import ImageColor  # names and #hex forms

            try:
                parts = list(ImageColor.getrgb(text))
            except ValueError:
                raise ValueError("is not a colour (a name, #rrggbb[aa] or r,g,b[,a])") from None
    if len(parts) not in (3, 4) or not all(0 <= v <= 255 for v in parts):
        raise ValueError("needs 3 or 4 values from 0 to 255")
    return (parts[0], parts[1], parts[2], parts[3] if len(parts) == 4 else 255)

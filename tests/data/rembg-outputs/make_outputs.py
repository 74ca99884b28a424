#!/usr/bin/env python3
"""Generate rembg 2.0.86 u2netp reference outputs for tests/test_outputs.py.

Run once with the rembg venv, from this folder:
    /work/rembg-venv/bin/python make_outputs.py
Weights must already be at ~/.u2net/u2netp.onnx (rembg then never downloads).
The stored files were made with Pillow 12.x; Pillow's resampling can move a mask value by one
level between versions, which the tests allow for and say so.

- car-1.rembg.png: rembg.remove(bytes) default cut-out (premultiplied colour), PNG as rembg writes.
- car-1.ppm.png: the mask with post_process_mask=True, only_mask=True (rembg -om -ppm).
- car-1.matting.alpha.png: alpha channel of the alpha_matting=True cut-out (rembg -a defaults).
"""

from pathlib import Path

import rembg
from PIL import Image
from rembg import new_session, remove

SOURCE = Path(__file__).resolve().parents[3] / "examples" / "car-1.jpg"


def main() -> None:
    assert rembg.__version__ == "2.0.86", rembg.__version__
    session = new_session("u2netp")
    Path("car-1.rembg.png").write_bytes(remove(SOURCE.read_bytes(), session=session))
    mask = remove(Image.open(SOURCE), session=session, only_mask=True, post_process_mask=True)
    mask.save("car-1.ppm.png", optimize=True)
    matted = remove(Image.open(SOURCE), session=session, alpha_matting=True)
    matted.getchannel("A").save("car-1.matting.alpha.png", optimize=True)


if __name__ == "__main__":
    main()

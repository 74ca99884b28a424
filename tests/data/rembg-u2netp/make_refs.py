#!/usr/bin/env python3
"""Generate rembg 2.0.86 u2netp reference alphas.

Run with the rembg venv:  /work/rembg-venv/bin/python /work/refs/make_refs.py
Weights must already be at ~/.u2net/u2netp.onnx (or ~/.rembg/models/u2netp/u2netp.onnx);
rembg then never calls pooch (resolve_existing() short-circuits, no md5 check).

For every input it writes <out>/<stem>.alpha.png = alpha channel (mode "L") of
rembg.remove(PIL.Image.open(path), session=new_session("u2netp")), i.e. the default
path: exif_transpose -> predict -> naive_cutout (Image.composite) -> RGBA.
It also compares the peer-test expected PNG's alpha with ours.
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import rembg
from PIL import Image
from rembg import new_session, remove

SHARED = Path("/work/shared/images")
INPUTS = sorted((SHARED / "rembg-examples").iterdir()) + [SHARED / "peer-test" / "anime-girl-1.jpg"]
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/refs/u2netp")
PEER_EXPECTED = SHARED / "peer-test" / "anime-girl-1.u2netp.expected.png"


def main():
    assert rembg.__version__ == "2.0.86", rembg.__version__
    OUT.mkdir(parents=True, exist_ok=True)
    session = new_session("u2netp")
    manifest = {}
    done = {}
    for path in INPUTS:
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp"):
            continue
        data = path.read_bytes()
        digest = hashlib.md5(data).hexdigest()
        stem = path.stem
        if stem in done:
            # same stem twice (peer-test/anime-girl-1.jpg is byte-identical to rembg-examples one)
            assert done[stem] == digest, f"stem clash with different content: {path}"
            continue
        src = Image.open(path)
        out = remove(src, session=session)  # PIL in -> PIL RGBA out
        alpha = out.getchannel("A")
        alpha.save(OUT / f"{stem}.alpha.png")
        a = np.asarray(alpha)
        manifest[stem] = {
            "input": str(path),
            "input_md5": digest,
            "input_mode": src.mode,
            "size": list(alpha.size),
            "alpha_mean": round(float(a.mean()), 4),
            "alpha_md5": hashlib.md5(a.tobytes()).hexdigest(),
        }
        done[stem] = digest
        print(f"{stem}: mode={src.mode} size={alpha.size} alpha_mean={a.mean():.3f}")

    # peer-test check
    ours = np.asarray(Image.open(OUT / "anime-girl-1.alpha.png")).astype(np.int16)
    exp = np.asarray(Image.open(PEER_EXPECTED).getchannel("A")).astype(np.int16)
    d = np.abs(ours - exp)
    peer = {
        "mean_abs_diff": float(d.mean()),
        "max_abs_diff": int(d.max()),
        "pixels_differing": int((d > 0).sum()),
        "pixels": int(d.size),
    }
    print("peer-test alpha diff:", peer)
    manifest["_peer_test"] = peer
    manifest["_versions"] = {
        "rembg": rembg.__version__,
        "onnxruntime": __import__("onnxruntime").__version__,
        "numpy": np.__version__,
        "pillow": Image.__version__,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()

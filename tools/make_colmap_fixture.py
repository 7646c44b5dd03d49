#!/usr/bin/env python3
"""A small COLMAP capture for the reader tests: 8 cameras on an orbit around an
object, written as COLMAP text and binary models (the formats of COLMAP's
read_write_model.py), in a world frame that is rotated, scaled and shifted away
from the orbit's (reconstructions have arbitrary frames; labels must not care).

Writes tests/fixtures/colmap/orbit/{images/*.png, sparse/0/*.txt, sparse/0/*.bin,
truth.json}. Needs numpy and Pillow (the venv of make_parity_fixtures.py).
"""
import json
import os
import struct

import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "colmap", "orbit")
ORBIT_DEG = [0.0, 25.0, 50.0, 80.0, 120.0, 175.0, 200.0, 300.0]
PITCH_DEG = 20.0
DIST = 4.0


def look_at(eye, target, up):
    """World-to-camera rotation and translation, OpenCV axes (x right, y down, z forward)."""
    f = target - eye
    f /= np.linalg.norm(f)
    r = np.cross(f, up)
    r /= np.linalg.norm(r)
    d = np.cross(f, r)
    R = np.stack([r, d, f])
    return R, -R @ eye


def rot_to_quat(R):
    """(w, x, y, z) of a rotation matrix (Shepperd's method, w >= 0)."""
    w = np.sqrt(max(0.0, 1 + R[0, 0] + R[1, 1] + R[2, 2])) / 2
    x = np.copysign(np.sqrt(max(0.0, 1 + R[0, 0] - R[1, 1] - R[2, 2])) / 2, R[2, 1] - R[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1 - R[0, 0] + R[1, 1] - R[2, 2])) / 2, R[0, 2] - R[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1 - R[0, 0] - R[1, 1] + R[2, 2])) / 2, R[1, 0] - R[0, 1])
    return np.array([w, x, y, z])


def main():
    rng = np.random.default_rng(7)
    # A random similarity transform world' = s * Q @ world + c.
    Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(Q) < 0:
        Q[:, 0] *= -1
    s, c = 2.5, np.array([10.0, -3.0, 7.0])
    os.makedirs(os.path.join(OUT, "images"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "sparse", "0"), exist_ok=True)
    cams_txt = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]", "1 SIMPLE_RADIAL 64 48 60.0 32.0 24.0 0.01"]
    imgs_txt = ["# Image list with two lines of data per image:", "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME", "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    images_bin = []
    for i, a in enumerate(ORBIT_DEG):
        th, ph = np.radians(a), np.radians(PITCH_DEG)
        eye = DIST * np.array([np.sin(th) * np.cos(ph), np.sin(ph), np.cos(th) * np.cos(ph)])
        R, t = look_at(eye, np.zeros(3), np.array([0.0, 1.0, 0.0]))
        # Express the pose in the transformed world: x_cam = R x = R Q^T (x' - c) / s; COLMAP
        # poses are rigid, so fold the scale into the translation: x_cam * s = R Q^T x' - R Q^T c + s t.
        R2 = R @ Q.T
        t2 = s * t - R2 @ c
        q = rot_to_quat(R2)
        name = f"frame_{i:03d}.png"
        Image.new("RGB", (64, 48), (40 + 25 * i, 90, 160)).save(os.path.join(OUT, "images", name))
        imgs_txt.append(f"{i + 1} {' '.join(repr(float(v)) for v in q)} {' '.join(repr(float(v)) for v in t2)} 1 {name}")
        imgs_txt.append("32.0 24.0 -1" if i == 0 else "")
        images_bin.append((i + 1, q, t2, 1, name, [(32.0, 24.0, -1)] if i == 0 else []))
    sp = os.path.join(OUT, "sparse", "0")
    open(os.path.join(sp, "cameras.txt"), "w").write("\n".join(cams_txt) + "\n")
    open(os.path.join(sp, "images.txt"), "w").write("\n".join(imgs_txt) + "\n")
    open(os.path.join(sp, "points3D.txt"), "w").write("# 3D point list\n")
    with open(os.path.join(sp, "cameras.bin"), "wb") as f:
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<iiQQ", 1, 2, 64, 48))  # SIMPLE_RADIAL = model id 2
        f.write(struct.pack("<4d", 60.0, 32.0, 24.0, 0.01))
    with open(os.path.join(sp, "images.bin"), "wb") as f:
        f.write(struct.pack("<Q", len(images_bin)))
        for iid, q, t, cid, name, pts in images_bin:
            f.write(struct.pack("<i4d3di", iid, *q, *t, cid))
            f.write(name.encode() + b"\x00")
            f.write(struct.pack("<Q", len(pts)))
            for x, y, pid in pts:
                f.write(struct.pack("<ddq", x, y, pid))
    with open(os.path.join(sp, "points3D.bin"), "wb") as f:
        f.write(struct.pack("<Q", 0))
    json.dump({"orbit_deg": ORBIT_DEG, "pitch_deg": PITCH_DEG}, open(os.path.join(OUT, "truth.json"), "w"))
    print("wrote", OUT)


if __name__ == "__main__":
    main()

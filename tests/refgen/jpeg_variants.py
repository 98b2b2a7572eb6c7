"""JPEG variants decoded by Pillow (libjpeg-turbo): every chroma subsampling (4:4:4, 4:2:2,
4:2:0, 4:4:0, 4:1:1), baseline, optimized Huffman tables and progressive, restart markers,
sizes that are not multiples of the MCU (down to 1x1), grayscale, RGB (Adobe transform 0),
CMYK and YCCK, qualities from 10 to 100, and saturated colours.

Pillow writes most files; libjpeg-turbo's `cjpeg` (Debian's libjpeg-turbo-progs) writes the
samplings Pillow cannot. The YCCK file is a Pillow CMYK file whose Adobe marker says YCCK:
libjpeg then runs its YCCK conversion on the same data, which is what the case exercises.
Expected pixels are always Pillow's `Image.open(path).convert(mode)`.
"""
import io
import shutil
import subprocess

import numpy as np
from PIL import Image

EXACT = {"rule": "uint8 |actual - ref|", "max_abs_diff": 0}


def picture(rng, w, h, channels, saturated=False):
    """Smooth gradients with texture and noise, so every DCT frequency carries energy."""
    yy, xx = np.mgrid[0:h, 0:w]
    planes = []
    for c in range(channels):
        base = 127 + 110 * np.sin(xx / (2.5 + 1.7 * c) + yy / (4.0 + c)) * np.cos(yy / (3 + c) - xx / 11.0)
        base += rng.normal(0, 18, (h, w))
        if saturated:
            base = np.where(((xx // 3 + yy // 2 + c) % 3) == 0, 0, 255) + rng.normal(0, 4, (h, w))
        planes.append(base)
    arr = np.clip(np.stack(planes, axis=-1), 0, 255).astype(np.uint8)
    return arr[..., 0] if channels == 1 else arr


def add(b, name, data, modes, note):
    path = f"inputs/{name}.jpg"
    (b.out / path).write_bytes(data)
    im = Image.open(b.out / path)
    b.inputs.append({"file": path, "kind": "image", "mode": im.mode, "width": im.width, "height": im.height,
                     "format": "JPEG", "note": note})
    for mode in modes:
        ref = np.asarray(Image.open(b.out / path).convert(mode))
        b.save(f"{name}_decode_{mode.lower()}", ref,
               {"category": "image_decode", "input": path, "library": "Pillow",
                "function": f"Image.open(path).convert({mode!r})", "params": {"mode": mode}, "tolerance": EXACT})
    return path


def pillow_jpeg(arr, mode, **save):
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "JPEG", **save)
    return buf.getvalue()


def cjpeg(arr, *args):
    """libjpeg-turbo's cjpeg on a binary PPM/PGM of `arr`."""
    h, w = arr.shape[:2]
    header = (b"P6" if arr.ndim == 3 else b"P5") + f"\n{w} {h}\n255\n".encode()
    return subprocess.run(["cjpeg", *args], input=header + arr.tobytes(), capture_output=True, check=True).stdout


def cases(b):
    rng = b.rng
    # Subsampling x coding x odd sizes, through Pillow.
    sizes = [(97, 61), (1, 1), (2, 3), (5, 2), (17, 9), (16, 16), (33, 47)]
    for sub in ("4:4:4", "4:2:2", "4:2:0"):
        for w, h in sizes:
            arr = picture(rng, w, h, 3)
            for coding, opts in (("baseline", {}), ("optimized", {"optimize": True}), ("progressive", {"progressive": True})):
                if coding == "optimized" and (w, h) != (97, 61):
                    continue
                name = f"g_jpeg_{sub.replace(':', '')}_{coding}_{w}x{h}"
                add(b, name, pillow_jpeg(arr, "RGB", quality=85, subsampling=sub, **opts),
                    ["RGB"] if (w, h) != (97, 61) else ["RGB", "L"], f"Pillow, {sub}, {coding}")
    # Qualities: 100 (all-ones tables: large coefficients), 10 (coarse), and saturated colours
    # (clamping in the IDCT and the colour conversion).
    for quality in (100, 50, 10):
        arr = picture(rng, 64, 40, 3)
        add(b, f"g_jpeg_420_q{quality}_64x40", pillow_jpeg(arr, "RGB", quality=quality), ["RGB"], f"quality {quality}")
    arr = picture(rng, 45, 38, 3, saturated=True)
    add(b, "g_jpeg_420_saturated_45x38", pillow_jpeg(arr, "RGB", quality=95), ["RGB"], "saturated colours")
    add(b, "g_jpeg_444_saturated_45x38_progressive", pillow_jpeg(arr, "RGB", quality=100, subsampling="4:4:4", progressive=True),
        ["RGB"], "saturated colours, quality 100, progressive")
    # Restart markers (per block, per MCU row), baseline and progressive.
    arr = picture(rng, 75, 53, 3)
    add(b, "g_jpeg_420_restart_blocks1_75x53", pillow_jpeg(arr, "RGB", quality=80, restart_marker_blocks=1), ["RGB"], "DRI every MCU")
    add(b, "g_jpeg_422_restart_rows2_75x53", pillow_jpeg(arr, "RGB", quality=80, subsampling="4:2:2", restart_marker_rows=2),
        ["RGB"], "DRI every 2 MCU rows")
    add(b, "g_jpeg_420_restart_progressive_75x53",
        pillow_jpeg(arr, "RGB", quality=80, progressive=True, restart_marker_blocks=3), ["RGB"], "progressive with DRI")
    # Grayscale, baseline and progressive, odd size; decoded as L and RGB.
    gray = picture(rng, 59, 37, 1)
    add(b, "g_jpeg_gray_59x37", pillow_jpeg(gray, "L", quality=90), ["L", "RGB"], "grayscale")
    add(b, "g_jpeg_gray_progressive_59x37", pillow_jpeg(gray, "L", quality=70, progressive=True), ["L"], "grayscale progressive")
    # RGB stored without the YCbCr transform (Adobe transform 0, no JFIF).
    add(b, "g_jpeg_rgb_keep_41x29", pillow_jpeg(picture(rng, 41, 29, 3), "RGB", quality=90, keep_rgb=True),
        ["RGB"], "Adobe transform 0 (RGB)")
    # CMYK as Pillow writes it (Adobe-inverted), and the same data marked YCCK.
    cmyk = picture(rng, 38, 27, 4)
    data = pillow_jpeg(cmyk, "CMYK", quality=90)
    add(b, "g_jpeg_cmyk_38x27", data, ["RGB", "L"], "CMYK (Adobe, transform 0)")
    at = data.find(b"Adobe")
    assert at > 0 and data[at + 11] == 0, "Pillow's CMYK JPEG has an Adobe marker with transform 0"
    ycck = data[:at + 11] + b"\x02" + data[at + 12:]
    add(b, "g_jpeg_ycck_38x27", ycck, ["RGB"], "the CMYK file's Adobe transform set to 2 (YCCK)")
    # Samplings Pillow cannot write, through libjpeg-turbo's cjpeg.
    if shutil.which("cjpeg") is None:
        raise SystemExit("jpeg_variants: cjpeg not found (Debian package libjpeg-turbo-progs; scripts/setup installs it)")
    for sample, (w, h) in (("1x2", (50, 35)), ("4x1", (70, 21)), ("2x1", (3, 7)), ("1x2", (7, 3)), ("4x2", (37, 19))):
        arr = picture(rng, w, h, 3)
        for extra in ([], ["-progressive"]):
            tag = "_progressive" if extra else ""
            name = f"g_jpeg_cjpeg_{sample}{tag}_{w}x{h}"
            add(b, name, cjpeg(arr, "-quality", "85", "-sample", sample, *extra), ["RGB"], f"cjpeg -sample {sample} {' '.join(extra)}")
    # Luma and chroma both subsampled relative to a third component's factors (Y 2x2, Cb 2x1,
    # Cr 1x2): every upsampling method in one image.
    arr = picture(rng, 29, 23, 3)
    add(b, "g_jpeg_cjpeg_mixed_29x23", cjpeg(arr, "-quality", "90", "-sample", "2x2,2x1,1x2"), ["RGB"],
        "cjpeg -sample 2x2,2x1,1x2")
    add(b, "g_jpeg_cjpeg_restart1_gray_19x13", cjpeg(picture(rng, 19, 13, 1), "-quality", "75", "-restart", "1B", "-grayscale"),
        ["L"], "cjpeg -restart 1B -grayscale")

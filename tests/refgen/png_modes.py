"""Reference cases for PNG modes beyond 8-bit L/RGB/RGBA: gray+alpha (8 and 16 bits), palettes
(1, 2, 4 and 8 bits; short PLTE; tRNS shorter than, longer than and after the palette; a single
transparent entry), 1-, 2- and 4-bit gray, and tRNS colours on gray (1 to 16 bits) and RGB (8
and 16 bits).

Each input is decoded by Pillow as `Image.open(path).convert(mode)` for L, RGB and RGBA, so kiln's
`decode_image` is checked against every Pillow rule, quirks included (a 2-bit gray tRNS key is
compared with the scaled pixel, a 16-bit key with the clipped or high-byte pixel through its low
byte). Files Pillow cannot write (16-bit gray+alpha, low bit depths, odd PLTE/tRNS) come from the
small writer below.
"""
import struct
import warnings
import zlib

import numpy as np
from PIL import Image

EXACT = {"rule": "uint8 |actual - ref|", "max_abs_diff": 0}


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _pack_row(samples, depth):
    if depth == 8:
        return bytes(int(v) for v in samples)
    if depth == 16:
        return b"".join(struct.pack(">H", int(v)) for v in samples)
    per = 8 // depth
    out = bytearray()
    for i in range(0, len(samples), per):
        byte = 0
        for j, v in enumerate(samples[i:i + per]):
            byte |= int(v) << (8 - depth * (j + 1))
        out.append(byte)
    return bytes(out)


def write_png(path, samples, depth, color_type, plte=None, trns=None, trns_after_idat=None):
    """A non-interlaced PNG of `samples` ((H, W) or (H, W, C), already at `depth`), with the
    given PLTE/tRNS bytes before IDAT and an optional tRNS after it."""
    h, w = samples.shape[:2]
    raw = b"".join(b"\0" + _pack_row(row.reshape(-1), depth) for row in samples)
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0))
    if plte is not None:
        png += _chunk(b"PLTE", bytes(plte))
    if trns is not None:
        png += _chunk(b"tRNS", bytes(trns))
    png += _chunk(b"IDAT", zlib.compress(raw, 9))
    if trns_after_idat is not None:
        png += _chunk(b"tRNS", bytes(trns_after_idat))
    path.write_bytes(png + _chunk(b"IEND", b""))


def _gray16(v):
    return [v >> 8, v & 0xFF]


def cases(b):
    """Adds this family's inputs and cases to the builder `b` (see make_refdata.Builder)."""
    rng = b.rng
    h, w = 23, 37  # odd sizes: low-bit-depth rows end inside a byte
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = (127 + 120 * np.sin(xx / 4.0) * np.cos(yy / 3.0)).astype(np.int64)

    def noisy(levels):
        return np.clip(smooth * levels // 256 + rng.integers(-1, 2, (h, w)), 0, levels - 1)

    def palette(entries):
        return rng.integers(0, 256, entries * 3).astype(np.uint8).tobytes()

    inputs = []  # (name, writer, note)

    # Gray+alpha, 8-bit (Pillow writes it) and 16-bit (Pillow opens it as RGBA, high bytes).
    la8 = np.stack([noisy(256), np.clip(xx * 255 // (w - 1) + rng.integers(-9, 9, (h, w)), 0, 255)], -1)
    la8[:3, :, 1] = 0
    inputs.append(("g_png_la8_37x23", lambda p: Image.fromarray(la8.astype(np.uint8), "LA").save(p), "LA 8-bit"))
    la16 = np.stack([noisy(256) * 257 + rng.integers(0, 256, (h, w)), rng.integers(0, 65536, (h, w))], -1)
    inputs.append(("g_png_la16_37x23", lambda p: write_png(p, la16, 16, 4), "LA 16-bit"))

    # Palettes, 8-bit: full, short (with indices past its end: black), per-entry alpha shorter
    # than the palette, a single transparent entry (Pillow's int transparency), and a tRNS
    # after IDAT that is longer than the palette (Pillow still applies it).
    idx256 = noisy(256)
    inputs.append(("g_png_p8_256_37x23", lambda p: write_png(p, idx256, 8, 3, plte=palette(256)), "P, 256 entries"))
    idx_short = noisy(100)
    inputs.append(("g_png_p8_short_37x23", lambda p: write_png(p, idx_short, 8, 3, plte=palette(90)),
                   "P, 90 entries, indices up to 99"))
    idx_trns = noisy(200)
    inputs.append(("g_png_p8_trns_37x23",
                   lambda p: write_png(p, idx_trns, 8, 3, plte=palette(200), trns=rng.integers(0, 256, 120).astype(np.uint8).tobytes()),
                   "P, 200 entries, 120 alpha values"))
    idx_one = noisy(64)
    one_trns = bytes([255] * 17 + [0] + [255] * 5)
    inputs.append(("g_png_p8_trns1_37x23", lambda p: write_png(p, idx_one, 8, 3, plte=palette(64), trns=one_trns),
                   "P, entry 17 transparent"))
    idx_late = noisy(48)
    inputs.append(("g_png_p8_trns_late_37x23",
                   lambda p: write_png(p, idx_late, 8, 3, plte=palette(40), trns_after_idat=rng.integers(0, 256, 48).astype(np.uint8).tobytes()),
                   "P, 40 entries, 48 alpha values after IDAT"))
    # Low-bit palettes, with and without tRNS.
    for depth in (1, 2, 4):
        levels = 1 << depth
        idx = noisy(levels)
        pal = palette(levels)
        inputs.append((f"g_png_p{depth}_37x23", lambda p, idx=idx, pal=pal, d=depth: write_png(p, idx, d, 3, plte=pal),
                       f"P, {depth}-bit"))
        alphas = rng.integers(0, 256, max(1, levels - 1)).astype(np.uint8).tobytes()
        inputs.append((f"g_png_p{depth}_trns_37x23",
                       lambda p, idx=idx, pal=pal, d=depth, a=alphas: write_png(p, idx, d, 3, plte=pal, trns=a),
                       f"P, {depth}-bit, tRNS"))

    # Low-bit gray, with and without tRNS. The 2-bit key 1 never matches in Pillow (pixels are
    # 0, 85, 170, 255); the 4-bit key 0x33 matches the scaled level 3 (51).
    for depth, key in ((1, 1), (2, 1), (4, 0x33)):
        levels = 1 << depth
        gray = noisy(levels)
        inputs.append((f"g_png_l{depth}_37x23", lambda p, g=gray, d=depth: write_png(p, g, d, 0), f"gray {depth}-bit"))
        inputs.append((f"g_png_l{depth}_trns_37x23",
                       lambda p, g=gray, d=depth, k=key: write_png(p, g, d, 0, trns=_gray16(k)),
                       f"gray {depth}-bit, tRNS {key}"))
    # 8-bit gray tRNS 0x107 (Pillow keys on the low byte: 7), 16-bit gray keys 255 (every pixel
    # that clips to 255) and 300 (the pixels equal to 44).
    g8 = noisy(256)
    g8[::4, ::5] = 7
    inputs.append(("g_png_l8_trns_37x23", lambda p: write_png(p, g8, 8, 0, trns=_gray16(0x107)), "gray 8-bit, tRNS 0x107"))
    g16 = np.where(rng.random((h, w)) < 0.5, noisy(256), noisy(256) * 251)
    g16[1::3, ::4] = 44
    g16[::5, 1::3] = 300
    for key in (255, 300):
        inputs.append((f"g_png_i16_trns{key}_37x23", lambda p, k=key: write_png(p, g16, 16, 0, trns=_gray16(k)),
                       f"gray 16-bit, tRNS {key}"))
    # RGB tRNS, 8-bit and 16-bit (the key's low bytes against the pixel's high bytes).
    rgb8 = np.stack([noisy(256), noisy(256)[::-1], noisy(256)[:, ::-1]], -1)
    rgb8[::3, ::4] = (10, 200, 30)
    inputs.append(("g_png_rgb8_trns_37x23",
                   lambda p: write_png(p, rgb8, 8, 2, trns=_gray16(10) + _gray16(200) + _gray16(30)), "RGB 8-bit, tRNS"))
    rgb16 = rgb8 * 257 + rng.integers(0, 256, rgb8.shape)
    rgb16[1::4, ::3] = (0x0A00, 0xC8FF, 0x1E12)
    inputs.append(("g_png_rgb16_trns_37x23",
                   lambda p: write_png(p, rgb16, 16, 2, trns=_gray16(0x010A) + _gray16(0x02C8) + _gray16(0x001E)),
                   "RGB 16-bit, tRNS low bytes (10, 200, 30)"))

    for name, write, note in inputs:
        path = f"inputs/{name}.png"
        write(b.out / path)
        opened = Image.open(b.out / path)
        b.inputs.append({"file": path, "kind": "image", "mode": opened.mode, "width": w, "height": h, "format": "PNG",
                         "variant": note, "transparency": "transparency" in opened.info})
        for mode in ("L", "RGB", "RGBA"):
            with warnings.catch_warnings():
                # "Palette images with Transparency expressed in bytes should be converted to RGBA"
                warnings.simplefilter("ignore")
                ref = np.asarray(Image.open(b.out / path).convert(mode))
            b.save(f"{name}_decode_{mode.lower()}", ref,
                   {"category": "image_decode", "input": path, "library": "Pillow",
                    "function": f"Image.open(path).convert({mode!r})", "params": {"mode": mode}, "tolerance": EXACT})

#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Converts one raw RGB24 frame (as rvivid produces it) into a PNG file.

Usage: raw2png.py WIDTH HEIGHT IN.rgb OUT.png   (standard library only)
"""
import struct
import sys
import zlib


def chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def main() -> int:
    if len(sys.argv) != 5:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    width, height = int(sys.argv[1]), int(sys.argv[2])
    raw = open(sys.argv[3], "rb").read()
    stride = width * 3
    if len(raw) < stride * height:
        print(f"{sys.argv[3]}: {len(raw)} bytes, need {stride * height}", file=sys.stderr)
        return 1
    rows = b"".join(b"\0" + raw[y * stride:(y + 1) * stride] for y in range(height))
    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(rows, 9))
    png += chunk(b"IEND", b"")
    with open(sys.argv[4], "wb") as f:
        f.write(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Checks of COCO run-length encodings (RLE) before pycocotools sees them.

pycocotools trusts an RLE's counts: counts that do not add up to height × width decode past the end of the mask
(garbage or a crash deep inside C code) or leave it short, and a corrupt compressed string decodes into arbitrary
runs. ``rle_problems`` finds these in a dataset file, so the loader can name the record instead.

COCO's compressed counts string: each count is written in 5-bit groups, least significant first, one character
per group (``chr(48 + group)``), bit 0x20 of a group marking that another follows, and bit 0x10 of the last group
the sign. From the fourth count on, the string stores the difference to the count two places earlier.
"""

__all__ = ["decode_rle_counts", "rle_problems"]


def decode_rle_counts(counts):
    """A compressed RLE counts string (``str`` or ``bytes``) → list of run lengths. Raises ``ValueError`` on a
    character outside the alphabet or a string that ends inside a count."""
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    runs, value, shift = [], 0, 0
    for pos, ch in enumerate(counts):
        group = ord(ch) - 48
        if not 0 <= group < 64:
            raise ValueError(f"character {ch!r} at position {pos} is not in the RLE alphabet ('0'..'o')")
        value |= (group & 0x1F) << shift
        shift += 5
        if group & 0x20:
            continue
        if group & 0x10:  # sign of the last group
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
        value, shift = 0, 0
    if shift:
        raise ValueError("the string ends inside a count")
    return runs


def rle_problems(rle, expected_size=None):
    """Problems (messages without the record's name; the caller adds it) with one RLE dict: ``size`` [h, w] of
    non-negative integers (equal to ``expected_size`` when given), ``counts`` a list of non-negative integers or a
    compressed string, whose runs are non-negative and add up to h × w."""
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        kind = sorted(rle) if isinstance(rle, dict) else type(rle).__name__
        return [f"RLE segmentation needs 'counts' and 'size', has {kind}"]
    size = rle["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in size)):
        return [f"RLE size must be [height, width] (non-negative integers), got {size!r}"]
    if expected_size is not None and list(size) != [int(s) for s in expected_size]:
        return [f"RLE size {list(size)} differs from the image's [{expected_size[0]}, {expected_size[1]}]"]
    counts = rle["counts"]
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            return ["uncompressed RLE counts must be non-negative integers"]
        runs, kind = counts, "uncompressed"
    elif isinstance(counts, (str, bytes)):
        try:
            runs = decode_rle_counts(counts)
        except ValueError as e:
            return [f"compressed RLE counts are corrupt: {e}"]
        if any(r < 0 for r in runs):
            return ["compressed RLE counts are corrupt: they decode to a negative run"]
        kind = "compressed"
    else:
        return [f"RLE counts must be a string or a list of integers, got {type(counts).__name__}"]
    if sum(runs) != size[0] * size[1]:
        return [f"{kind} RLE counts add up to {sum(runs)} pixels, its size {size[0]}x{size[1]} has "
                f"{size[0] * size[1]}"]
    return []

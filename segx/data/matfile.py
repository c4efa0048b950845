"""A small reader (and writer) of MATLAB level-5 MAT files, enough for the WIDER FACE ground truth.

segx does not depend on scipy; the official WIDER FACE evaluation files (``wider_face_val.mat``,
``wider_{easy,medium,hard}_val.mat``) are level-5 MAT files made of cells, strings and double matrices,
which this module reads. Format: MathWorks, "MAT-File Format" (level 5: a 128-byte header, then tagged data
elements; ``miCOMPRESSED`` elements hold a zlib stream of one element).

Values come back as:

| MATLAB | Python |
|---|---|
| numeric / logical array | ``np.ndarray`` of the MATLAB shape (column-major data, as MATLAB stores it) |
| char array | ``str`` for 0 or 1 row; a list of ``str`` (one per row) otherwise |
| cell array | ``np.ndarray`` of ``dtype=object`` of the MATLAB shape |
| struct array | ``np.ndarray`` of ``dtype=object`` holding one ``dict`` per element |

Sparse, object and function-handle arrays and v7.3 (HDF5) files raise ``MatFileError``. ``save_mat`` writes
numeric arrays, strings and cells (what the tests need to write small ground-truth files).
"""
import math
import struct
import zlib

import numpy as np

__all__ = ["MatFileError", "load_mat", "save_mat"]

# data types of the element tags
_MI = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
MI_INT8, MI_UINT8, MI_INT32, MI_UINT32, MI_DOUBLE = 1, 2, 5, 6, 9
MI_UINT16, MI_MATRIX, MI_COMPRESSED, MI_UTF8, MI_UTF16, MI_UTF32 = 4, 14, 15, 16, 17, 18
# array classes
MX_CELL, MX_STRUCT, MX_OBJECT, MX_CHAR, MX_SPARSE = 1, 2, 3, 4, 5
_MX_NUMERIC = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}
_FLAG_COMPLEX, _FLAG_LOGICAL = 0x0800, 0x0200


class MatFileError(ValueError):
    """A MAT file that this reader cannot read; the message names the file."""


class _Reader:
    def __init__(self, path, endian):
        self.path = path
        self.e = endian

    def fail(self, msg):
        raise MatFileError(f"{self.path}: {msg}")

    def element(self, buf, pos):
        """(type, payload bytes, position of the next element) of the element at ``pos``."""
        if pos + 8 > len(buf):
            self.fail(f"truncated: data element tag at byte {pos} runs past the end ({len(buf)} bytes)")
        mtype, nbytes = struct.unpack_from(self.e + "II", buf, pos)
        if mtype >> 16:  # small data element: 2-byte size, 2-byte type, up to 4 bytes of data in the tag
            nbytes, mtype = mtype >> 16, mtype & 0xFFFF
            if nbytes > 4:
                self.fail(f"corrupt: small data element at byte {pos} claims {nbytes} bytes")
            return mtype, bytes(buf[pos + 4: pos + 4 + nbytes]), pos + 8
        end = pos + 8 + nbytes
        if end > len(buf):
            self.fail(f"truncated: data element at byte {pos} needs {nbytes} bytes, {len(buf) - pos - 8} left")
        padded = end if mtype == MI_COMPRESSED else pos + 8 + (nbytes + 7) // 8 * 8
        return mtype, bytes(buf[pos + 8: end]), padded

    def numbers(self, mtype, payload):
        if mtype not in _MI:
            self.fail(f"unsupported numeric data type {mtype}")
        return np.frombuffer(payload, dtype=np.dtype(_MI[mtype]).newbyteorder(self.e))

    def variable(self, buf, pos, wanted=None):
        """(name, value, next position) of the top-level variable at ``pos``; (None, None, next) when it is not a
        variable or its name is not in ``wanted``."""
        mtype, payload, nxt = self.element(buf, pos)
        if mtype == MI_COMPRESSED:
            if wanted is not None:  # the name is near the start: decompress only that much to skip the rest
                try:
                    head = zlib.decompressobj().decompress(payload, 1024)
                except zlib.error as e:
                    self.fail(f"corrupt compressed variable at byte {pos}: {e}")
                name = self.peek_name(head)
                if name is not None and name not in wanted:
                    return None, None, nxt
            try:
                payload = zlib.decompress(payload)
            except zlib.error as e:
                self.fail(f"corrupt compressed variable at byte {pos}: {e}")
            mtype, payload, _ = self.element(payload, 0)
        if mtype != MI_MATRIX:
            return None, None, nxt  # e.g. a subsystem block: not a variable
        if wanted is not None and self.peek_name(payload, tagged=False) not in wanted:
            return None, None, nxt
        name, value = self.matrix(payload)
        return name, value, nxt

    def peek_name(self, buf, tagged=True):
        """The name of the ``miMATRIX`` element at the start of ``buf`` (its contents when not ``tagged``), or None
        when ``buf`` is too short to tell."""
        try:
            pos = 8 if tagged else 0
            for _ in range(2):  # array flags, dimensions
                pos = self.element(buf, pos)[2]
            return self.element(buf, pos)[1].decode("latin-1")
        except (MatFileError, struct.error):
            return None

    def matrix(self, payload):
        """(name, value) of the contents of an ``miMATRIX`` element."""
        if not payload:
            return "", np.zeros((0, 0))
        _, flags, pos = self.element(payload, 0)
        flags = struct.unpack_from(self.e + "I", flags)[0]
        cls = flags & 0xFF
        mtype, dims, pos = self.element(payload, pos)
        shape = tuple(int(d) for d in self.numbers(mtype, dims))
        _, name, pos = self.element(payload, pos)
        name = name.decode("latin-1")
        count = math.prod(shape) if shape else 0
        if cls in _MX_NUMERIC:
            mtype, data, pos = self.element(payload, pos)
            values = self.numbers(mtype, data)
            if flags & _FLAG_COMPLEX:
                mtype, imag, pos = self.element(payload, pos)
                values = values + 1j * self.numbers(mtype, imag)
            elif flags & _FLAG_LOGICAL:
                values = values.astype(bool)
            else:
                values = values.astype(np.dtype(_MX_NUMERIC[cls]))
            if values.size != count:
                self.fail(f"variable {name!r}: {values.size} values for shape {shape}")
            return name, values.reshape(shape, order="F")
        if cls == MX_CHAR:
            mtype, data, pos = self.element(payload, pos)
            if mtype == MI_UTF8:
                text = data.decode("utf-8")
                codes = np.array([ord(c) for c in text], np.uint32)
            elif mtype == MI_UTF16:
                codes = np.array([ord(c) for c in data.decode("utf-16-le" if self.e == "<" else "utf-16-be")])
            else:
                codes = self.numbers(mtype, data)
            if codes.size != count:
                self.fail(f"variable {name!r}: {codes.size} characters for shape {shape}")
            if not count:
                return name, ""
            grid = codes.reshape(shape, order="F")
            rows = ["".join(chr(int(c)) for c in row) for row in grid.reshape(grid.shape[0], -1)]
            return name, (rows[0] if len(rows) == 1 else rows)
        if cls == MX_CELL:
            cells = np.empty(count, dtype=object)
            for i in range(count):
                mtype, data, pos = self.element(payload, pos)
                if mtype != MI_MATRIX:
                    self.fail(f"variable {name!r}: cell {i} is not a matrix element (type {mtype})")
                cells[i] = self.matrix(data)[1]
            return name, cells.reshape(shape, order="F")
        if cls == MX_STRUCT:
            mtype, data, pos = self.element(payload, pos)
            name_len = int(self.numbers(mtype, data)[0])
            _, data, pos = self.element(payload, pos)
            fields = [data[i: i + name_len].split(b"\0", 1)[0].decode("latin-1")
                      for i in range(0, len(data), name_len)] if name_len else []
            elems = np.empty(count, dtype=object)
            for i in range(count):
                rec = {}
                for f in fields:
                    mtype, data, pos = self.element(payload, pos)
                    rec[f] = self.matrix(data)[1]
                elems[i] = rec
            return name, elems.reshape(shape, order="F")
        kind = {MX_OBJECT: "object", MX_SPARSE: "sparse"}.get(cls, f"class {cls}")
        self.fail(f"variable {name!r}: {kind} arrays are not supported")


def load_mat(path, variables=None):
    """Reads a level-5 MAT file; returns ``{variable name: value}`` (see the module doc for the types), only
    for the names in ``variables`` when given (the others are skipped without being decoded)."""
    path = str(path)
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 128:
        raise MatFileError(f"{path}: {len(buf)} bytes: not a MAT file (the header alone is 128 bytes)")
    if buf[:10] == b"MATLAB 7.3":
        raise MatFileError(f"{path}: a v7.3 (HDF5) MAT file; re-save it with MATLAB's -v7 option")
    endian = {b"IM": "<", b"MI": ">"}.get(buf[126:128])
    if not buf.startswith(b"MATLAB 5.0") or endian is None:
        raise MatFileError(f"{path}: not a level-5 MAT file (header {buf[:20]!r})")
    reader = _Reader(path, endian)
    wanted = None if variables is None else set(variables)
    out, pos = {}, 128
    while pos < len(buf):
        name, value, pos = reader.variable(buf, pos, wanted)
        if name:
            out[name] = value
    return out


# ---------------------------------------------------------------------------------------------------- writer
def _tag(mtype, payload):
    if len(payload) <= 4 and mtype != MI_MATRIX:  # small data element
        return struct.pack("<HH", mtype, len(payload)) + payload.ljust(4, b"\0")
    return struct.pack("<II", mtype, len(payload)) + payload + b"\0" * (-len(payload) % 8)


_WRITE_CLASS = {"f8": (6, MI_DOUBLE), "f4": (7, 7), "i1": (8, MI_INT8), "u1": (9, MI_UINT8), "i2": (10, 3),
                "u2": (11, MI_UINT16), "i4": (12, MI_INT32), "u4": (13, MI_UINT32), "i8": (14, 12), "u8": (15, 13)}


def _matrix(name, value):
    def header(cls, shape, flags=0):
        return (_tag(MI_UINT32, struct.pack("<II", cls | flags, 0))
                + _tag(MI_INT32, np.asarray(shape, "<i4").tobytes()) + _tag(MI_INT8, name.encode("latin-1")))

    if isinstance(value, str):
        codes = np.array([ord(c) for c in value], "<u2")
        body = header(MX_CHAR, (1 if value else 0, len(value))) + _tag(MI_UINT16, codes.tobytes())
    elif isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.dtype == object):
        cells = np.empty(len(value), dtype=object) if not isinstance(value, np.ndarray) else value
        if not isinstance(value, np.ndarray):
            cells[:] = list(value)
            cells = cells.reshape(-1, 1)  # a list is a column cell, as the WIDER FACE files hold them
        body = header(MX_CELL, cells.shape) + b"".join(_matrix("", v) for v in cells.flatten(order="F"))
    else:
        arr = np.asarray(value)
        if arr.ndim < 2:
            arr = arr.reshape(1, -1)  # scalars and vectors are rows, as MATLAB writes them
        if arr.dtype == bool:
            body = header(9, arr.shape, _FLAG_LOGICAL) + _tag(MI_UINT8, arr.astype("u1").tobytes(order="F"))
        else:
            key = arr.dtype.str[1:]
            if key not in _WRITE_CLASS:
                raise TypeError(f"save_mat: cannot write {name or 'a cell'} of dtype {arr.dtype}")
            cls, mtype = _WRITE_CLASS[key]
            body = header(cls, arr.shape) + _tag(mtype, arr.astype("<" + key).tobytes(order="F"))
    return struct.pack("<II", MI_MATRIX, len(body)) + body


def save_mat(path, variables, compress=True):
    """Writes ``{name: value}`` as a level-5 MAT file (numeric/bool arrays, ``str``, cells as object arrays or
    lists); ``compress`` wraps each variable in a zlib ``miCOMPRESSED`` element, as MATLAB does by default."""
    text = b"MATLAB 5.0 MAT-file, written by segx.data.matfile"
    out = [text.ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"]
    for name, value in variables.items():
        element = _matrix(name, value)
        if compress:
            packed = zlib.compress(element)
            element = struct.pack("<II", MI_COMPRESSED, len(packed)) + packed
        out.append(element)
    with open(path, "wb") as f:
        f.write(b"".join(out))

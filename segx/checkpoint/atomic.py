"""Checkpoints written atomically, and loads that name a truncated or corrupt file.

Saving: to a temporary file in the same folder, fsync'd, then renamed over the target. A run killed while
saving leaves the previous ``model_*.pth`` and ``last_checkpoint`` intact, so ``--resume`` continues from the
last complete checkpoint.

Loading (``CheckedDetectionCheckpointer``, used for ``MODEL.WEIGHTS`` in training, ``--eval-only`` and export):
a torch zip checkpoint is checked first (its end-of-archive record and every member's CRC, which also catches
damage that ``torch.load`` would load silently); a load that fails on a truncated, empty, corrupt or non-checkpoint
file raises ``CorruptCheckpointError`` naming the file and its size instead of torch's bare
``PytorchStreamReader failed reading zip archive`` / ``Ran out of input``.
"""
import os
import pickle
import tempfile
import zipfile

import torch
from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["atomic_torch_save", "atomic_write_text", "AtomicDetectionCheckpointer", "CheckedDetectionCheckpointer",
           "CorruptCheckpointError", "checkpoint_file_problem"]

_ZIP_MAGIC = b"PK\x03\x04"


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file that is truncated, corrupt or not a checkpoint; the message names the file."""


def checkpoint_file_problem(path):
    """Why ``path`` cannot be a complete checkpoint (a phrase), or None. Checks what can be checked without
    loading: an empty file, and for torch's zip format the archive's end record and each member's CRC."""
    size = os.path.getsize(path)
    if size == 0:
        return "is empty (0 bytes): truncated, or its writing never finished"
    with open(path, "rb") as f:
        head = f.read(4)
    if head != _ZIP_MAGIC:
        return None  # pickle-based formats (.pkl, torch's legacy format): only loading tells
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        return f"is truncated or corrupt: an incomplete torch zip archive ({size} bytes; {e})"
    if bad is not None:
        return f"is corrupt: its member {bad!r} fails the CRC check ({size} bytes)"
    return None


def _checked_load(path, load):
    problem = checkpoint_file_problem(path)
    if problem:
        raise CorruptCheckpointError(f"checkpoint {path} {problem}")
    try:
        return load(path)
    except Exception as e:
        with open(path, "rb") as f:
            head = f.read(4)
        message = str(e).splitlines()[0] if str(e) else ""
        if head[:1] != b"\x80" and head != _ZIP_MAGIC:
            what = f"is not a checkpoint (neither a torch zip archive nor a pickle; it starts with {head!r})"
        elif "Weights only load failed" in str(e) and "EOF" not in str(e):
            raise  # a readable file holding objects torch.load refuses: not a damaged one
        elif isinstance(e, (EOFError, pickle.UnpicklingError, RuntimeError, OSError, ValueError)):
            what = "is truncated or corrupt"
        else:
            raise
        raise CorruptCheckpointError(
            f"checkpoint {path} ({os.path.getsize(path)} bytes) {what}: {type(e).__name__}: {message}"
        ) from e


def _atomic_write(path, write_fn):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_torch_save(obj, path):
    """``torch.save(obj, path)`` that never leaves a partial file at ``path``."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path, text):
    _atomic_write(path, lambda f: f.write(text.encode()))


class CheckedDetectionCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose loads raise ``CorruptCheckpointError`` naming a truncated or corrupt file."""

    def _load_file(self, filename):
        return _checked_load(filename, super()._load_file)


class AtomicDetectionCheckpointer(CheckedDetectionCheckpointer):
    """``CheckedDetectionCheckpointer`` whose ``save`` and ``tag_last_checkpoint`` are atomic (local paths only)."""

    def save(self, name, **kwargs):
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_torch_save(data, save_file)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

from .atomic import (  # noqa: F401
    AtomicDetectionCheckpointer,
    CheckedDetectionCheckpointer,
    CorruptCheckpointError,
    atomic_torch_save,
)

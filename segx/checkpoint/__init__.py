from .atomic import AtomicDetectionCheckpointer, atomic_torch_save  # noqa: F401

"""segx models: importing this package registers the backbones and meta-architectures."""
from segx.modeling import backbone, meta_arch  # noqa: F401

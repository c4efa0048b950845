from .defaults import add_segx_config  # noqa: F401
from .renames import RENAMED_KEYS  # noqa: F401

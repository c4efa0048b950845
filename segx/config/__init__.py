from .defaults import add_segx_config  # noqa: F401

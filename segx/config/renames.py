"""Config keys renamed by segx: a user's YAML (or command-line override) with an old key gets an error that
names the new key (yacs's ``register_renamed_key``), instead of detectron2's bare "Non-existent config key".

Each architecture's ``segx/config/<arch>.py`` lists its renames in a module-level ``RENAMED_KEYS``
(old full key → new full key); ``add_segx_config`` registers them all. ``RENAMED_KEYS`` here is the union.
"""
__all__ = ["RENAMED_KEYS", "register_renamed_keys"]

RENAMED_KEYS = {}


def register_renamed_keys(cfg, renamed):
    """Registers ``{old: new}`` on ``cfg`` (the root node) and in the union ``RENAMED_KEYS``."""
    for old, new in renamed.items():
        RENAMED_KEYS[old] = new
        if not cfg.key_is_renamed(old):
            cfg.register_renamed_key(old, new, message="renamed by segx, see the model card in projects/")
    return cfg

"""CenterNet: objects as points (Zhou et al. 2019)."""

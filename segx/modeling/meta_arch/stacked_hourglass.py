"""Stacked Hourglass landmarks (Newell et al. 2016)."""

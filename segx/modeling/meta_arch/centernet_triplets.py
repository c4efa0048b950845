"""CenterNet: keypoint triplets (Duan et al. 2019)."""

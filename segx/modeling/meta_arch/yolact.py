"""YOLACT / YOLACT++ (Bolya et al. 2019)."""

"""RetinaFace (Deng et al. 2019)."""

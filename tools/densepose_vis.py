#!/usr/bin/env python
"""Draw DensePose predictions (IUV overlays, U, V, texture transfer) and annotated points as PNG files."""
from segx.engine.densepose_vis import cli

if __name__ == "__main__":
    cli()

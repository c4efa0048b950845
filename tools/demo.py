#!/usr/bin/env python
"""`make demo`: train the Mask R-CNN baseline briefly on the embedded shapes, evaluate, draw predictions."""
from segx.engine.demo import cli

if __name__ == "__main__":
    cli()

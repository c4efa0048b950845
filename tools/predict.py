#!/usr/bin/env python
"""Predict with a trained model on images, folders, videos and cameras; draw every output (see segx/engine/predict.py).

    python tools/predict.py --config-file CONFIG --weights model_final.pth --input a.jpg photos/ clip.mp4 0 \
        --output out/ [--json] [--batch-size 4]
"""
import sys

from segx.engine.predict import cli

if __name__ == "__main__":
    sys.exit(cli())

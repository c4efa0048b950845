#!/usr/bin/env python
"""Export a segx / detectron2 model to TorchScript and ONNX and check both against eager (see segx/export)."""
from segx.export.export_model import cli

if __name__ == "__main__":
    cli()

"""Records ``tests/golden/goldens.pt``: per case the old parameter names/shapes, the state-dict digest, the
stored inputs, the inference outputs and one training step's losses.

Run once, before the refactor (issue 12): ``.venv/bin/python tests/golden/record.py``. The file it wrote is
committed; ``tests/test_golden.py`` compares today's code against it. Re-running it after the refactor would
record the new parameter names, so don't, unless a deliberate behaviour change is being re-baselined.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import segx  # noqa: F401,E402
from detectron2.modeling import build_model  # noqa: E402

from golden.cases import (  # noqa: E402
    CASES,
    GOLDEN_FILE,
    golden_state_dict,
    make_cfg,
    make_inputs,
    run_model,
    seed_all,
    state_dict_digest,
)


def record(names):
    result = {}
    for name in names:
        cfg = make_cfg(name)
        seed_all(0)
        model = build_model(cfg)
        names_shapes = [(k, tuple(v.shape), v.dtype) for k, v in model.state_dict().items()]
        state = golden_state_dict(names_shapes)
        model.load_state_dict(state)
        train_inputs, eval_inputs = make_inputs(name, cfg)
        outputs, losses = run_model(model, train_inputs, eval_inputs)
        result[name] = {
            "names_shapes": names_shapes, "digest": state_dict_digest(state), "train_inputs": train_inputs,
            "eval_inputs": eval_inputs, "outputs": outputs, "losses": losses,
        }
        print(f"{name}: {len(names_shapes)} tensors, {len(outputs)} outputs, losses "
              + ", ".join(f"{k}={v:.4f}" for k, v in losses.items()), flush=True)
    return result


if __name__ == "__main__":
    names = sys.argv[1:] or list(CASES)
    torch.save(record(names), GOLDEN_FILE)
    print(f"wrote {GOLDEN_FILE} ({os.path.getsize(GOLDEN_FILE) / 1e6:.1f} MB)")

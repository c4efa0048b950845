#!/usr/bin/env python
"""Side-by-side check of segx's YOLACT against the official code (dbolya/yolact), on the CPU, on one image.

    git clone https://github.com/dbolya/yolact output/official/yolact      # output/ is git-ignored
    .venv/bin/python scripts/compare_yolact_official.py --official output/official/yolact \\
        --image path/to/image.jpg [--plus] [--depth 50|101] [--score-thresh 0.05] [--seed 0] [KEY VALUE ...]

What it does:

1. imports the official ``yolact.py`` (``Yolact``), ``FastBaseTransform`` and ``postprocess`` from the checkout,
   with the official config (``yolact_resnet50_config``, ``yolact_base_config`` for ``--depth 101``,
   ``yolact_plus_resnet50_config`` / ``yolact_plus_base_config`` with ``--plus``) and Fast NMS
   (``eval.py``'s default). CPU stand-ins, nothing else changed: ``torch.cuda.current_device`` (called at import)
   returns 0, ``Tensor.cuda`` returns the tensor (``FastBaseTransform`` moves its mean/std with it), and for
   ``--plus`` a ``dcn_v2.DCN`` written here on ``torchvision.ops.deform_conv2d`` (same parameters and forward:
   ``conv_offset_mask`` → offsets + sigmoid mask) replaces the CUDA-only DCNv2 extension;
2. fills the official network with random weights (seeded; per-tensor scales so that activations stay finite
   and detections vary), adds keys that ``Yolact.load_weights`` drops for backward compatibility
   (``fpn.downsample_layers.2.*``, ``backbone.layer1.*``), saves that file and loads it with ``load_weights``;
3. official path: ``cv2.imread`` → ``FastBaseTransform`` (one resize to 550², normalise, BGR → RGB) → ``Yolact``
   (network + ``Detect``) → ``postprocess(w, h)`` (masks upsampled, boxes sanitised and cast to integers);
4. segx path: the same file converted by ``tools/convert_yolact_to_d2.py``'s function, run through
   detectron2's ``DefaultPredictor`` on the same ``cv2.imread`` image and through ``YolactMapper`` + model
   (the Trainer / evaluation path);
5. prints, per path, the network-input difference, the detection count, and how many detections agree (same
   rank, class, integer box; score and mask score within 1e-4 relative; mask pixel disagreement).

Exit code 0 when every detection agrees on both segx paths.
"""
import argparse
import math
import os
import sys
import types

import torch
from torch import nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dcn_standin():
    """A ``dcn_v2`` module whose ``DCN`` has the official parameters (``weight``, ``bias``, ``conv_offset_mask``)
    and computes the modulated deformable conv with torchvision."""
    from torchvision.ops import deform_conv2d

    class DCN(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation=1, deformable_groups=1):
            super().__init__()
            k = kernel_size if isinstance(kernel_size, tuple) else (kernel_size, kernel_size)
            self.stride, self.padding, self.dilation = stride, padding, dilation
            self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *k))
            self.bias = nn.Parameter(torch.zeros(out_channels))
            bound = 1 / math.sqrt(in_channels * k[0] * k[1])
            nn.init.uniform_(self.weight, -bound, bound)
            self.conv_offset_mask = nn.Conv2d(in_channels, deformable_groups * 3 * k[0] * k[1], k, stride, padding)

        def forward(self, x):
            o1, o2, m = torch.chunk(self.conv_offset_mask(x), 3, dim=1)
            return deform_conv2d(x, torch.cat((o1, o2), dim=1), self.weight, self.bias, stride=self.stride,
                                 padding=self.padding, dilation=self.dilation, mask=torch.sigmoid(m))

    mod = types.ModuleType("dcn_v2")
    mod.DCN = DCN
    return mod


OFFICIAL_CONFIGS = {(50, False): "yolact_resnet50_config", (101, False): "yolact_base_config",
                    (50, True): "yolact_plus_resnet50_config", (101, True): "yolact_plus_base_config"}


def import_official(path, plus, depth=50):
    path = os.path.abspath(path)
    if not os.path.isfile(os.path.join(path, "yolact.py")):
        raise SystemExit(f"--official {path}: no yolact.py there (a dbolya/yolact checkout is needed)")
    sys.path.insert(0, path)
    torch.cuda.current_device = lambda: 0
    torch.Tensor.cuda = lambda self, *a, **k: self
    if plus:
        sys.modules["dcn_v2"] = _dcn_standin()
    from data import cfg, set_cfg  # noqa: E402  (the official package)

    set_cfg(OFFICIAL_CONFIGS[depth, plus])
    from layers.output_utils import postprocess
    from utils.augmentations import FastBaseTransform
    from yolact import Yolact

    return cfg, Yolact, FastBaseTransform, postprocess


def random_state(state, seed):
    """Seeded random weights for an official state dict (fan-in scaled convs, BN near identity with its
    running statistics in a sane range, small DCN offsets, box deltas kept moderate)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        if not v.dtype.is_floating_point:
            out[k] = v.clone()
            continue
        if k.endswith("running_var"):
            t = torch.rand(v.shape, generator=g) * 0.5 + 0.75
        elif k.endswith("running_mean"):
            t = torch.randn(v.shape, generator=g) * 0.1
        elif v.dim() >= 2:
            t = torch.randn(v.shape, generator=g) * (1.0 / max(1, v[0].numel())) ** 0.5
            if "conv_offset_mask" in k:
                t = t * 0.1
            if "bbox_layer" in k:
                t = t * 0.5
            if "conf_layer" in k:
                t = t * 4.0  # spread the class scores
        elif k.endswith("weight"):
            t = 1 + 0.1 * torch.randn(v.shape, generator=g)
        else:
            t = 0.1 * torch.randn(v.shape, generator=g)
        out[k] = t.to(v.dtype)
    return out


def segx_model(config, weights_state, score_thresh, opts=()):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from segx.checkpoint.yolact import convert_official_state_dict
    from segx.config import add_segx_config

    cfg = get_cfg()
    add_segx_config(cfg)
    cfg.merge_from_file(config)
    cfg.merge_from_list(["MODEL.YOLACT.SCORE_THRESH_TEST", score_thresh, *opts])
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    model = build_model(cfg).eval()
    model.load_state_dict(convert_official_state_dict(weights_state, model.state_dict(),
                                                      len(cfg.MODEL.YOLACT.FPN.IN_FEATURES)))
    return cfg, model


def _tie_order(scores, classes, boxes):
    """Indices sorting by descending score, ties (exactly equal scores) by class then box corners: detections
    with equal scores come out of sort/topk in an implementation-defined order (CPU and GPU differ too), so
    both sides are put in this order before comparing rank by rank."""
    keys = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), int(classes[i]),
                                                     *[float(v) for v in boxes[i]]))
    return torch.tensor(keys, dtype=torch.long)


def compare(name, official, inst, plus):
    """official: (classes, scores or [box, mask], boxes long, masks float); inst: segx Instances."""
    classes, scores, boxes, masks = official
    box_scores, mask_scores = (scores if isinstance(scores, list) else (scores, scores))
    ties = int(len(box_scores) - len(set(box_scores.tolist())))
    raw_order = len(inst) == len(classes) and torch.equal(inst.pred_classes, classes) and \
        torch.equal(inst.pred_boxes.tensor, boxes.float()) and torch.equal(inst.scores, box_scores)
    o = _tie_order(box_scores, classes, boxes)
    classes, box_scores, mask_scores, boxes, masks = classes[o], box_scores[o], mask_scores[o], boxes[o], masks[o]
    inst = inst[_tie_order(inst.scores, inst.pred_classes, inst.pred_boxes.tensor)]
    n_off, n = int(classes.shape[0]), len(inst)
    m = min(n_off, n)
    ours_mask_scores = inst.mask_scores if inst.has("mask_scores") else inst.scores
    same_cls = (inst.pred_classes[:m] == classes[:m])
    same_box = (inst.pred_boxes.tensor[:m] == boxes[:m].float()).all(dim=1)
    box_off = (inst.pred_boxes.tensor[:m] - boxes[:m].float()).abs().amax(dim=1)
    rel = lambda a, b: ((a - b).abs() / b.abs().clamp(min=1e-12))  # noqa: E731
    same_score = rel(inst.scores[:m], box_scores[:m]) <= 1e-4
    same_mscore = rel(ours_mask_scores[:m], mask_scores[:m]) <= 1e-4
    diff_px = (inst.pred_masks[:m] != masks[:m].bool()).flatten(1).sum(dim=1)
    agree = same_cls & same_box & same_score & same_mscore & (diff_px == 0)
    print(f"  {name}: {n} detections (official {n_off}, {ties} of them tied in score with another); agreeing in "
          f"rank (ties ordered by class and box), class, integer box, score"
          f"{', mask score' if plus else ''} and every mask pixel: {int(agree.sum())}/{max(n, n_off)}")
    print(f"    class mismatches {int((~same_cls).sum())}, boxes differing {int((~same_box).sum())} "
          f"(max {float(box_off.max()) if m else 0:.0f} px), score max rel. diff "
          f"{float(rel(inst.scores[:m], box_scores[:m]).max()) if m else 0:.2e}"
          + (f", mask-score max rel. diff {float(rel(ours_mask_scores[:m], mask_scores[:m]).max()):.2e}"
             if plus and m else "")
          + f", masks with differing pixels {int((diff_px > 0).sum())} (max {int(diff_px.max()) if m else 0} px of "
          f"{masks.shape[-2] * masks.shape[-1]})")
    print(f"    same order as the official output without reordering ties: {'yes' if raw_order else 'no'}")
    if os.environ.get("SEGX_PARITY_DEBUG"):
        for i in (~agree).nonzero()[:, 0].tolist()[:8]:
            print("     ", i, classes[i].item(), boxes[i].tolist(), inst.pred_boxes.tensor[i].tolist(),
                  float(mask_scores[i]), float(ours_mask_scores[i]))
    return bool(n == n_off and agree.all())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", required=True, help="dbolya/yolact checkout")
    p.add_argument("--image", required=True)
    p.add_argument("--plus", action="store_true", help="YOLACT++ (DCN stand-in, mask re-scoring)")
    p.add_argument("--depth", type=int, default=50, choices=(50, 101), help="ResNet depth")
    p.add_argument("--score-thresh", type=float, default=0.05, help="both sides' conf threshold (official 0.05)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default=os.path.join(REPO, "output", "yolact_official_parity"))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="segx config overrides KEY VALUE (e.g. to see what an "
                   "option changes)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import cv2

    ocfg, Yolact, FastBaseTransform, postprocess = import_official(args.official, args.plus, args.depth)
    import segx  # noqa: F401  (after the official packages: their top-level names are data, layers, utils)
    from detectron2.engine import DefaultPredictor

    from segx.data.mappers.yolact import YolactMapper

    ocfg.nms_conf_thresh = args.score_thresh
    ocfg.mask_proto_debug = False  # eval.py's default (set by its evaluate())
    torch.manual_seed(args.seed)
    net = Yolact()
    net.eval()
    net.detect.use_fast_nms, net.detect.use_cross_class_nms = True, False  # eval.py's defaults
    state = random_state(net.state_dict(), args.seed)
    legacy = {"fpn.downsample_layers.2.weight": torch.randn(256, 256, 3, 3) * 0.01,
              "fpn.downsample_layers.2.bias": torch.zeros(256),
              "backbone.layer1.0.conv1.weight": torch.randn(64, 64, 1, 1)}
    os.makedirs(args.work_dir, exist_ok=True)
    variant = f"{'plus_' if args.plus else ''}r{args.depth}"
    path = os.path.join(args.work_dir, f"official_random_{variant}_seed{args.seed}.pth")
    torch.save({**state, **legacy}, path)
    net.load_weights(path)  # the official loader drops the legacy keys

    frame_np = cv2.imread(args.image)
    if frame_np is None:
        raise SystemExit(f"--image {args.image}: cannot read it")
    h, w = frame_np.shape[:2]
    with torch.no_grad():
        batch = FastBaseTransform()(torch.from_numpy(frame_np).float().unsqueeze(0))
        official = postprocess(net(batch), w, h, crop_masks=True, score_threshold=0)
    print(f"image {args.image} ({w}x{h}), official {'YOLACT++' if args.plus else 'YOLACT'} R-{args.depth}, "
          "random weights "
          f"seed {args.seed}, conf threshold {args.score_thresh}")

    from segx.checkpoint.yolact import load_official_checkpoint

    config = os.path.join(REPO, "configs", "YOLACT",
                          f"yolact{'_plus' if args.plus else ''}_R_{args.depth}_FPN_550.yaml")
    cfg, model = segx_model(config, load_official_checkpoint(path), args.score_thresh, args.opts)
    captured = []
    extract = model.extract_features
    model.extract_features = lambda images, *a, **k: captured.append(images.tensor) or extract(images, *a, **k)
    ok = True
    predictor = DefaultPredictor(cfg)
    predictor.model = model
    with torch.no_grad():
        via_predictor = predictor(frame_np)["instances"]
        mapped = YolactMapper(cfg, is_train=False)({"file_name": args.image, "height": h, "width": w})
        via_mapper = model([mapped])[0]["instances"]
    for name, inst, x in (("DefaultPredictor", via_predictor, captured[0]), ("YolactMapper", via_mapper, captured[1])):
        print(f"  {name}: network input max |diff| to the official one: {float((x - batch).abs().max()):.2e}")
        ok &= compare(name, official, inst, args.plus)
    print("AGREE" if ok else "DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

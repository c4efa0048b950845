"""How many detections RetinaFace's two NMS conventions keep differently, on faces of a given size range.

    python benchmarks/retinaface_nms.py --weights output/retinaface_nms_study/model_final.pth \
        --sizes 42 64 96 128 156

Runs the model once per image and test size (segx_faces_val resized so its shortest edge is each ``--sizes`` entry;
the faces are 12–64 px wide at 128, so 42…156 gives faces of about 4–78 px), then decodes the same raw outputs
twice: NMS with the official +1-pixel IoU (``NMS_MODE official``, py_cpu_nms) and with the continuous IoU
(``torchvision``). Prints, per size, the detections each keeps, how many are kept by one and not the other (as a
share of the official set) and the same count among detections scoring ≥ 0.5.
"""
import argparse
import os

import torch

from common import dataset_images
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.checkpoint import DetectionCheckpointer

from segx.config import add_segx_config
from segx.modeling.retinaface import decode_faces

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rows(inst):
    return {tuple(r) for r in torch.cat([inst.pred_boxes.tensor, inst.scores[:, None]], 1).tolist()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/RetinaFace/retinaface_mnet025_synthetic.yaml")
    p.add_argument("--weights", required=True)
    p.add_argument("--dataset", default="segx_faces_val")
    p.add_argument("--num-images", type=int, default=100)
    p.add_argument("--sizes", type=int, nargs="+", default=[42, 64, 96, 128, 156])
    args = p.parse_args(argv)
    cfg = get_cfg()
    add_segx_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, args.config))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(args.weights)
    images = dataset_images(args.dataset, args.num_images)
    limits = dict(model.test_limits)
    print(f"{len(images)} images of {args.dataset}; score > {limits['score_thresh']}, top {limits['topk_candidates']}, "
          f"NMS IoU {limits['nms_thresh']}, keep {limits['max_detections']}")
    print("| shortest edge | faces (px, approx.) | kept, official | kept, torchvision | kept by one only | share of "
          "official | of those, score ≥ 0.5 |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    total = [0, 0, 0, 0]
    for size in args.sizes:
        kept_off = kept_tv = differ = differ_hi = 0
        for img in images:
            tf = T.ResizeShortestEdge([size, size], 10 * size).get_transform(img)
            x = torch.as_tensor(tf.apply_image(img).astype("float32").transpose(2, 0, 1))
            with torch.no_grad():
                inputs = [{"image": x}]
                images_ = model.preprocess_image(inputs)
                pr = model.predict(model.extract_features(images_, inputs), images_)
                res = {}
                for mode in ("official", "torchvision"):
                    res[mode] = decode_faces(pr["logits"], pr["box_deltas"], pr["landmark_deltas"], pr["priors"],
                                             images_.image_sizes, variances=model.variances,
                                             scale_clamp=model.scale_clamp, **dict(limits, nms_mode=mode))[0]
            a, b = _rows(res["official"]), _rows(res["torchvision"])
            kept_off += len(a)
            kept_tv += len(b)
            only = a ^ b
            differ += len(only)
            differ_hi += sum(1 for r in only if r[4] >= 0.5)
        scale = size / 128
        print(f"| {size} | {12 * scale:.0f}–{64 * scale:.0f} | {kept_off} | {kept_tv} | {differ} | "
              f"{100 * differ / max(kept_off, 1):.1f} % | {differ_hi} |")
        for i, v in enumerate((kept_off, kept_tv, differ, differ_hi)):
            total[i] += v
    print(f"| all | | {total[0]} | {total[1]} | {total[2]} | {100 * total[2] / max(total[0], 1):.1f} % | {total[3]} |")


if __name__ == "__main__":
    main()

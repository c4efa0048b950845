"""Drawing DensePose: IUV overlays, a UV texture transfer onto the people, annotated points; PNG files.

    python tools/densepose_vis.py --config-file configs/DensePose/densepose_rcnn_R_18_FPN_synthetic.yaml \\
        --dataset segx_densepose_val --num-images 4 --output output/densepose_vis \\
        MODEL.WEIGHTS output/densepose_rcnn_R_18_FPN_synthetic/model_final.pth

Each PNG is one row of panels: the image with the annotated points (coloured by part) | the predicted part index
I over the image | U | V | the texture transfer. The texture atlas is DensePose's layout (a 6 × 4 grid of square
tiles, part p in column (p − 1) // 6, row (p − 1) % 6; U runs right, V up), either an image (``--atlas``) or a
generated checkerboard per part.
"""
import argparse
import os

import cv2
import numpy as np
import torch

__all__ = ["part_colours", "checker_atlas", "iuv_image", "texture_transfer", "draw_points", "densepose_panels",
           "cli"]


def part_colours(num_parts=24):
    """RGB uint8 ``[num_parts + 1, 3]``: black for background, evenly spaced hues for the parts."""
    hues = (np.arange(num_parts) * 180 // num_parts).astype(np.uint8)
    hsv = np.stack([hues, np.full(num_parts, 220, np.uint8), np.full(num_parts, 255, np.uint8)], 1)[None]
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]
    return np.concatenate([np.zeros((1, 3), np.uint8), rgb])


def checker_atlas(tile=64, squares=8, num_parts=24):
    """A texture atlas in DensePose's layout: each part's tile is a checkerboard in the part's colour, brightening
    along U, so texture transfer shows both the charts' orientation and their scale."""
    colours = part_colours(num_parts).astype(np.float32)
    atlas = np.zeros((6 * tile, 4 * tile, 3), np.uint8)
    yy, xx = np.mgrid[0:tile, 0:tile]
    check = (((xx * squares) // tile + (yy * squares) // tile) % 2).astype(np.float32)
    ramp = 0.55 + 0.45 * xx / (tile - 1)
    for p in range(1, min(num_parts, 24) + 1):
        col, row = (p - 1) // 6, (p - 1) % 6
        t = colours[p][None, None] * (ramp * (0.55 + 0.45 * check))[..., None]
        atlas[row * tile:(row + 1) * tile, col * tile:(col + 1) * tile] = np.clip(t, 0, 255).astype(np.uint8)
    return atlas


def iuv_image(instances, image_size):
    """``[3,H,W]`` float IUV (I = part index, 0 background; U, V) of ``instances`` with ``pred_boxes`` and
    ``pred_densepose`` (highest score on top); zeros when there are none."""
    h, w = image_size
    if len(instances) == 0:
        return torch.zeros(3, h, w)
    order = torch.argsort(instances.scores).tolist() if instances.has("scores") else None
    return instances.pred_densepose.paste_iuv(instances.pred_boxes.tensor, (h, w), order=order).cpu()


def texture_transfer(image, iuv, atlas, alpha=1.0):
    """``image`` (HxWx3 uint8) with each person pixel replaced by the atlas texel at its (I, U, V)."""
    out = image.astype(np.float32).copy()
    i, u, v = iuv[0].round().long().numpy(), iuv[1].numpy(), iuv[2].numpy()
    tile = atlas.shape[0] // 6
    fg = i > 0
    p = i[fg] - 1
    x = (p // 6) * tile + np.clip(u[fg] * (tile - 1), 0, tile - 1).astype(int)
    y = (p % 6) * tile + np.clip((1 - v[fg]) * (tile - 1), 0, tile - 1).astype(int)
    out[fg] = (1 - alpha) * out[fg] + alpha * atlas[y, x, :3].astype(np.float32)
    return out.astype(np.uint8)


def draw_points(image, annotations, radius=1):
    """``image`` (RGB) with the DensePose points of dataset-record ``annotations`` drawn in their part's colour and
    each annotated box outlined."""
    from detectron2.structures import BoxMode

    out = np.ascontiguousarray(image.copy())
    colours = part_colours()
    for a in annotations:
        x0, y0, x1, y1 = BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
        cv2.rectangle(out, (int(x0), int(y0)), (int(round(x1)) - 1, int(round(y1)) - 1), (255, 255, 255), 1)
        for x, y, p in zip(a.get("dp_x", []), a.get("dp_y", []), a.get("dp_I", [])):
            c = tuple(int(k) for k in colours[int(p) % len(colours)])
            cv2.circle(out, (int(x0 + x * (x1 - x0) / 256), int(y0 + y * (y1 - y0) / 256)), radius, c, -1)
    return out


def densepose_panels(image, instances, annotations=None, atlas=None, scale=3):
    """One row of panels (see the module doc) as an RGB uint8 image; ``instances`` are the model's outputs at the
    image's resolution (``pred_boxes``, ``scores``, ``pred_densepose``)."""
    h, w = image.shape[:2]
    iuv = iuv_image(instances, (h, w))
    fg = (iuv[0] > 0).numpy()
    colours = part_colours()
    overlay = image.copy()
    overlay[fg] = (0.35 * image[fg] + 0.65 * colours[iuv[0].long().numpy()[fg] % len(colours)]).astype(np.uint8)
    panels = [draw_points(image, annotations or []), overlay]
    for k in (1, 2):
        chan = (iuv[k].numpy() * 255).astype(np.uint8)
        coloured = cv2.applyColorMap(chan, cv2.COLORMAP_JET)[:, :, ::-1]
        p = (0.4 * image).astype(np.uint8)
        p[fg] = coloured[fg]
        panels.append(p)
    panels.append(texture_transfer(image, iuv, checker_atlas() if atlas is None else atlas))
    gap = np.full((h, 2, 3), 255, np.uint8)
    row = np.concatenate([x for p in panels for x in (p, gap)][:-1], 1)
    return cv2.resize(row, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def cli(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--dataset", help="draw the first --num-images records of this dataset (default: DATASETS.TEST[0])")
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--atlas", help="texture atlas image in DensePose's 6x4-tile layout (default: checkerboards)")
    parser.add_argument("--output", default="output/densepose_vis")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    import segx  # noqa: F401
    from detectron2.data import DatasetCatalog, detection_utils
    from detectron2.engine import DefaultPredictor

    from segx.config import load_config

    cfg = load_config(args.config_file, args.opts, device="auto", who="densepose_vis")
    cfg.freeze()
    predictor = DefaultPredictor(cfg)
    atlas = cv2.imread(args.atlas)[:, :, ::-1] if args.atlas else None
    os.makedirs(args.output, exist_ok=True)
    for rec in DatasetCatalog.get(args.dataset or cfg.DATASETS.TEST[0])[: args.num_images]:
        bgr = detection_utils.read_image(rec["file_name"], format="BGR")
        inst = predictor(bgr if cfg.INPUT.FORMAT == "BGR" else bgr[:, :, ::-1])["instances"].to("cpu")
        inst = inst[inst.scores > args.score_threshold]
        row = densepose_panels(bgr[:, :, ::-1].copy(), inst, rec.get("annotations"), atlas)
        path = os.path.join(args.output, f"densepose_{rec['image_id']}.png")
        cv2.imwrite(path, row[:, :, ::-1])
        print(path)


if __name__ == "__main__":
    cli()

"""Stacked Hourglass reference figures.

    python benchmarks/hourglass.py chance      # PCK of the mean pose on segx_figures_val (the 'chance' row)
    python benchmarks/hourglass.py speed       # CPU time of HG-2 / HG-8 at 256² vs detectron2 Mask R-CNN R50-FPN
    python benchmarks/hourglass.py train       # training step time of the CPU configs, interleaved
    python benchmarks/hourglass.py official --official-root output/official/pytorch_stacked_hourglass
                                               # segx vs the official PoseNet: converted weights, heatmaps, CPU time

``chance``: every validation figure gets the training set's mean pose, placed in the image the way the model
places its crop at test time (the whole image); a model must beat this to have learnt anything.
``speed``: random weights, batch 1, interleaved image by image in one process; prints seconds per image and
the ratio to Mask R-CNN R50-FPN at 550² (DESIGN.md §6 lists the official code's ratios: 0.045 / 0.16).
``official``: princeton-vl/pytorch_stacked_hourglass's ``PoseNet`` (imported from a local checkout given by
``--official-root``; nothing of it is in segx) with random weights (BN statistics calibrated on random crops, random
BN affine parameters), saved in the released checkpoint's layout, converted by ``tools/convert_hourglass_to_d2.py``
into ``configs/Hourglass/hg{2,8}_256_official.yaml``; prints the largest heatmap difference per stack, the decoded
landmarks of both (the official ``HeatmapParser`` on the last stack, clamped at 1 as ``test.py`` does, without its
flip test; × 4 to the 256² crop, which is the whole image here) and the network's CPU time (batch 1, interleaved:
official, segx channels-last, segx NCHW).
"""
import argparse
import os
import time

import numpy as np
import torch

import segx  # noqa: F401
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode

from segx.config import add_segx_config
from segx.evaluation.pck import PCKEvaluator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _people(dicts):
    for d in dicts:
        for a in d["annotations"]:
            yield d, np.reshape(a["keypoints"], (-1, 3)), BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)


def chance(train="segx_figures_train", val="segx_figures_val"):
    sums, counts = 0, 0
    for d, kp, _ in _people(DatasetCatalog.get(train)):
        half = np.array([d["width"], d["height"]]) / 2
        u = (kp[:, :2] - half) / half.max()
        vis = kp[:, 2:3] > 0
        sums, counts = sums + u * vis, counts + vis
    mean = sums / np.maximum(counts, 1)
    preds, gt = [], {}
    for d in DatasetCatalog.get(val):
        people = []
        half = np.array([d["width"], d["height"]]) / 2
        for _, kp, box in _people([d]):
            people.append({"box": np.array(box), "keypoints": kp, "head_box": None})
        gt[d["image_id"]] = people
        pts = half + mean * half.max()
        preds.append({"image_id": d["image_id"], "boxes": np.array([[0, 0, d["width"], d["height"]]], np.float64),
                      "keypoints": np.concatenate([pts, np.ones((len(pts), 1))], 1)[None]})
    res = PCKEvaluator(val, distributed=False).compute(preds, gt)["keypoints_pck"]
    print("mean-pose baseline on", val, {k: round(float(v), 2) for k, v in res.items() if "/" not in k})
    return res


def speed(iters=5):
    from detectron2.modeling import build_model

    def cfg_of(path, **kv):
        cfg = get_cfg()
        add_segx_config(cfg)
        cfg.merge_from_file(os.path.join(REPO, path))
        cfg.MODEL.DEVICE = "cpu"
        for k, v in kv.items():
            node = cfg
            *parents, leaf = k.split(".")
            for p in parents:
                node = getattr(node, p)
            setattr(node, leaf, v)
        return cfg

    models = {
        "HG-2 256": build_model(cfg_of("configs/Hourglass/hg2_256_paper.yaml")).eval(),
        "HG-8 256": build_model(cfg_of("configs/Hourglass/hg8_256_paper.yaml")).eval(),
        "Mask R-CNN R50-FPN 550": build_model(cfg_of("configs/MaskRCNN/mask_rcnn_R_50_FPN_scratch.yaml",
                                                     **{"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0})).eval(),
    }
    inputs = {"HG-2 256": (256, 256), "HG-8 256": (256, 256), "Mask R-CNN R50-FPN 550": (550, 550)}
    times = {k: [] for k in models}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for i in range(iters + 1):
            for name, model in models.items():
                h, w = inputs[name]
                x = [{"image": torch.rand(3, h, w, generator=g) * 255}]
                t = time.perf_counter()
                model(x)
                if i:  # the first round warms up
                    times[name].append(time.perf_counter() - t)
    ref = np.median(times["Mask R-CNN R50-FPN 550"])
    for name, ts in times.items():
        print(f"{name:24s} {np.median(ts):.3f} s/image  ratio to Mask R-CNN R50-FPN: {np.median(ts) / ref:.3f}")


def train_steps(iters=5):
    """Seconds per training step (forward + backward + SGD, batch of 16 figures, targets built beforehand as the
    loader's mapper does) of each CPU config."""
    from detectron2.data import build_detection_train_loader
    from detectron2.modeling import build_model

    names = ["hg2_gaussian_figures", "hg2_cauchy_figures", "hg2_regression_figures", "hg4_gaussian_figures"]
    runs = {}
    for n in names:
        cfg = get_cfg()
        add_segx_config(cfg)
        cfg.merge_from_file(os.path.join(REPO, "configs/Hourglass", n + ".yaml"))
        cfg.MODEL.DEVICE, cfg.DATALOADER.NUM_WORKERS = "cpu", 0
        model = build_model(cfg).train()
        runs[n] = (model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9))
    batches = list(zip(range(iters + 1), build_detection_train_loader(cfg)))
    times = {n: [] for n in names}
    for i, batch in batches:
        for n, (model, opt) in runs.items():
            # each model's own crop targets, built outside the timed step as StackedHourglassMapper does in the loader
            inputs = [dict(x, targets=model.crop_targets(x["instances"])) for x in batch]
            t = time.perf_counter()
            loss = sum(model(inputs).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i:
                times[n].append(time.perf_counter() - t)
    ref = np.median(times[names[0]])
    for n in names:
        print(f"{n:24s} {np.median(times[n]):.3f} s/step  ratio to {names[0]}: {np.median(times[n]) / ref:.2f}")


def official(root, stacks=(2, 8), iters=5, threads=1):
    import importlib.util
    import sys
    import tempfile

    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    root = os.path.abspath(root)
    if not os.path.isfile(os.path.join(root, "models", "posenet.py")):
        raise SystemExit(f"--official-root {root}: no models/posenet.py (a pytorch_stacked_hourglass checkout)")
    sys.path.insert(0, root)
    from models.posenet import PoseNet  # noqa: E402  (the official code, from the checkout)
    from utils.group import HeatmapParser  # noqa: E402

    spec = importlib.util.spec_from_file_location("convert", os.path.join(REPO, "tools", "convert_hourglass_to_d2.py"))
    convert = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(convert)
    torch.set_num_threads(threads)
    # one RGB 256x256 image: the first synthetic figure, upsampled (uint8, as read from disk)
    d = DatasetCatalog.get("segx_figures_val")[0]
    from detectron2.data.detection_utils import read_image

    rgb = torch.from_numpy(read_image(d["file_name"], format="RGB").copy()).permute(2, 0, 1).float()[None]
    rgb = torch.nn.functional.interpolate(rgb, size=(256, 256), mode="bilinear", align_corners=False)
    img = rgb[0].round().clamp(0, 255).permute(1, 2, 0).numpy().astype(np.uint8)  # HWC RGB
    tmp = tempfile.mkdtemp()
    for n in stacks:
        torch.manual_seed(0)
        net = PoseNet(n, 256, 16)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None  # running statistics = the average over the calibration batches
                with torch.no_grad():
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
        net.train()
        with torch.no_grad():
            for _ in range(2):
                net(torch.rand(2, 256, 256, 3))
        net.eval()
        src, dst = os.path.join(tmp, f"official_hg{n}.pt"), os.path.join(tmp, f"segx_hg{n}.pth")
        torch.save({"state_dict": {"model.module." + k: v for k, v in net.state_dict().items()}, "epoch": 0}, src)
        config = os.path.join(REPO, f"configs/Hourglass/hg{n}_256_official.yaml")
        convert.main([src, dst, "--config-file", config])
        cfg = get_cfg()
        add_segx_config(cfg)
        cfg.merge_from_file(config)
        cfg.MODEL.DEVICE = "cpu"
        model = build_model(cfg).eval()
        DetectionCheckpointer(model).load(dst)
        official_in = torch.Tensor(np.float32([img / 255]))  # test.py: inp = img / 255; NHWC
        segx_in = [{"image": torch.from_numpy(img).permute(2, 0, 1).float()}]  # RGB CHW, as the mapper gives it
        with torch.no_grad():
            ref = net(official_in)[0]  # [stacks, 16, 64, 64]
            images = model.preprocess_image(segx_in)
            maps = model.predict(model.extract_features(images, segx_in), images)["heatmaps"]
            raw = model.inference(segx_in, do_postprocess=False)[0].pred_keypoints
            final = model(segx_in)[0]["instances"].pred_keypoints
        diffs = [float((maps[i][0] - ref[i]).abs().max()) for i in range(n)]
        det = np.minimum(ref[-1].numpy(), 1)  # test.py (without the flip average)
        parsed = HeatmapParser().parse(np.float32([det]))[0][0]  # [16, 3]: x, y, value in heatmap pixels
        off_xy = torch.from_numpy(parsed[:, :2] * 4)  # post_process: x 4 into the 256 crop (= the image here)
        print(f"HG-{n}: max |heatmap diff| per stack {['%.1e' % v for v in diffs]} (heatmap range "
              f"{float(ref.min()):.2f}..{float(ref.max()):.2f}); landmarks: max |segx - official| "
              f"{float((raw[0, :, :2] - off_xy).abs().max()):.1e} px, confidence "
              f"{float((raw[0, :, 2] - torch.from_numpy(parsed[:, 2])).abs().max()):.1e}; truncated (official "
              f"astype(int)) equal: {bool(torch.equal(final[0, :, :2] - 0.5, torch.trunc(off_xy)))}")
        # CPU time of the network alone, interleaved: the official forward (NHWC input, permuted inside, as its
        # test feeds it), segx's backbone in channels-last (the default) and in NCHW
        x = images.tensor
        runs = {"official PoseNet": lambda: net(official_in),
                "segx channels-last": lambda: model.backbone(x),
                "segx NCHW": lambda: model.backbone(x)}
        times = {k: [] for k in runs}
        with torch.no_grad():
            for i in range(iters + 1):
                for name, run in runs.items():
                    model.backbone.channels_last = name != "segx NCHW"
                    t = time.perf_counter()
                    run()
                    if i:
                        times[name].append(time.perf_counter() - t)
        model.backbone.channels_last = True
        ref_t = np.median(times["official PoseNet"])
        row = ", ".join(f"{k} {1000 * np.median(v):.0f} ms ({np.median(v) / ref_t:.2f}x)" for k, v in times.items())
        print(f"  {row}  [{threads} thread(s), median of {iters}]")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["chance", "speed", "train", "official"])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--official-root", default=os.path.join(REPO, "output", "official", "pytorch_stacked_hourglass"),
                    help="official: a checkout of princeton-vl/pytorch_stacked_hourglass")
    ap.add_argument("--stacks", type=int, nargs="+", default=[2, 8], help="official: the PoseNet sizes to compare")
    ap.add_argument("--threads", type=int, default=1, help="official: torch threads")
    args = ap.parse_args()
    {"chance": chance, "speed": lambda: speed(args.iters), "train": lambda: train_steps(args.iters),
     "official": lambda: official(args.official_root, args.stacks, args.iters, args.threads)}[args.what]()

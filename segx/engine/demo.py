"""The main job on the embedded data (``make demo``): train a baseline briefly, evaluate it, draw predictions.

    python tools/demo.py [--config-file configs/MaskRCNN/demo_mask_rcnn_R_18_FPN.yaml] [--output output/demo]

Writes ``output/demo/pred_XXXX.png`` (ground truth | prediction, drawn with detectron2's ``Visualizer``) and
``output/demo/metrics.json`` (the AP table); training logs progress every 20 iterations. Then it renders
``--new-images`` fresh scenes (``output/demo/new_images/*.png``, 128×192: another size and aspect than the
training images, from a seed no embedded split uses) and prints the ``tools/predict.py`` command that runs the
trained model on them, the user path; ``make demo`` runs that command next.
"""
import argparse
import json
import os

import cv2
import numpy as np

import segx  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog, detection_utils
from detectron2.engine import DefaultPredictor
from detectron2.utils.visualizer import ColorMode, Visualizer

from segx.engine.train_net import Trainer, setup

__all__ = ["draw_predictions", "write_new_images", "predict_command", "run_demo", "cli"]

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "MaskRCNN", "demo_mask_rcnn_R_18_FPN.yaml")


def draw_predictions(cfg, predictor, dataset_name, output_dir, num_images, score_threshold, scale=3.0):
    """Draws ground truth | predictions side by side for the first ``num_images`` of ``dataset_name``."""
    os.makedirs(output_dir, exist_ok=True)
    meta = MetadataCatalog.get(dataset_name)
    paths = []
    for record in DatasetCatalog.get(dataset_name)[:num_images]:
        bgr = detection_utils.read_image(record["file_name"], format="BGR")
        rgb = bgr[:, :, ::-1]
        gt = Visualizer(rgb, meta, scale=scale).draw_dataset_dict(record).get_image()
        inst = predictor(bgr if cfg.INPUT.FORMAT == "BGR" else rgb)["instances"].to("cpu")
        inst = inst[inst.scores > score_threshold]
        pred = Visualizer(rgb, meta, scale=scale, instance_mode=ColorMode.IMAGE).draw_instance_predictions(inst).get_image()
        path = os.path.join(output_dir, f"pred_{record['image_id']:04d}.png")
        gap = np.full((gt.shape[0], 8, 3), 255, np.uint8)
        cv2.imwrite(path, np.concatenate([gt, gap, pred], axis=1)[:, :, ::-1])
        paths.append(path)
    return paths


NEW_IMAGES_SEED = 1000  # the embedded shapes splits use seeds 1 (train) and 2 (val)


def write_new_images(output_dir, num_images=8, size=(128, 192), seed=NEW_IMAGES_SEED):
    """Renders ``num_images`` scenes of the embedded shapes that are in no split (their own seed, ``size`` H×W)
    as ``output_dir/new_XX.png``, without annotations: images a user brings. Returns the paths."""
    from segx.data.synthetic import SyntheticSpec, render_scene

    os.makedirs(output_dir, exist_ok=True)
    spec = SyntheticSpec(num_images=num_images, seed=seed, height=size[0], width=size[1])
    paths = []
    for i in range(num_images):
        path = os.path.join(output_dir, f"new_{i:02d}.png")
        cv2.imwrite(path, render_scene(spec, i).image[:, :, ::-1])
        paths.append(path)
    return paths


def predict_command(config_file, weights, inputs, output_dir, score_threshold):
    """The ``tools/predict.py`` command line for the demo's model on ``inputs``."""
    return ["tools/predict.py", "--config-file", config_file, "--weights", weights, "--input", inputs, "--output",
            output_dir, "--json", "--scale", "3", "--score-threshold", f"{score_threshold:g}"]


def run_demo(args):
    cfg = setup(args)
    results = None
    if not args.skip_train:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
        # detectron2 evaluated the test sets at the end of training (EvalHook); reuse that result
        results = getattr(trainer, "_last_eval_results", None)
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.WEIGHTS = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
        cfg.freeze()
    predictor = DefaultPredictor(cfg)
    if not results:
        results = Trainer.test(cfg, predictor.model)
    dataset = cfg.DATASETS.TEST[0]
    paths = draw_predictions(cfg, predictor, dataset, args.output, cfg.SEGX.VIS.NUM_IMAGES, cfg.SEGX.VIS.SCORE_THRESHOLD)
    with open(os.path.join(args.output, "metrics.json"), "w") as f:
        json.dump(results, f, indent=2)
    print("\n=== segx demo: AP on", dataset, "===")
    for task, metrics in results.items():
        print(f"{task:6s} " + "  ".join(f"{k}={v:.1f}" for k, v in metrics.items() if k in ("AP", "AP50", "AP75", "APs", "APm")))
    print(f"drew {len(paths)} images (ground truth | prediction) into {os.path.abspath(args.output)}/")
    if args.new_images:
        new_dir = os.path.join(args.output, "new_images")
        write_new_images(new_dir, args.new_images)
        command = predict_command(args.config_file, cfg.MODEL.WEIGHTS, new_dir, os.path.join(args.output, "predict"),
                                  cfg.SEGX.VIS.SCORE_THRESHOLD) + list(args.opts)
        print(f"wrote {args.new_images} new images (not in the training set, 128x192) into {os.path.abspath(new_dir)}/;"
              " predict on them with the trained model (`make demo` runs this next):")
        print("  python " + " ".join(command))
    return results


def cli(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=os.path.normpath(DEFAULT_CONFIG))
    parser.add_argument("--output", default="output/demo")
    parser.add_argument("--skip-train", action="store_true", help="evaluate and draw MODEL.WEIGHTS only")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--new-images", type=int, default=8,
                        help="fresh images (not in the training set) to write into OUTPUT/new_images for predict.py")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    args.num_gpus, args.num_machines, args.machine_rank, args.eval_only = 1, 1, 0, args.skip_train
    return run_demo(args)


if __name__ == "__main__":
    cli()

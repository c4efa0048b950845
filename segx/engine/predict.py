"""A trained model on your own images, folders, videos and cameras (``tools/predict.py``).

    python tools/predict.py --config-file configs/YOLACT/yolact_R_18_FPN_scratch.yaml --weights model_final.pth \\
        --input a.jpg photos/ clip.mp4 0 --output out/ [--json] [--batch-size 4] [--score-threshold 0.5]

``--input`` takes image files, folders (their images, not recursive), video files and camera indices (``0``).
Images go through ``segx.engine.Predictor`` in batches of ``--batch-size``; each is written as ``out/<name>.png``
with every output drawn (``segx.engine.visualize``). Videos and cameras go through ``VideoPredictor`` frame by frame
(YolactEdge reuses key-frame features, VPSNet tracks); each is written as an annotated ``out/<name>.mp4`` (or PNG
frames with ``--video-frames``). ``--json`` writes the instance predictions as COCO results
(``out/coco_instances_results.json``) and the images they refer to (``out/coco_images.json``, a COCO file with
``images`` and ``categories``), so ``COCO("coco_images.json").loadRes("coco_instances_results.json")`` loads them.

An input that cannot be used (a missing file, an unreadable image, a folder without images, a video that cannot be
opened) is reported in one line and skipped; the run goes on and ends with a summary of the time per image and of
how many inputs it skipped. The exit status is 1 when nothing could be predicted.
"""
import argparse
import json
import logging
import os
import sys
import time
from collections import defaultdict

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # a file that is not a video: our one line, not FFmpeg's

import cv2  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["VIDEO_EXTENSIONS", "expand_inputs", "coco_results", "run", "cli"]

logger = logging.getLogger("segx.predict")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


# ------------------------------------------------------------------------------------------------ inputs
def expand_inputs(items, image_extensions):
    """``--input`` items → (``[(kind, source)]`` with kind "image", "video" or "camera"; ``[(item, reason)]``
    skipped). Folders give their images in name order."""
    jobs, skipped = [], []
    for item in items:
        if item.isdigit() and not os.path.exists(item):
            jobs.append(("camera", int(item)))
        elif os.path.isdir(item):
            names = sorted(n for n in os.listdir(item) if n.lower().endswith(image_extensions)
                           and os.path.isfile(os.path.join(item, n)))
            if not names:
                skipped.append((item, f"folder with no images ({', '.join(image_extensions)})"))
            jobs += [("image", os.path.join(item, n)) for n in names]
        elif not os.path.exists(item):
            skipped.append((item, "no such file or directory"))
        elif item.lower().endswith(VIDEO_EXTENSIONS):
            jobs.append(("video", item))
        else:
            jobs.append(("image", item))
    return jobs, skipped


class _Names:
    """Output names from input names: the file's stem, made unique (``a``, ``a_1``, ...)."""

    def __init__(self):
        self.used = defaultdict(int)

    def __call__(self, source):
        stem = f"camera{source}" if isinstance(source, int) else os.path.splitext(os.path.basename(
            os.path.normpath(source)))[0] or "input"
        n = self.used[stem]
        self.used[stem] += 1
        return stem if n == 0 else f"{stem}_{n}"


# ------------------------------------------------------------------------------------------------ COCO results
def _category_ids(metadata):
    mapping = metadata.get("thing_dataset_id_to_contiguous_id") if metadata is not None else None
    return {v: k for k, v in mapping.items()} if mapping else None


def coco_results(outputs, image_id, metadata=None):
    """One image's ``instances`` as COCO results (boxes XYWH, scores, dataset category ids, RLE masks, keypoints)."""
    from detectron2.evaluation.coco_evaluation import instances_to_coco_json

    if "instances" not in outputs:
        return []
    inst = outputs["instances"].to("cpu")
    if not inst.has("pred_boxes") or not inst.has("scores"):
        return []
    if not inst.has("pred_classes"):
        inst.pred_classes = np.zeros(len(inst), dtype=np.int64)
    results = instances_to_coco_json(inst, image_id)
    reverse = _category_ids(metadata)
    for r in results:
        if reverse is not None:
            r["category_id"] = int(reverse.get(r["category_id"], r["category_id"]))
        if "segmentation" in r and isinstance(r["segmentation"].get("counts"), bytes):
            r["segmentation"]["counts"] = r["segmentation"]["counts"].decode("ascii")
    return results


def _load_category_ids(metadata):
    """COCO-registered datasets learn their category ids (``thing_dataset_id_to_contiguous_id``) when loaded: load
    the config's dataset once so ``--json`` writes the dataset's ids; without it the ids are the class indices."""
    from detectron2.data import DatasetCatalog

    if metadata.get("thing_dataset_id_to_contiguous_id") is not None or metadata.name not in DatasetCatalog.list():
        return
    try:
        DatasetCatalog.get(metadata.name)
    except Exception as e:  # the dataset's files are not here: keep class indices
        logger.warning("--json: dataset %s could not be loaded (%s: %s); category_id is the class index",
                       metadata.name, type(e).__name__, e)


def _coco_categories(metadata, results):
    names = list(metadata.get("thing_classes", []) or []) if metadata is not None else []
    reverse = _category_ids(metadata)
    cats = {}
    for i, name in enumerate(names):
        cid = reverse.get(i, i) if reverse else i
        cats[int(cid)] = {"id": int(cid), "name": name}
    for r in results:
        cats.setdefault(int(r["category_id"]), {"id": int(r["category_id"]), "name": str(r["category_id"])})
    return [cats[k] for k in sorted(cats)]


# ------------------------------------------------------------------------------------------------ the run
class _Run:
    def __init__(self, args, predictor):
        from segx.engine.predictor import VideoPredictor

        self.args, self.predictor = args, predictor
        self.video_predictor = VideoPredictor(predictor)
        self.metadata = predictor.metadata
        self.names = _Names()
        self.times = defaultdict(float)  # read, pre, net, post, draw (seconds, summed)
        self.count = {"images": 0, "frames": 0}
        self.skipped = []
        self.images, self.results = [], []
        os.makedirs(args.output, exist_ok=True)

    def skip(self, source, reason, bar=None):
        self.skipped.append((source, reason))
        line = f"skipped {source}: {reason}"
        (bar.write if bar is not None else print)(line, file=sys.stderr)

    def add_timing(self, timing):
        for k in ("pre", "net", "post"):
            self.times[k] += timing.get(k, 0.0)

    def draw(self, bgr, outputs, header=None):
        from segx.engine.visualize import draw_outputs

        t = time.perf_counter()
        out = draw_outputs(bgr[:, :, ::-1], outputs, self.metadata, self.args.score_threshold, self.args.scale,
                           header=header)[:, :, ::-1]
        self.times["draw"] += time.perf_counter() - t
        return np.ascontiguousarray(out)

    def record(self, outputs, file_name, size, **extra):
        if not self.args.json:
            return
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "height": int(size[0]), "width": int(size[1]),
                            **extra})
        self.results += coco_results(outputs, image_id, self.metadata)

    # -------------------------------------------------------------------------------------------- images
    def run_images(self, paths, bar):
        from segx.engine.predictor import read_image_file

        batch = []
        for path in paths:
            t = time.perf_counter()
            try:
                bgr = read_image_file(path)
            except Exception as e:
                self.skip(path, str(e).replace(f"{path}: ", "", 1), bar)
                bar.update(1)
                continue
            finally:
                self.times["read"] += time.perf_counter() - t
            batch.append((path, bgr))
            if len(batch) == self.args.batch_size:
                self.predict_batch(batch, bar)
                batch = []
        if batch:
            self.predict_batch(batch, bar)

    def predict_batch(self, batch, bar):
        try:
            outputs = self.predictor([bgr for _, bgr in batch])
        except Exception as e:
            if len(batch) == 1:
                self.skip(batch[0][0], f"prediction failed: {type(e).__name__}: {e}", bar)
                bar.update(1)
                return
            for item in batch:  # find the input that fails, predict the others
                self.predict_batch([item], bar)
            return
        self.add_timing(self.predictor.last_timing)
        for (path, bgr), out in zip(batch, outputs):
            name = self.names(path)
            cv2.imwrite(os.path.join(self.args.output, name + ".png"), self.draw(bgr, out))
            self.record(out, os.path.abspath(path), bgr.shape[:2])
            self.count["images"] += 1
            bar.update(1)

    # -------------------------------------------------------------------------------------------- videos
    def run_video(self, kind, source, bar):
        label = f"camera {source}" if kind == "camera" else source
        cap = cv2.VideoCapture(source)
        if not cap.isOpened():
            self.skip(label, "cannot be opened as a video" if kind == "video" else "camera cannot be opened", bar)
            return
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        fps = fps if 1.0 <= fps <= 240.0 else 25.0
        name = self.names(source)
        writer, frame_dir, n = None, None, 0
        self.video_predictor.reset(name)
        try:
            while self.args.max_frames is None or n < self.args.max_frames:
                t = time.perf_counter()
                ok, bgr = cap.read()
                self.times["read"] += time.perf_counter() - t
                if not ok:
                    break
                out = self.video_predictor(bgr)
                self.add_timing(self.video_predictor.last_timing)
                info = out["frame_info"]
                header = f"frame {info['frame_index']}" + ("" if info.get("key_frame", True) else " (non-key)")
                drawn = self.draw(bgr, out, header=header)
                if self.args.video_frames:
                    if frame_dir is None:
                        frame_dir = os.path.join(self.args.output, name)
                        os.makedirs(frame_dir, exist_ok=True)
                    cv2.imwrite(os.path.join(frame_dir, f"frame_{n:06d}.png"), drawn)
                else:
                    if writer is None:
                        path = os.path.join(self.args.output, name + ".mp4")
                        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                                 (drawn.shape[1], drawn.shape[0]))
                        if not writer.isOpened():
                            raise RuntimeError(f"cannot write the video {path} (no mp4v encoder in this OpenCV); "
                                               "use --video-frames to write PNG frames")
                    writer.write(drawn)
                self.record(out, os.path.abspath(source) if kind == "video" else f"camera{source}", bgr.shape[:2],
                            frame_index=int(info["frame_index"]))
                n += 1
                self.count["frames"] += 1
                bar.update(1)
        except KeyboardInterrupt:
            bar.write(f"{label}: stopped after {n} frames (Ctrl-C)", file=sys.stderr)
        except Exception as e:
            self.skip(label, f"stopped after {n} frames: {type(e).__name__}: {e}", bar)
            return
        finally:
            cap.release()
            if writer is not None:
                writer.release()
        if n == 0:
            self.skip(label, "no frame could be read (empty or unreadable video)", bar)

    # -------------------------------------------------------------------------------------------- summary
    def write_json(self):
        path = os.path.join(self.args.output, "coco_instances_results.json")
        with open(path, "w") as f:
            json.dump(self.results, f)
        images_path = os.path.join(self.args.output, "coco_images.json")
        with open(images_path, "w") as f:
            json.dump({"images": self.images, "annotations": [],
                       "categories": _coco_categories(self.metadata, self.results)}, f)
        return path, images_path

    def summary(self, wall):
        n = self.count["images"] + self.count["frames"]
        lines = []
        if n:
            per = {k: 1000 * v / n for k, v in self.times.items()}
            split = " + ".join(f"{k} {per.get(k, 0.0):.1f}" for k in ("read", "pre", "net", "post", "draw"))
            lines.append(f"predicted {self.count['images']} images and {self.count['frames']} video frames in "
                         f"{wall:.1f} s on {self.predictor.device}: {1000 * wall / n:.1f} ms per image "
                         f"({split} ms; batch size {self.args.batch_size})")
        else:
            lines.append("nothing was predicted")
        total = len(self.skipped)
        lines.append(f"skipped {total} input{'s' if total != 1 else ''}" + (":" if total else ""))
        lines += [f"  {src}: {why}" for src, why in self.skipped]
        return "\n".join(lines)


def run(args):
    """Runs ``tools/predict.py`` with parsed ``args``; returns the exit status."""
    from tqdm import tqdm

    from segx.engine.predictor import IMAGE_EXTENSIONS, Predictor

    if args.batch_size < 1:
        raise SystemExit(f"predict.py: --batch-size must be >= 1, got {args.batch_size}")
    if not os.path.isfile(args.config_file):
        raise SystemExit(f"predict.py: --config-file {args.config_file} does not exist")
    if args.weights and "://" not in args.weights and not os.path.isfile(args.weights):
        raise SystemExit(f"predict.py: --weights {args.weights} does not exist")
    predictor = Predictor(args.config_file, args.weights, args.device, opts=args.opts)
    if args.json:
        _load_category_ids(predictor.metadata)
    state = _Run(args, predictor)
    jobs, skipped = expand_inputs(args.input, IMAGE_EXTENSIONS)
    for src, why in skipped:
        state.skip(src, why)
    images = [src for kind, src in jobs if kind == "image"]
    videos = [(kind, src) for kind, src in jobs if kind != "image"]
    total = len(images)
    for kind, src in videos:
        frames = 0
        if kind == "video":
            cap = cv2.VideoCapture(src)
            frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
            cap.release()
        if kind == "camera" or frames <= 0:
            total = None if args.max_frames is None else (total + args.max_frames if total is not None else None)
        elif total is not None:
            total += frames if args.max_frames is None else min(frames, args.max_frames)
    t0 = time.perf_counter()
    with tqdm(total=total, unit="img", desc="predict", disable=args.no_progress, file=sys.stderr) as bar:
        state.run_images(images, bar)
        for kind, src in videos:
            state.run_video(kind, src, bar)
    wall = time.perf_counter() - t0
    if args.json:
        for p in state.write_json():
            print(f"wrote {p}")
    print(state.summary(wall))
    print(f"outputs in {os.path.abspath(args.output)}/")
    return 0 if state.count["images"] + state.count["frames"] else 1


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--weights", default=None, help="checkpoint (default: the config's MODEL.WEIGHTS)")
    parser.add_argument("--input", nargs="+", required=True,
                        help="image files, folders of images, video files, camera indices (0, 1, ...)")
    parser.add_argument("--output", default="output/predict", help="folder for the drawn images, videos and JSON")
    parser.add_argument("--json", action="store_true", help="also write COCO results (coco_instances_results.json)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: MODEL.DEVICE, CPU without CUDA)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="instances drawn from this score")
    parser.add_argument("--scale", type=float, default=1.0, help="drawing scale (e.g. 3 for 128-px images)")
    parser.add_argument("--video-frames", action="store_true", help="write PNG frames instead of an annotated .mp4")
    parser.add_argument("--max-frames", type=int, default=None, help="frames per video / camera (default: all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser


def cli(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import segx  # noqa: F401  (bridges and registries)

    return run(args)


if __name__ == "__main__":
    sys.exit(cli())

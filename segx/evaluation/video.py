"""Video instance segmentation evaluation (``evaluator_type`` "coco_video", e.g. ``register_youtube_vis`` sets):
per-frame COCO mask / box AP over all frames (``SegxCOCOEvaluator``, detectron2's ``COCOEvaluator`` with YOLACT's
separate mask scores, on the frame records), and the speed
view of YolactEdge's paper: mean time of key and non-key frames (``FrameTimeEvaluator``).

The test loader gives the frames of each video in order (detectron2's ``InferenceSampler``, batch 1), which is what
a streaming model needs (``YolactEdge`` keeps one state per ``video_id``).
"""
import itertools
import statistics

from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from segx.evaluation.coco import SegxCOCOEvaluator
from segx.evaluation.registry import register_evaluator_type

__all__ = ["FrameTimeEvaluator"]


class FrameTimeEvaluator(DatasetEvaluator):
    """Mean and median milliseconds per key frame and per non-key frame, from each output's ``"frame_info"``
    (``{"key_frame": bool, "seconds": float}``, written by YolactEdge when it streams); nothing for models that
    write none. Returns ``{"frame_time": {"key_ms", "nonkey_ms", "key_median_ms", "nonkey_median_ms",
    "nonkey_speedup" (key / non-key mean), "key_frames", "nonkey_frames"}}``."""

    def reset(self):
        self._times = []

    def process(self, inputs, outputs):
        for out in outputs:
            info = out.get("frame_info") if isinstance(out, dict) else None
            if info is not None:
                self._times.append((bool(info["key_frame"]), float(info["seconds"])))

    def evaluate(self):
        times = list(itertools.chain(*comm.gather(self._times, dst=0)))
        if not comm.is_main_process() or not times:
            return {}
        key = [t * 1000 for k, t in times if k]
        nonkey = [t * 1000 for k, t in times if not k]
        res = {"key_frames": float(len(key)), "nonkey_frames": float(len(nonkey))}
        for name, vals in (("key", key), ("nonkey", nonkey)):
            if vals:
                res[f"{name}_ms"] = sum(vals) / len(vals)
                res[f"{name}_median_ms"] = statistics.median(vals)
        if key and nonkey:
            res["nonkey_speedup"] = res["key_ms"] / res["nonkey_ms"]
        return {"frame_time": res}


@register_evaluator_type("coco_video")
def _coco_video(cfg, dataset_name, output_folder):
    return [SegxCOCOEvaluator(dataset_name, output_dir=output_folder), FrameTimeEvaluator()]

"""PQ through detectron2's COCOPanopticEvaluator equals panopticapi's pq_compute run directly (real COCO sample)."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from segx.data import register_coco_panoptic_dataset

NAME = "segx_real_coco_panoptic"


@pytest.fixture
def coco_panoptic(real_data):
    pytest.importorskip("panopticapi")
    root = os.path.join(real_data, "coco_panoptic_sample")
    if NAME not in DatasetCatalog.list():
        register_coco_panoptic_dataset(
            NAME,
            panoptic_json=os.path.join(root, "panoptic_examples.json"),
            panoptic_root=os.path.join(root, "panoptic"),
            image_root=os.path.join(root, "images"),
            categories=os.path.join(root, "panoptic_coco_categories.json"),
            instances_json=os.path.join(root, "instances_detection_format.json"),
        )
    return NAME


def _perturb(ids, segments):
    """Shift the id map, drop one thing segment, give one segment another category of its kind."""
    ids = np.roll(ids, shift=(3, -5), axis=(0, 1)).copy()
    things = [s for s in segments if s["isthing"]]
    dropped = things[0]["id"]
    ids[ids == dropped] = 0
    out = [dict(s) for s in segments if s["id"] != dropped]
    same_kind = [s for s in out if s["isthing"] == out[-1]["isthing"] and s["category_id"] != out[-1]["category_id"]]
    if same_kind:
        out[-1]["category_id"] = same_kind[0]["category_id"]
    present = set(np.unique(ids).tolist())
    return ids, [s for s in out if s["id"] in present]


def _evaluate_with_d2(dataset, predictions, out_dir):
    from detectron2.evaluation import COCOPanopticEvaluator

    ev = COCOPanopticEvaluator(dataset, str(out_dir))
    ev.reset()
    for d, (ids, segs) in predictions:
        segs = [dict(s) for s in segs]  # the evaluator rewrites category ids in place
        ev.process([{"file_name": d["file_name"], "image_id": d["image_id"]}], [{"panoptic_seg": (torch.from_numpy(ids), segs)}])
    return ev.evaluate()["panoptic_seg"]


def _evaluate_directly(dataset, predictions, tmp_path):
    from panopticapi.evaluation import pq_compute
    from panopticapi.utils import id2rgb

    meta = MetadataCatalog.get(dataset)
    to_dataset_id = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
    to_dataset_id.update({v: k for k, v in meta.stuff_dataset_id_to_contiguous_id.items()})
    pred_dir = tmp_path / "direct_pred"
    pred_dir.mkdir()
    annotations = []
    for d, (ids, segs) in predictions:
        png = os.path.splitext(os.path.basename(d["file_name"]))[0] + ".png"
        Image.fromarray(id2rgb(ids)).save(pred_dir / png)
        annotations.append({
            "image_id": d["image_id"],
            "file_name": png,
            "segments_info": [{"id": s["id"], "category_id": to_dataset_id[s["category_id"]]} for s in segs],
        })
    with open(meta.panoptic_json) as f:
        data = json.load(f)
    data["annotations"] = annotations
    pred_json = tmp_path / "direct_pred.json"
    pred_json.write_text(json.dumps(data))
    return pq_compute(meta.panoptic_json, str(pred_json), gt_folder=meta.panoptic_root, pred_folder=str(pred_dir))


def _gt_predictions(dataset):
    from panopticapi.utils import rgb2id

    out = []
    for d in DatasetCatalog.get(dataset):
        ids = rgb2id(np.asarray(Image.open(d["pan_seg_file_name"]))).astype(np.int32)
        segs = [{"id": s["id"], "category_id": s["category_id"], "isthing": s["isthing"]} for s in d["segments_info"]]
        out.append((d, (ids, segs)))
    return out


def test_ground_truth_as_prediction_gives_pq_100(coco_panoptic, tmp_path):
    res = _evaluate_with_d2(coco_panoptic, _gt_predictions(coco_panoptic), tmp_path)
    for k in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"):
        assert res[k] == pytest.approx(100.0), k


def test_perturbed_prediction_matches_pq_compute(coco_panoptic, tmp_path):
    preds = [(d, _perturb(ids, segs)) for d, (ids, segs) in _gt_predictions(coco_panoptic)]
    res = _evaluate_with_d2(coco_panoptic, preds, tmp_path)
    direct = _evaluate_directly(coco_panoptic, preds, tmp_path)
    assert 5.0 < res["PQ"] < 95.0  # really perturbed, still overlapping
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for m in ("pq", "sq", "rq"):
            assert res[m.upper() + suffix] == pytest.approx(100 * direct[group][m], abs=1e-9), (group, m)

"""register_coco_dataset: one line for a user's COCO data, and errors that name the bad file and record."""
import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from segx.data import DatasetValidationError, register_coco_dataset, validate_coco_json

_counter = [0]


def _write_dataset(tmp_path, mutate=None, n_images=2):
    images_dir = tmp_path / "images"
    images_dir.mkdir(exist_ok=True)
    data = {"images": [], "annotations": [], "categories": [{"id": 3, "name": "box"}, {"id": 7, "name": "blob"}]}
    for i in range(1, n_images + 1):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(images_dir / f"im{i}.jpg")
        data["images"].append({"id": i, "file_name": f"im{i}.jpg", "height": 20, "width": 30})
    data["annotations"].append(
        {"id": 11, "image_id": 1, "category_id": 3, "bbox": [2, 3, 10, 8], "area": 80, "iscrowd": 0,
         "segmentation": [[2, 3, 12, 3, 12, 11, 2, 11]]}
    )
    if mutate:
        mutate(data)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return str(path), str(images_dir)


def _rle(h, w, seed=0):
    """pycocotools' compressed RLE (str counts) of a random h×w mask."""
    import pycocotools.mask as mask_util

    m = (np.random.default_rng(seed).random((h, w)) < 0.3).astype(np.uint8)
    rle = mask_util.encode(np.asfortranarray(m))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def _register(tmp_path, mutate=None, **kw):
    json_file, image_root = _write_dataset(tmp_path, mutate, **kw)
    _counter[0] += 1
    name = f"segx_test_user_{_counter[0]}"
    register_coco_dataset(name, json_file, image_root)
    return name, json_file


def test_valid_dataset_registers_in_one_line_and_loads(tmp_path, caplog):
    name, json_file = _register(tmp_path)
    with caplog.at_level(logging.INFO):
        dicts = DatasetCatalog.get(name)
    assert len(dicts) == 2 and len(dicts[0]["annotations"]) == 1
    assert dicts[0]["annotations"][0]["category_id"] == 0  # contiguous ids, as detectron2 expects
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["box", "blob"] and meta.evaluator_type == "coco" and meta.json_file == json_file
    assert "1 of 2 images have no annotations" in caplog.text  # negatives kept, and counted


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["images"].append({"id": 5, "file_name": "missing.jpg"}), r"image id 5: image file .*missing\.jpg does not exist"),
        (lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3, 4, 5]]), r"annotation id 11 \(image id 1\): polygon 0 has an odd number"),
        (lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3, 4]]), r"annotation id 11 \(image id 1\): polygon 0 has 2 points"),
        (lambda d: d["annotations"][0].update(segmentation=[["a", 2, 3, 4, 5, 6]]), r"annotation id 11.*not a flat list of numbers"),
        (lambda d: d["annotations"][0].update(category_id=99), r"annotation id 11 \(image id 1\): unknown category id 99"),
        (lambda d: d["annotations"].clear(), r"'annotations' is empty"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, -3, 4]), r"annotation id 11.*negative width/height"),
        (lambda d: d["annotations"][0].update(image_id=42), r"annotation id 11 \(image id 42\): image id not in 'images'"),
        (lambda d: d["annotations"][0].update(segmentation={"size": [20, 30], "counts": "garbage!!"}),
         r"annotation id 11 \(image id 1\): compressed RLE counts are corrupt: character 'r'"),
        (lambda d: d["annotations"][0].update(segmentation={"size": [20, 30], "counts": [100, 20, 30]}),
         r"annotation id 11.*uncompressed RLE counts add up to 150 pixels, its size 20x30 has 600"),
        (lambda d: d["annotations"][0].update(segmentation={"size": [20, 30], "counts": _rle(40, 30)["counts"]}),
         r"annotation id 11.*RLE size \[20, 30\] differs|compressed RLE counts add up to 1200"),
        (lambda d: d["annotations"][0].update(segmentation=_rle(40, 30)),
         r"annotation id 11.*RLE size \[40, 30\] differs from the image's \[20, 30\]"),
        (lambda d: d["annotations"][0].update(segmentation={"size": [20, 30], "counts": [-5, 605]}),
         r"annotation id 11.*uncompressed RLE counts must be non-negative integers"),
    ],
    ids=["missing-image", "odd-polygon", "short-polygon", "non-numeric-polygon", "unknown-category",
         "empty-annotations", "negative-bbox", "dangling-image-id", "corrupt-compressed-rle", "rle-sum",
         "compressed-rle-sum", "rle-size", "negative-rle-count"],
)
def test_bad_input_names_file_and_record(tmp_path, mutate, expected):
    name, json_file = _register(tmp_path, mutate)
    with pytest.raises(DatasetValidationError, match=expected) as err:
        DatasetCatalog.get(name)
    assert json_file in str(err.value)


def test_all_problems_reported_together(tmp_path):
    def mutate(d):
        d["annotations"][0]["category_id"] = 99
        d["images"].append({"id": 9, "file_name": "nope.jpg"})

    json_file, root = _write_dataset(tmp_path, mutate)
    with pytest.raises(DatasetValidationError) as err:
        validate_coco_json(json_file, root)
    assert len(err.value.problems) == 2


def test_unreadable_files(tmp_path):
    with pytest.raises(DatasetValidationError, match="does not exist"):
        validate_coco_json(str(tmp_path / "none.json"), str(tmp_path))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetValidationError, match=r"(?s)bad\.json.*not valid JSON"):
        validate_coco_json(str(bad), str(tmp_path))


def test_rle_counts_decode_as_pycocotools_encodes():
    """``decode_rle_counts`` gives the column-major runs of the mask pycocotools encoded, for random masks, blocks,
    empty and full masks, and long runs (multi-character counts, negative deltas)."""
    import pycocotools.mask as mask_util

    from segx.data.rle import decode_rle_counts, rle_problems

    rng = np.random.default_rng(0)
    masks = [np.zeros((7, 5), np.uint8), np.ones((600, 800), np.uint8)]
    for _ in range(60):
        h, w = rng.integers(1, 80, 2)
        masks.append((rng.random((h, w)) < rng.random()).astype(np.uint8))
        block = np.zeros((h, w), np.uint8)
        block[rng.integers(0, h):, rng.integers(0, w):] = 1
        masks.append(block)
    for m in masks:
        flat = m.flatten(order="F")
        edges = np.flatnonzero(np.diff(flat)) + 1
        runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
        if flat[0] == 1:
            runs = [0] + runs  # COCO RLE starts with a run of zeros
        rle = mask_util.encode(np.asfortranarray(m))
        assert decode_rle_counts(rle["counts"]) == runs
        assert rle_problems(rle) == [] and rle_problems({**rle, "counts": runs}) == []
    assert "ends inside a count" in rle_problems({"size": [2, 2], "counts": "P"})[0]
    assert "size must be [height, width]" in rle_problems({"size": [2], "counts": [4]})[0]

"""Bad input gives a clear error naming the file, and nothing is lost silently (issue 19, items 7-10): truncated,
zero-byte and corrupt images (validation and every mapper), truncated or corrupt checkpoints (training,
``--eval-only``, export), zero-area boxes, and images that a ``label.txt`` names but that do not exist.
"""
import io
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog

from segx.checkpoint import CheckedDetectionCheckpointer, CorruptCheckpointError
from segx.data import DatasetValidationError, register_coco_dataset, validate_coco_json
from segx.data.datasets.coco import check_image_file
from segx.data.datasets.faces import register_wider_face_retinaface
from segx.data.mappers import MAPPER_REGISTRY, build_mapper
from segx.data.mappers.base import BadImageError, with_bad_image_guard

from conftest import TINY, tiny_cfg, unique_dataset_name

_unique = unique_dataset_name  # conftest's fixture `cleanup` removes what a test registers


def _noise(w=40, h=30, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def bad_images(tmp_path):
    """good.jpg, truncated.jpg (half of a JPEG), empty.jpg (0 bytes), corrupt.jpg (not an image), truncated.png."""
    d = tmp_path / "images"
    d.mkdir()
    for i in range(3):
        Image.fromarray(_noise(seed=i)).save(d / f"good{i}.jpg", quality=90)
    buf = io.BytesIO()
    Image.fromarray(_noise(seed=5)).save(buf, "JPEG", quality=90)
    (d / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (d / "empty.jpg").write_bytes(b"")
    (d / "corrupt.jpg").write_bytes(b"<html>404 Not Found</html>" * 10)
    buf = io.BytesIO()
    Image.fromarray(_noise(seed=6)).save(buf, "PNG")
    (d / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return d


def _coco(tmp_path, files, bbox=(2, 3, 10, 8)):
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    for i, f in enumerate(files, 1):
        data["images"].append({"id": i, "file_name": f, "width": 40, "height": 30})
        data["annotations"].append({"id": 10 + i, "image_id": i, "category_id": 1, "bbox": list(bbox),
                                    "area": bbox[2] * bbox[3], "iscrowd": 0})
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return str(path)


# ------------------------------------------------------------------------------------- 7. images: validation
def test_image_checks_by_level(bad_images):
    p = lambda n: str(bad_images / n)  # noqa: E731
    assert check_image_file(p("truncated.jpg"), "exists") is None
    assert check_image_file(p("truncated.jpg"), "header") is None  # the header is intact
    assert "truncated.jpg is truncated or corrupt" in check_image_file(p("truncated.jpg"), "decode")
    assert "truncated.png is truncated or corrupt" in check_image_file(p("truncated.png"), "decode")
    assert check_image_file(p("empty.jpg"), "header").endswith("empty.jpg is empty (0 bytes)")
    assert "corrupt.jpg is truncated or corrupt (UnidentifiedImageError" in check_image_file(p("corrupt.jpg"), "header")
    assert "is 40x30, the annotations say 50x30" in check_image_file(p("good0.jpg"), "header", (50, 30))
    assert check_image_file(p("good0.jpg"), "decode", (40, 30)) is None


def test_validation_opens_images_when_asked(tmp_path, bad_images):
    files = ["good0.jpg", "truncated.jpg", "empty.jpg", "corrupt.jpg"]
    json_file = _coco(tmp_path, files)
    validate_coco_json(json_file, str(bad_images))  # existence only: all exist
    with pytest.raises(DatasetValidationError) as e:
        validate_coco_json(json_file, str(bad_images), check_images="header")
    assert len(e.value.problems) == 2
    assert any(m.startswith("image id 3: image file") and "empty.jpg is empty" in m for m in e.value.problems)
    assert any(m.startswith("image id 4: image file") and "corrupt.jpg" in m for m in e.value.problems)
    with pytest.raises(DatasetValidationError) as e:
        validate_coco_json(json_file, str(bad_images), check_images="decode")
    assert len(e.value.problems) == 3 and "image id 2: image file" in e.value.problems[0]
    with pytest.raises(ValueError, match="check_images must be one of"):
        validate_coco_json(json_file, str(bad_images), check_images="pixels")


# ---------------------------------------------------------------------------------------- 7. images: mappers
def _record(path, image_id=17):
    return {"file_name": str(path), "image_id": image_id, "height": 30, "width": 40, "annotations": []}


@pytest.mark.parametrize("arch", sorted(TINY))
def test_every_mapper_names_the_bad_image_or_skips_it(arch, bad_images, caplog):
    cfg = tiny_cfg(arch)
    mapper = build_mapper(cfg, is_train=True)
    registered = MAPPER_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE) if cfg.MODEL.META_ARCHITECTURE in MAPPER_REGISTRY \
        else None
    if registered is not None:
        assert isinstance(mapper, registered)  # still the architecture's mapper
    for bad in ("truncated.jpg", "empty.jpg", "corrupt.jpg", "missing.jpg"):
        with pytest.raises(BadImageError, match=rf"image id 17: image file .*{bad} (is|does)") as e:
            mapper(_record(bad_images / bad))
        assert "SEGX.DATA.BAD_IMAGES skip" in str(e.value) and isinstance(e.value, OSError)
    cfg.SEGX.DATA.BAD_IMAGES = "skip"
    mapper = build_mapper(cfg, is_train=True)
    with caplog.at_level(logging.WARNING):
        assert mapper(_record(bad_images / "truncated.jpg", 18)) is None
    assert "Skipping image id 18" in caplog.text and "bad image(s) skipped so far" in caplog.text
    with pytest.raises(BadImageError, match="evaluation stops on it"):  # test-time loaders never skip
        build_mapper(cfg, is_train=False)(_record(bad_images / "truncated.jpg"))


def test_other_mapper_errors_pass_through_unchanged(bad_images):
    mapper = build_mapper(tiny_cfg("mask_rcnn"), is_train=True)
    record = _record(bad_images / "good0.jpg")
    record["annotations"] = [{"bbox": [1, 2, 3, 4], "bbox_mode": 0, "category_id": 0, "segmentation": "oops"}]
    with pytest.raises(Exception) as e:
        mapper(record)
    assert not isinstance(e.value, BadImageError)
    for cls in MAPPER_REGISTRY._obj_map.values():  # every registered mapper gets the guard
        assert issubclass(with_bad_image_guard(cls), cls)


def test_training_loader_skips_bad_images_with_a_count(tmp_path, bad_images, cleanup, caplog):
    from segx.engine.train_net import Trainer

    name = register_coco_dataset(_unique("loader"), _coco(tmp_path, ["good0.jpg", "good1.jpg", "truncated.jpg",
                                                                     "good2.jpg"]), str(bad_images))
    cleanup.append(name)
    cfg = tiny_cfg("mask_rcnn", **{"DATASETS.TRAIN": (name,), "SOLVER.IMS_PER_BATCH": 2,
                                   "INPUT.MIN_SIZE_TRAIN": (32,), "INPUT.MAX_SIZE_TRAIN": 64})
    with pytest.raises(BadImageError, match=r"image id 3: image file .*truncated\.jpg is truncated or corrupt"):
        it = iter(Trainer.build_train_loader(cfg))
        for _ in range(8):
            next(it)
    cfg.SEGX.DATA.BAD_IMAGES = "skip"
    it = iter(Trainer.build_train_loader(cfg))
    with caplog.at_level(logging.WARNING):
        seen = [x["file_name"] for _ in range(8) for x in next(it)]
    assert len(seen) == 16 and not any(f.endswith("truncated.jpg") for f in seen)
    assert "Skipping image id 3" in caplog.text


# ----------------------------------------------------------------------------------------- 8. checkpoints
@pytest.fixture
def checkpoints(tmp_path):
    model = torch.nn.Linear(64, 32)
    good = tmp_path / "good.pth"
    torch.save({"model": model.state_dict(), "iteration": 3}, good)
    raw = good.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "html.pth").write_bytes(b"<html>Moved Permanently</html>")
    damaged = bytearray(raw)
    damaged[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)  # torch.load alone would load this silently
    (tmp_path / "crc.pth").write_bytes(bytes(damaged))
    torch.save({"model": model.state_dict()}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    legacy = (tmp_path / "legacy.pth").read_bytes()
    (tmp_path / "legacy_truncated.pth").write_bytes(legacy[: len(legacy) // 2])
    return model, tmp_path


@pytest.mark.parametrize("name, expected", [
    ("truncated.pth", "is truncated or corrupt: an incomplete torch zip archive"),
    ("empty.pth", r"is empty \(0 bytes\)"),
    ("html.pth", r"is not a checkpoint \(neither a torch zip archive nor a pickle"),
    ("crc.pth", "is corrupt: its member .* fails the CRC check"),
    ("legacy_truncated.pth", "is truncated or corrupt"),
])
def test_checkpointer_names_a_truncated_or_corrupt_file(checkpoints, name, expected):
    model, folder = checkpoints
    with pytest.raises(CorruptCheckpointError, match=rf"checkpoint {folder / name}.* {expected}"):
        CheckedDetectionCheckpointer(model).load(str(folder / name))
    CheckedDetectionCheckpointer(model).load(str(folder / "good.pth"))
    CheckedDetectionCheckpointer(model).load(str(folder / "legacy.pth"))


def _cfg_file(tmp_path, dataset):
    """The tiny Mask R-CNN as a YAML file (for the command-line paths), trained / tested on ``dataset``."""
    cfg = tiny_cfg("mask_rcnn", output_dir=tmp_path / "out", **{"DATASETS.TRAIN": (dataset,),
                                                                 "DATASETS.TEST": (dataset,)})
    path = tmp_path / "tiny.yaml"
    path.write_text(cfg.dump())
    return cfg, str(path)


def test_truncated_weights_in_training_eval_only_and_export(tmp_path, bad_images, cleanup, checkpoints):
    from detectron2.engine import default_argument_parser

    from segx.engine.train_net import Trainer, main
    from segx.export.export_model import cli as export_cli

    name = register_coco_dataset(_unique("ckpt"), _coco(tmp_path, ["good0.jpg", "good1.jpg"]), str(bad_images))
    cleanup.append(name)
    bad = str(checkpoints[1] / "truncated.pth")
    cfg, cfg_file = _cfg_file(tmp_path, name)
    cfg.MODEL.WEIGHTS = bad
    trainer = Trainer(cfg)
    with pytest.raises(CorruptCheckpointError, match=f"checkpoint {bad} is truncated or corrupt"):
        trainer.resume_or_load(resume=False)
    args = default_argument_parser().parse_args(["--config-file", cfg_file, "--eval-only", "MODEL.WEIGHTS", bad])
    with pytest.raises(CorruptCheckpointError, match=f"checkpoint {bad} is truncated or corrupt"):
        main(args)
    with pytest.raises(CorruptCheckpointError, match=f"checkpoint {bad} is truncated or corrupt"):
        export_cli(["--config-file", cfg_file, "--output", str(tmp_path / "export"), "MODEL.WEIGHTS", bad])


# -------------------------------------------------------------------------------------- 9. zero-area boxes
def test_zero_area_boxes_are_reported_with_their_ids(tmp_path, bad_images, caplog):
    json_file = _coco(tmp_path, ["good0.jpg", "good1.jpg"], bbox=(2, 3, 0, 8))
    with caplog.at_level(logging.WARNING):
        validate_coco_json(json_file, str(bad_images))
    assert f"{json_file}: 2 annotation(s) with a zero-area box" in caplog.text
    assert "annotation id 11 (image id 1): bbox has zero width or height [2, 3, 0, 8]" in caplog.text
    assert "annotation id 12 (image id 2)" in caplog.text
    with pytest.raises(DatasetValidationError, match=r"annotation id 11 \(image id 1\): bbox has zero width"):
        validate_coco_json(json_file, str(bad_images), zero_area_boxes="error")


# ------------------------------------------------------------------- 10. label.txt naming missing images
def test_label_txt_images_are_checked_at_registration(tmp_path, bad_images, cleanup):
    label = tmp_path / "label.txt"
    label.write_text("# good0.jpg\n1 1 5 5\n# gone/missing.jpg\n2 2 4 4\n# empty.jpg\n3 3 4 4\n")
    name = _unique("wider")
    with pytest.raises(DatasetValidationError) as e:
        register_wider_face_retinaface(name, str(label), image_root=str(bad_images))
    assert name not in DatasetCatalog.list()  # nothing half-registered
    msg = str(e.value)
    assert str(label) in msg and "2 problem(s)" in msg
    assert f"line 3: image file {bad_images / 'gone' / 'missing.jpg'} does not exist" in msg
    assert f"line 5: image file {bad_images / 'empty.jpg'} is empty (0 bytes)" in msg
    register_wider_face_retinaface(name, str(label), image_root=str(bad_images), check_now=False)  # checked on load
    cleanup.append(name)
    with pytest.raises(DatasetValidationError, match="line 3: image file .*missing.jpg does not exist"):
        DatasetCatalog.get(name)

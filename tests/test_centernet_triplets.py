"""CenterNet (keypoint triplets): centre targets (also from the mapper), the central-region check on planted
heatmaps, pooling modules, training on the synthetic shapes (every loss falls), renamed keys and export parity."""
import pytest
import torch

from detectron2.modeling import build_model

from conftest import tiny_cfg
from segx.config.cornernet import RENAMED_KEYS
from segx.layers import corner_pool
from segx.modeling.keypoints import (
    CascadeCornerPoolModule,
    CenterPoolModule,
    CornerPoolModule,
    CornerTargets,
    center_region_check,
)
from test_cornernet import (
    EXPORT_OVERRIDES,
    assert_every_loss_falls,
    assert_mapper_targets_equal_model_targets,
    assert_old_key_names_the_new_key,
    plant,
    train_steps,
)

TRIPLETS_CFG = "configs/CenterNetTriplets/centernet_triplets_hg_small_shapes.yaml"


def test_pooling_modules_keep_shape_and_center_pool_sees_row_and_column():
    x = torch.randn(2, 6, 9, 7)
    for mod in (CornerPoolModule(6, ("top", "left"), 4), CascadeCornerPoolModule(6, ("bottom", "right"), 4), CenterPoolModule(6, 4)):
        assert mod(x).shape == x.shape
    # top then bottom pooling = the maximum of the whole column, left then right = of the whole row
    col = corner_pool(corner_pool(x, "top"), "bottom")
    torch.testing.assert_close(col, x.amax(dim=2, keepdim=True).expand_as(x))
    row = corner_pool(corner_pool(x, "left"), "right")
    torch.testing.assert_close(row, x.amax(dim=3, keepdim=True).expand_as(x))


def test_center_targets_use_the_wider_gaussian():
    boxes, classes = torch.tensor([[10.0, 18.0, 70.0, 101.0]]), torch.tensor([0])
    kw = dict(min_overlap=0.7, radius_variant="original", kinds=("tl", "br", "ct"))
    t5 = CornerTargets(1, 4, center_sigma_divisor=5.0, **kw)(boxes, classes, (128, 128))
    t6 = CornerTargets(1, 4, center_sigma_divisor=6.0, **kw)(boxes, classes, (128, 128))
    heat, points, offset = t5["ct"]["heatmap"], t5["ct"]["points"], t5["ct"]["offset"]
    # centre (40, 59.5) input px -> (10, 14.875) map px
    assert heat[0, 14, 10] == 1 and points.tolist() == [[10, 14]]
    torch.testing.assert_close(offset[0], torch.tensor([0.0, 0.875]))
    assert heat[0, 14, 11] > t6["ct"]["heatmap"][0, 14, 11] > 0  # sigma = diameter/5 > diameter/6
    assert (t5["tl"]["heatmap"] == t6["tl"]["heatmap"]).all()  # corners keep diameter/6


def test_center_region_check_rule():
    boxes = torch.tensor([[[0.0, 0.0, 30.0, 30.0], [0.0, 0.0, 300.0, 300.0], [0.0, 0.0, 30.0, 30.0]]])
    scores = torch.tensor([[0.6, 0.6, -1.0]])
    classes = torch.tensor([[0, 0, 0]])
    # small box: middle third is (10, 20); large box (area 90000 > 22500): middle fifth is (120, 180)
    centers = torch.tensor([[[15.0, 15.0], [150.0, 150.0], [25.0, 15.0]]])
    center_scores = torch.tensor([[0.9, 0.3, 0.99]])
    center_classes = torch.tensor([[0, 0, 0]])
    new = center_region_check(boxes, scores, classes, centers, center_scores, center_classes)
    torch.testing.assert_close(new, torch.tensor([[(1.2 + 0.9) / 3, (1.2 + 0.3) / 3, -1.0]]))
    # on the region's border (strict inequality), or of another class: rejected
    new = center_region_check(
        boxes[:, :2], scores[:, :2], classes[:, :2], torch.tensor([[[20.0, 15.0], [150.0, 150.0]]]),
        center_scores[:, :2], torch.tensor([[0, 1]]),
    )
    torch.testing.assert_close(new, torch.tensor([[-1.0, -1.0]]))


def test_decoding_planted_triplets_keeps_boxes_with_a_centre():
    cfg = tiny_cfg("cornernet", TRIPLETS_CFG, **{"MODEL.CENTERNET_TRIPLETS.CENTER_TOPK_TEST": 3})
    model = build_model(cfg).eval()
    objects = [
        # box A with its centre keypoint (class 1) inside the middle third
        (1, {"tl": (8.5, 12.25), "br": (20.0, 28.75), "ct": (14.25, 20.5)}, 0.0, 0.9),
        # box B (class 3): only a class-1 centre inside its region -> rejected
        (3, {"tl": (2.25, 3.5), "br": (30.5, 15.0)}, 3.0, 0.8),
        (1, {"ct": (16.0, 9.0)}, 0.0, 0.7),
        # box C (class 2): its centre keypoint lies outside the middle third -> rejected
        (2, {"tl": (1.0, 20.0), "br": (7.0, 31.0), "ct": (2.0, 25.0)}, -4.0, 0.85),
    ]
    planted = plant(model, 4, (32, 32), objects)
    model.predict = lambda features, images: planted
    inst = model([{"image": torch.zeros(3, 128, 128)}])[0]["instances"]
    assert len(inst) == 1, inst
    torch.testing.assert_close(inst.pred_boxes.tensor, torch.tensor([[8.5, 12.25, 20.0, 28.75]]) * 4)
    torch.testing.assert_close(inst.scores, torch.tensor([(2 * 0.9 + 0.9) / 3]), atol=1e-5, rtol=0)
    assert inst.pred_classes.tolist() == [1]


def test_model_builds_the_centre_branch_and_mapper_targets_match():
    cfg = tiny_cfg("cornernet", TRIPLETS_CFG)
    model = build_model(cfg)
    assert model.target_builder.kinds == ("tl", "br", "ct") and model.target_builder.center_sigma_divisor == 5.0
    assert isinstance(model.pools["ct"][0], CenterPoolModule)
    assert isinstance(model.pools["tl"][0], CascadeCornerPoolModule)
    assert "ct" not in model.embedding_heads
    assert_mapper_targets_equal_model_targets(cfg)


@pytest.mark.slow
def test_training_lowers_every_loss():
    history = train_steps(tiny_cfg("cornernet", TRIPLETS_CFG))
    assert set(history[0]) == {
        "loss_tl_heatmap", "loss_br_heatmap", "loss_ct_heatmap", "loss_pull", "loss_push", "loss_offset"
    }
    assert_every_loss_falls(history)


@pytest.mark.parametrize("old", sorted(k for k in RENAMED_KEYS if "CENTERNET_TRIPLETS" in k))
def test_old_config_key_names_the_new_key(old, tmp_path):
    assert_old_key_names_the_new_key(old, RENAMED_KEYS[old], TRIPLETS_CFG, tmp_path)


def test_export_round_trip_matches_eager(tmp_path):
    pytest.importorskip("onnxruntime")
    from segx.export import export_model, export_tolerances

    torch.manual_seed(0)
    model = build_model(tiny_cfg("cornernet", TRIPLETS_CFG, **EXPORT_OVERRIDES)).eval()
    image = torch.rand(3, 64, 64) * 255
    report = export_model(model, image, str(tmp_path))
    assert report.output_shapes[0][0] > 0, "no detections: the round trip would compare empty tensors"
    assert report.onnx_error is None, report.onnx_error
    assert not report.exceeds(export_tolerances(model)), report.summary()

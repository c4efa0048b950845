"""segx.modeling.panoptic: the parameter-free panoptic head, its targets and losses, instance selection, mask removal
and the merge."""
import pytest
import torch

from segx.modeling.panoptic import (
    boxes_to_pixel_masks,
    mask_removal_keep,
    merge_panoptic_logits,
    paste_mask_logits,
    thing_semantic_targets,
    upsnet_panoptic_logits,
    upsnet_panoptic_targets,
)


def _hand_case():
    # 1 stuff class, 2 thing classes, a 3x4 map.
    stuff = torch.full((3, 4), 0.5)
    thing0 = torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
    thing1 = torch.full((3, 4), 3.0)
    sem = torch.stack([stuff, thing0, thing1])
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 4.0, 3.0]])  # cols 0-1 rows 0-1; cols 1-3 rows 1-2
    classes = torch.tensor([0, 1])
    mask_logits = torch.stack([torch.full((28, 28), 2.0), torch.full((28, 28), -1.0)])
    return sem, boxes, classes, mask_logits


def test_panoptic_logits_equal_hand_computed_values():
    sem, boxes, classes, mask_logits = _hand_case()
    out = upsnet_panoptic_logits(sem, 1, mask_logits, boxes, classes, with_unknown=True)
    assert out.shape == (4, 3, 4)  # stuff, 2 instances, unknown
    assert torch.equal(out[0], sem[0])
    # instance 0: thing-0 logits + 2 inside its box, 0 outside
    assert torch.equal(out[1], torch.tensor([[3.0, 4, 0, 0], [7, 8, 0, 0], [0, 0, 0, 0]]))
    # instance 1: thing-1 logits (3) - 1 inside its box, 0 outside
    assert torch.equal(out[2], torch.tensor([[0.0, 0, 0, 0], [0, 2, 2, 2], [0, 2, 2, 2]]))
    # unknown: max(thing0, thing1) - max(instance 0, instance 1)
    assert torch.equal(out[3], torch.tensor([[0.0, -1, 3, 4], [-2, -2, 5, 6], [9, 8, 9, 10]]))
    no_unknown = upsnet_panoptic_logits(sem, 1, mask_logits, boxes, classes, with_unknown=False)
    assert torch.equal(no_unknown, out[:3])


def test_unknown_channel_without_instances_is_max_thing_logit():
    sem, _, _, _ = _hand_case()
    out = upsnet_panoptic_logits(sem, 1, torch.zeros(0, 28, 28), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert out.shape == (2, 3, 4)
    assert torch.equal(out[1], torch.maximum(sem[1], sem[2]))


def test_one_instance_unknown_uses_its_own_logits_even_when_negative():
    sem, boxes, classes, mask_logits = _hand_case()
    out = upsnet_panoptic_logits(sem, 1, mask_logits[1:] - 10, boxes[1:], classes[1:])
    inside = boxes_to_pixel_masks(boxes[1:], 3, 4)[0].bool()
    # inside the box the instance logit is 3 - 11 = -8, so unknown = max thing logit + 8
    assert torch.equal(out[2][inside], (torch.maximum(sem[1], sem[2]) + 8)[inside])


def test_paste_mask_logits_maps_grid_onto_box_exactly():
    m = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    out = paste_mask_logits(m, torch.tensor([[1.0, 1.0, 3.0, 3.0]]), 4, 5)[0]
    expected = torch.zeros(4, 5)
    expected[1:3, 1:3] = m[0]
    assert torch.allclose(out, expected)


def test_gradient_reaches_semantic_and_mask_logits():
    sem, boxes, classes, mask_logits = _hand_case()
    sem, mask_logits = sem.clone().requires_grad_(), mask_logits.clone().requires_grad_()
    out = upsnet_panoptic_logits(sem, 1, mask_logits, boxes, classes)
    torch.nn.functional.cross_entropy(out[None], torch.zeros(1, 3, 4, dtype=torch.long)).backward()
    assert sem.grad.abs().sum() > 0 and mask_logits.grad.abs().sum() > 0


def test_targets_of_semantic_and_panoptic_heads():
    # separated labels: 0 = thing, 1..2 = stuff, 255 = unlabelled
    sem = torch.tensor([[1, 1, 0, 0], [2, 0, 0, 255], [2, 0, 0, 0]])
    masks = torch.zeros(2, 3, 4, dtype=torch.bool)
    masks[0, 0, 2:] = True
    masks[1, 1:, 1:3] = True  # one thing pixel (row 2, col 3) belongs to no instance
    classes = torch.tensor([3, 1])
    tsem = thing_semantic_targets(sem, masks, classes, num_stuff=2)
    assert torch.equal(tsem, torch.tensor([[0, 0, 5, 5], [1, 3, 3, 255], [1, 3, 3, 255]]))
    keep = torch.tensor([False, True])
    pan = upsnet_panoptic_targets(sem, masks, keep, num_stuff=2, with_unknown=True)
    # kept instance 1 -> channel 2 + 0; dropped instance 0 and the orphan thing pixel -> unknown (2 + 1)
    assert torch.equal(pan, torch.tensor([[0, 0, 3, 3], [1, 2, 2, 255], [1, 2, 2, 3]]))
    pan = upsnet_panoptic_targets(sem, masks, keep, num_stuff=2, with_unknown=False)
    assert torch.equal(pan, torch.tensor([[0, 0, 255, 255], [1, 2, 2, 255], [1, 2, 2, 255]]))


def test_mask_removal_drops_masks_mostly_under_higher_scored_ones():
    masks = torch.zeros(4, 10, 10, dtype=torch.bool)
    masks[0, :, :5] = True  # 50 px
    masks[1, :, 3:7] = True  # 40 px, 20 on mask 0 -> 0.5 > 0.3: removed
    masks[2, :, 4:9] = True  # 50 px, 10 on mask 0 -> 0.2: kept (the removed mask 1 does not count)
    # mask 3 is empty: removed
    assert mask_removal_keep(masks, 0.3).tolist() == [True, False, True, False]


def test_merge_gives_non_overlapping_segments_with_correct_segments_info():
    s, h, w = 2, 6, 8
    logits = torch.full((s + 3 + 1, h, w), -5.0)
    logits[0, :, :4] = 1  # stuff 0: left half
    logits[1, :, 4:] = 1  # stuff 1: right half
    logits[2, 1:3, 1:3] = 3  # instance 0 (class 2)
    logits[3, 2:5, 5:7] = 3  # instance 1 (class 0)
    logits[4, 0, 0] = 0.5  # instance 2 never wins: no segment
    logits[5, 5, 0] = 9  # unknown pixel -> 0
    classes, scores = torch.tensor([2, 0, 1]), torch.tensor([0.9, 0.8, 0.7])
    seg, info = merge_panoptic_logits(logits, s, classes, scores, stuff_area_limit=0)
    assert seg.dtype == torch.int32 and seg.shape == (h, w)
    by_id = {x["id"]: x for x in info}
    assert sorted(by_id) == list(range(1, len(info) + 1)) and len(info) == 4
    assert set(seg.unique().tolist()) == set(by_id) | {0}
    assert (seg == 0).sum() == 1 and seg[5, 0] == 0
    for x in info:
        assert x.get("area", int((seg == x["id"]).sum())) == int((seg == x["id"]).sum())
    things = sorted((x for x in info if x["isthing"]), key=lambda x: x["instance_id"])
    assert [(x["category_id"], x["instance_id"]) for x in things] == [(2, 0), (0, 1)]
    assert [round(x["score"], 3) for x in things] == [0.9, 0.8]
    assert (seg == things[0]["id"]).sum() == 4 and (seg == things[1]["id"]).sum() == 6
    stuff = sorted((x for x in info if not x["isthing"]), key=lambda x: x["category_id"])
    assert [x["category_id"] for x in stuff] == [1, 2]  # separated labels: channel + 1
    assert [x["area"] for x in stuff] == [4 * 6 - 4 - 1, 4 * 6 - 6]
    # a stuff area limit above the smaller stuff segment turns it into unlabelled pixels
    seg2, info2 = merge_panoptic_logits(logits, s, classes, scores, stuff_area_limit=19)
    assert [x["category_id"] for x in info2 if not x["isthing"]] == [1]
    assert (seg2 == 0).sum() == 1 + 18


def test_selection_thresholds_suppresses_across_classes_and_clips():
    from segx.modeling.panoptic import select_panoptic_instances

    # 3 proposals, 2 classes (+ background): per-class boxes [R, 2*4]
    boxes = torch.tensor([
        [0.0, 0.0, 10, 10, 1, 1, 11, 11],  # proposal 0: class 0 box, class 1 box (overlapping)
        [20.0, 20, 30, 30, 20, 20, 40, 40],  # proposal 1: class 1 box runs past the 32x32 image
        [0.0, 0.0, 5, 5, 0, 0, 5, 5],
    ])
    scores = torch.tensor([[0.9, 0.8, 0.0], [0.1, 0.7, 0.2], [0.3, 0.2, 0.5]])
    sel = select_panoptic_instances(boxes, scores, (32, 32), score_thresh=0.5, nms_thresh=0.5, topk=10)
    # (0, class 0) 0.9 wins over its overlapping (0, class 1) 0.8 (class-agnostic NMS); (1, class 1) 0.7 clipped
    assert sel.scores.tolist() == pytest.approx([0.9, 0.7])
    assert sel.pred_classes.tolist() == [0, 1]
    assert sel.pred_boxes.tensor.tolist() == [[0, 0, 10, 10], [20, 20, 32, 32]]
    assert len(select_panoptic_instances(boxes, scores, (32, 32), 0.5, 0.5, topk=1)) == 1


def test_kept_instances_draw_and_cross_entropy_of_all_ignored_pixels():
    import numpy as np

    from segx.modeling.panoptic import cross_entropy_with_ignore, sample_kept_instances

    np.random.seed(0)
    a = sample_kept_instances(10, 0.7)
    np.random.seed(0)
    assert torch.equal(a, sample_kept_instances(10, 0.7)) and int(a.sum()) == 7
    assert int(sample_kept_instances(1, 0.7).sum()) == 1 and bool(sample_kept_instances(3, 1.0).all())
    assert sample_kept_instances(0, 0.7).shape == (0,)
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = cross_entropy_with_ignore(logits, torch.full((1, 4, 4), 255), 255)
    loss.backward()
    assert float(loss) == 0 and logits.grad is not None


def test_roi_loss_samples_labels_inside_each_box():
    from segx.modeling.panoptic import sample_labels_in_boxes, semantic_roi_loss

    labels = torch.arange(16).view(1, 4, 4)
    rois = torch.tensor([[0.0, 2, 0, 4, 2]])  # columns 2-3, rows 0-1
    assert sample_labels_in_boxes(labels, rois, 2)[0].tolist() == [[2, 3], [6, 7]]
    sem_logits = torch.zeros(1, 2, 1, 1, requires_grad=True)
    empty = semantic_roi_loss(sem_logits, torch.zeros(1, 4, 4, dtype=torch.long), [torch.zeros(0, 4)], 2, 4, 255)
    assert float(empty) == 0 and empty.requires_grad

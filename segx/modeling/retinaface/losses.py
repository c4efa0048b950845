"""RetinaFace's training rules (biubug6/Pytorch_Retinaface ``layers/modules/multibox_loss.py``): prior matching
and the SSD multibox loss with hard negatives. Vectorised over priors, on the model's device."""
import torch
import torch.nn.functional as F

from segx.modeling.ssd_coding import encode_boxes, encode_landmarks, hard_negative_mining, match_priors

__all__ = ["label_priors", "multibox_losses"]


@torch.no_grad()
def label_priors(priors, gt_instances, *, num_landmarks, match_iou=0.35, min_force_iou=0.2, variances=(0.1, 0.2)):
    """Targets of a batch for pixel priors ``[P,4]`` (cx, cy, w, h).

    A prior is positive at IoU ≥ ``match_iou`` with a face, and each face also takes its best prior when that
    IoU ≥ ``min_force_iou``. A face has landmark targets only when all its K points have visibility > 0 (the
    official −1 rule). Returns: matched face index or -1 ``[B,P]``, box targets ``[B,P,4]``, landmark targets
    ``[B,P,2K]`` and which priors have landmark targets ``[B,P]`` bool.
    """
    labels, box_t, ldm_t, ldm_valid = [], [], [], []
    num_p, k = priors.shape[0], num_landmarks
    for inst in gt_instances:
        gt_boxes = inst.gt_boxes.tensor
        matched, _ = match_priors(gt_boxes, priors, pos_iou=match_iou, force="per_gt", min_force_iou=min_force_iou)
        if gt_boxes.shape[0] == 0:
            labels.append(matched)
            box_t.append(priors.new_zeros(num_p, 4))
            ldm_t.append(priors.new_zeros(num_p, 2 * k))
            ldm_valid.append(torch.zeros(num_p, dtype=torch.bool, device=priors.device))
            continue
        idx = matched.clamp(min=0)
        box_t.append(encode_boxes(gt_boxes[idx], priors, variances))
        if inst.has("gt_keypoints"):
            kpts = inst.gt_keypoints.tensor
            if kpts.shape[1] != k:
                raise ValueError(f"RetinaFace: gt_keypoints have {kpts.shape[1]} points, the model predicts {k}")
            has_ldm = (kpts[:, :, 2] > 0).all(dim=1)
            ldm_t.append(encode_landmarks(kpts[idx, :, :2], priors, variances).reshape(num_p, 2 * k))
        else:
            has_ldm = torch.zeros(gt_boxes.shape[0], dtype=torch.bool, device=priors.device)
            ldm_t.append(priors.new_zeros(num_p, 2 * k))
        ldm_valid.append((matched >= 0) & has_ldm[idx])
        labels.append(matched)
    return torch.stack(labels), torch.stack(box_t), torch.stack(ldm_t), torch.stack(ldm_valid)


def multibox_losses(logits, box_deltas, landmark_deltas, matched, box_targets, landmark_targets, landmark_valid,
                    neg_pos_ratio=7):
    """Unweighted ``loss_cls`` (softmax over face/background on positives + ``neg_pos_ratio`` hard negatives
    per positive), ``loss_box_reg`` and ``loss_landmark`` (smooth L1, β = 1): sums divided by the number of
    positives (landmark loss: of positives with landmarks). Inputs ``[B,P,·]`` as ``label_priors`` returns."""
    pos = matched >= 0
    log_p = F.log_softmax(logits, dim=-1)
    neg = hard_negative_mining(-log_p[..., 0], pos, matched == -1, neg_pos_ratio)
    num_pos = pos.sum().clamp(min=1).float()
    num_ldm = landmark_valid.sum().clamp(min=1).float()
    target = pos.long()
    sel = pos | neg
    return {
        "loss_cls": F.nll_loss(log_p[sel], target[sel], reduction="sum") / num_pos,
        "loss_box_reg": F.smooth_l1_loss(box_deltas[pos], box_targets[pos], reduction="sum", beta=1.0) / num_pos,
        "loss_landmark": F.smooth_l1_loss(landmark_deltas[landmark_valid], landmark_targets[landmark_valid],
                                          reduction="sum", beta=1.0) / num_ldm,
    }

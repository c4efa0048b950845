"""Heads of the top-down landmark models that sit on a backbone's features (the heatmap heads are part of
``StackedHourglassNet``, which merges their predictions into the next stack)."""
from torch import nn

__all__ = ["RegressionHead"]


class RegressionHead(nn.Module):
    """Coordinate regression from a stack's features: two 3×3 stride-2 conv+BN+ReLU (to 1/4 of the heatmap
    resolution), flatten, a hidden linear layer and a linear layer to ``[B,K,2]`` normalised crop coordinates
    ((-1,-1) top-left, (1,1) bottom-right corner of the crop). ``[B,C,H_m,H_m]`` → ``[B,K,2]``."""

    def __init__(self, channels, num_keypoints, heatmap_size, hidden=256):
        super().__init__()
        if heatmap_size % 4:
            raise ValueError(f"RegressionHead: heatmap_size must be divisible by 4, got {heatmap_size}")
        mid = max(channels // 4, 16)
        self.convs = nn.Sequential(
            nn.Conv2d(channels, mid, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        )
        self.fc = nn.Sequential(
            nn.Linear(mid * (heatmap_size // 4) ** 2, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_keypoints * 2),
        )
        nn.init.zeros_(self.fc[-1].weight)  # start at the crop centre
        nn.init.zeros_(self.fc[-1].bias)
        self.num_keypoints = num_keypoints

    def forward(self, x):
        return self.fc(self.convs(x).flatten(1)).reshape(x.shape[0], self.num_keypoints, 2)

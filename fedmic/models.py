"""Models with an explicit encoder/head split (representation r = encoder(x), logits = head(r))."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class SplitModel(nn.Module):
    """encoder: image -> representation; head: representation -> logits."""

    def __init__(self, encoder: nn.Module, head: nn.Linear):
        super().__init__()
        self.encoder = encoder
        self.head = head

    @property
    def rep_dim(self) -> int:
        return self.head.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def forward_rep(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.encoder(x)
        return r, self.head(r)


class CNNEncoder(nn.Module):
    """The two-conv CNN of FL papers on 28x28 images (FedAvg's 'CNN', PFLlib's FedAvgCNN shape):
    conv5x5(32) -> pool -> conv5x5(64) -> pool -> fc(512). `width` scales every layer."""

    def __init__(self, in_channels: int, width: float = 1.0, batch_norm: bool = False, image_size: int = 28):
        super().__init__()
        c1, c2, hidden = max(1, round(32 * width)), max(1, round(64 * width)), max(1, round(512 * width))
        self.conv1 = nn.Conv2d(in_channels, c1, 5)
        self.bn1 = nn.BatchNorm2d(c1) if batch_norm else nn.Identity()
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.bn2 = nn.BatchNorm2d(c2) if batch_norm else nn.Identity()
        side = ((image_size - 4) // 2 - 4) // 2
        self.fc = nn.Linear(c2 * side * side, hidden)
        self.out_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return F.relu(self.fc(torch.flatten(x, 1)))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18Encoder(nn.Module):
    """ResNet-18 for 28x28 inputs as in MedMNIST's baselines: a 3x3 stem without max-pooling."""

    def __init__(self, in_channels: int, width: float = 1.0):
        super().__init__()
        widths = [max(1, round(w * width)) for w in (64, 128, 256, 512)]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [BasicBlock(cin, w, stride), BasicBlock(w, w, 1)]
            cin = w
        self.layers = nn.Sequential(*layers)
        self.out_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


# name -> builder(in_channels, width, image_size) of an encoder with an `out_dim`. The names are
# also in config.MODELS, where configs are checked without importing torch (a test keeps the two
# equal); docs/extending.md, "A model".
ENCODERS = {
    "cnn": lambda in_channels, width, image_size: CNNEncoder(in_channels, width, batch_norm=False,
                                                             image_size=image_size),
    "cnn_bn": lambda in_channels, width, image_size: CNNEncoder(in_channels, width, batch_norm=True,
                                                                image_size=image_size),
    "resnet18": lambda in_channels, width, image_size: ResNet18Encoder(in_channels, width),
}


def build_model(name: str, in_channels: int, n_classes: int, width: float = 1.0, image_size: int = 28) -> SplitModel:
    if name not in ENCODERS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(ENCODERS)}")
    enc = ENCODERS[name](in_channels, width, image_size)
    return SplitModel(enc, nn.Linear(enc.out_dim, n_classes))

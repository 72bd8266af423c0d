"""The PyTorch peer of `cargo bench -p stdac --bench train_step`: the same ST-DAC network (by default the
paper's, dense width 3096, with input and block-2 spatial transformers), the same DAC* step (targets on the
clean batch with the batch's BatchNorm statistics and no dropout, affine augmentation through the sampler,
pair loss with the authors' self term, Adam), on the same batch of images, timed the same way. Written for
the benchmark only; it is not a second implementation of the trainer.

ARCH is `paper` (default) or `edge` (the small all-convolutional network); STN is a comma-separated list of
transformer positions among input,block2,block3 (default input,block2), or `none`.

usage: st_dac_step.py IMAGES.f32 N STEPS THREADS [cpu|cuda] [paper|edge] [STN]
prints the network's parameter count to stderr, and one JSON line:
{"images_per_s": ..., "step_ms": ... (the median step), "torch": ..., "threads": ..., "device": ..., "arch": ..., "stn": [...],
 "peak_rss_mib": ...}
"""

import json
import math
import resource
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-7
POSITIONS = ("input", "block2", "block3")


class SpatialTransformer(nn.Module):
    """Localization net sized for a C x S x S map as host/src/st_dac/stn.rs sizes it."""

    def __init__(self, channels, size):
        super().__init__()
        layers, c, s = [], channels, size
        for _ in range(2):
            if s >= 2:
                layers.append(nn.MaxPool2d(2))
                s //= 2
            k = min(5, s)
            layers += [nn.Conv2d(c, 20, k), nn.Tanh()]
            c, s = 20, s - k + 1
        self.features = nn.Sequential(*layers)
        self.hidden = nn.Linear(c * s * s, 50)
        self.theta = nn.Linear(50, 6)
        nn.init.zeros_(self.theta.weight)
        nn.init.zeros_(self.theta.bias)
        self.register_buffer("identity", torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, x):
        h = torch.tanh(self.hidden(self.features(x).flatten(1)))
        theta = (torch.tanh(self.theta(h)) + self.identity).view(-1, 2, 3)
        return warp(x, theta)


def warp(x, theta):
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def transformer(stn, position, channels, size):
    """A transformer at `position` if `stn` names it, else nothing."""
    return SpatialTransformer(channels, size) if position in stn else nn.Identity()


def constraint(logits):
    """DAC's constraint layer: exp(l - max l), normalised to unit length."""
    e = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
    return e / e.norm(dim=1, keepdim=True)


class StDac(nn.Module):
    """The paper's network (host/src/st_dac/model.rs)."""

    def __init__(self, stn, clusters=10, width=3096):
        super().__init__()
        self.stn_input = transformer(stn, "input", 1, 28)
        self.conv1, self.bn1, self.bn1_pool = nn.Conv2d(1, 64, 3, padding=1), nn.BatchNorm2d(64), nn.BatchNorm2d(64)
        self.conv2, self.bn2 = nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128)
        self.stn_block2 = transformer(stn, "block2", 128, 14)
        self.bn2_pool = nn.BatchNorm2d(128)
        self.conv3, self.bn3 = nn.Conv2d(128, 256, 3, padding=1), nn.BatchNorm2d(256)
        self.stn_block3 = transformer(stn, "block3", 256, 7)
        self.dense, self.bn_dense = nn.Linear(256 * 7 * 7, width), nn.BatchNorm1d(width)
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(width, clusters)

    def forward(self, x):
        x = self.stn_input(x)
        x = self.bn1_pool(F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2))
        x = self.stn_block2(F.relu(self.bn2(self.conv2(x))))
        x = self.bn2_pool(F.max_pool2d(x, 2))
        x = self.stn_block3(F.relu(self.bn3(self.conv3(x))))
        x = F.relu(self.bn_dense(self.dense(x.flatten(1))))
        return constraint(self.head(self.dropout(x)))


def conv_bn_relu(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


class Edge(nn.Module):
    """The edge network: five 3x3 convolutions, a last max-pool to 64 x 3 x 3, dense 128, no dropout."""

    def __init__(self, stn, clusters=10):
        super().__init__()
        self.stn_input = transformer(stn, "input", 1, 28)
        self.block1 = nn.Sequential(conv_bn_relu(1, 32), conv_bn_relu(32, 32))  # [N, 32, 28, 28]
        self.block2 = nn.Sequential(conv_bn_relu(32, 64), conv_bn_relu(64, 64))  # [N, 64, 14, 14]
        self.stn_block2 = transformer(stn, "block2", 64, 14)
        self.block3 = conv_bn_relu(64, 64)  # [N, 64, 7, 7]
        self.stn_block3 = transformer(stn, "block3", 64, 7)
        self.dense = nn.Sequential(nn.Linear(64 * 3 * 3, 128), nn.BatchNorm1d(128), nn.ReLU())
        self.head = nn.Linear(128, clusters)

    def forward(self, x):
        x = F.max_pool2d(self.block1(self.stn_input(x)), 2)
        x = F.max_pool2d(self.stn_block2(self.block2(x)), 2)
        x = F.max_pool2d(self.stn_block3(self.block3(x)), 2).flatten(1)  # [N, 576]
        return constraint(self.head(self.dense(x)))


def augmentation_thetas(n, gen):
    """MNIST settings: rotation +-10 degrees, shift 0.1, zoom [0.95, 1.05] per axis."""
    u = lambda a, b: torch.rand(n, generator=gen) * (b - a) + a
    angle = u(-10.0, 10.0) * math.pi / 180
    tx, ty = 2 * u(-0.1, 0.1), 2 * u(-0.1, 0.1)
    zx, zy = u(0.95, 1.05), u(0.95, 1.05)
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([c * zx, -s * zy, tx, s * zx, c * zy, ty], dim=1).view(n, 2, 3)


def pair_loss(outputs, targets, threshold, self_weight):
    sim = (outputs @ outputs.T).clamp(EPS, 1 - EPS)
    tsim = targets @ targets.T
    pos, neg = (tsim > threshold).float(), (tsim <= threshold).float()
    count = (pos + neg).sum()
    loss = -(pos * sim.log() + neg * (1 - sim).log()).sum() / count.clamp_min(1.0)
    out = outputs.clamp(EPS, 1 - EPS)
    own = -(targets * out.log() + (1 - targets) * (1 - out).log())
    return loss + self_weight * own.mean()


def main():
    path, n, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    device = sys.argv[5] if len(sys.argv) > 5 else "cpu"
    arch = sys.argv[6] if len(sys.argv) > 6 else "paper"
    stn_arg = sys.argv[7] if len(sys.argv) > 7 else "input,block2"
    stn = [] if stn_arg == "none" else stn_arg.split(",")
    if arch not in ("paper", "edge") or not set(stn) <= set(POSITIONS):
        sys.exit(__doc__)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    images = torch.from_numpy(np.fromfile(path, dtype="<f4").reshape(n, 1, 28, 28).copy()).to(device)
    model = (StDac if arch == "paper" else Edge)(stn).to(device)
    print(f"{arch} network, stn {stn_arg}: {sum(p.numel() for p in model.parameters())} parameters",
          file=sys.stderr)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        # Targets as the Rust side takes them: the batch's own BatchNorm statistics (training mode, which
        # also updates the running statistics, as there) and no dropout.
        model.train()
        for d in dropouts:
            d.eval()
        with torch.no_grad():
            targets = model(images)
        model.train()
        augmented = warp(images, augmentation_thetas(n, gen).to(device))
        loss = pair_loss(model(augmented), targets, 0.99, 10.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    step()  # warm-up, as the Rust side does
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()  # loss.item() waits for the device, as into_scalar does on the Rust side
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)  # the median step, as the Rust side reports
    print(json.dumps({"images_per_s": n / seconds, "step_ms": 1e3 * seconds, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "device": device, "arch": arch, "stn": stn,
                      # ru_maxrss is in KiB on Linux: the process's peak resident memory.
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()

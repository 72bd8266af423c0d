"""The PyTorch peer of `cargo bench -p stdac --bench dcn_step`: the same dense autoencoder (784-500-500-2000-10,
ReLU, sigmoid output), the same two steps (a plain autoencoder step; a DCN joint step: reconstruction +
(lambda/2)·||z - c(s)||^2 toward each code's nearest centroid, Adam, then re-encoding the batch and moving
each centroid toward its members by 1/count), on the same batch of images, timed the same way. Written for
the benchmark only; it is not a second implementation of the trainer.

usage: dcn_step.py IMAGES.f32 N STEPS THREADS [cpu|cuda]
prints one JSON line: {"ae_images_per_s": ..., "dcn_images_per_s": ..., "torch": ..., "threads": ..., "device": ...}
"""

import json
import sys
import time

import numpy as np
import torch
import torch.nn as nn

HIDDEN = [500, 500, 2000]
LATENT = 10
K = 10


class Autoencoder(nn.Module):
    def __init__(self, dim):
        super().__init__()
        widths = [dim] + HIDDEN
        enc = []
        for a, b in zip(widths, widths[1:]):
            enc += [nn.Linear(a, b), nn.ReLU()]
        self.encoder = nn.Sequential(*enc, nn.Linear(widths[-1], LATENT))
        dec, last = [], LATENT
        for w in reversed(widths[1:]):
            dec += [nn.Linear(last, w), nn.ReLU()]
            last = w
        self.decoder = nn.Sequential(*dec, nn.Linear(last, dim), nn.Sigmoid())

    def forward(self, x):
        z = self.encoder(x)
        return z, self.decoder(z)


def main():
    path, n, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    device = sys.argv[5] if len(sys.argv) > 5 else "cpu"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.from_numpy(np.fromfile(path, dtype=np.float32).reshape(n, 784)).to(device)
    model = Autoencoder(784).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    centroids = torch.randn(K, LATENT, device=device)
    counts = torch.full((K,), 100.0, device=device)

    def ae_step():
        optimizer.zero_grad()
        _, r = model(x)
        loss = ((r - x) ** 2).sum(1).mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    def dcn_step():
        optimizer.zero_grad()
        z, r = model(x)
        nearest = torch.cdist(z.detach(), centroids).argmin(1)
        loss = ((r - x) ** 2).sum(1).mean() + 0.5 * ((z - centroids[nearest]) ** 2).sum(1).mean()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            z = model.encoder(x)
            for i, c in enumerate(torch.cdist(z, centroids).argmin(1).tolist()):
                counts[c] += 1
                centroids[c] -= (centroids[c] - z[i]) / counts[c]
        return loss.item()

    rates = {}
    for name, step in [("ae", ae_step), ("dcn", dcn_step)]:
        step()  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(steps):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - started) / steps
        rates[f"{name}_images_per_s"] = n / seconds
        rates[f"{name}_step_ms"] = 1e3 * seconds
    print(json.dumps({**rates, "torch": torch.__version__, "threads": threads, "device": device}))


if __name__ == "__main__":
    main()

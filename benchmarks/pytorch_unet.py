#!/usr/bin/env python3
"""The baseline for image_networks' small UNet rows: the same network in PyTorch.

A PyTorch module with the layers, names and order of computation of
diffctl::models::UNet at UNetOptions::small(28, 1, 10) (minimal-diffusion's UNet
narrowed: base width 16, channel_mult (1, 2, 2), one ResBlock per level, GroupNorm
of 8 groups, attention at 7x7 and in the middle block with 16-channel heads,
strided-conv downsampling, nearest + conv upsampling), timed as image_networks
times it: batch 64 of 1x28x28, t spread over [0, 999], labels 0..9 in turn;
`forward` in eval mode under no_grad, `forward_backward` in train mode, a
mean-square loss's backward, no optimizer step; each iteration ends by reading one
number. Medians over repetitions, for each thread count asked.

    python3 benchmarks/pytorch_unet.py --threads 1 2
    python3 benchmarks/pytorch_unet.py --weights out/diffusion/model.pt   # also: load a diffctl file

--weights loads a state dict that pretrain_diffusion wrote (strict: every name and
shape must match) before timing, which checks that this is the network the C++
side trains, and prints the output's sum on a fixed input. Debian's python3-torch
is the PyTorch this measures against; it is never a dependency of the library.
"""
import argparse
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t, dim, max_period=10000.0):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def upsample2x(x):
    h, w = x.shape[-2:]
    out = F.interpolate(x, size=(2 * h, 2 * w), mode="nearest")
    if h == 3 or w == 3:
        out = F.pad(out, (1 if w == 3 else 0, 0, 1 if h == 3 else 0, 0))
    return out


class ResBlock(nn.Module):
    def __init__(self, channels, emb_channels, dropout, out_channels, groups):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.out_layers = nn.Sequential(nn.GroupNorm(groups, out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        nn.init.zeros_(self.out_layers[3].weight)
        nn.init.zeros_(self.out_layers[3].bias)
        self.skip_connection = nn.Conv2d(channels, out_channels, 1) if out_channels != channels else nn.Identity()

    def forward(self, x, emb):
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift  # scale-shift norm
        h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    def __init__(self, channels, heads, groups):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x):
        b, c = x.shape[:2]
        flat = x.reshape(b, c, -1)
        length, ch = flat.shape[2], c // self.heads
        q, k, v = self.qkv(self.norm(flat)).chunk(3, dim=1)  # the new attention order
        q, k, v = (part.reshape(b * self.heads, ch, length) for part in (q, k, v))
        scale = 1.0 / math.sqrt(math.sqrt(ch))
        weight = torch.softmax(torch.bmm((q * scale).transpose(1, 2), k * scale), dim=-1)
        attended = torch.bmm(v, weight.transpose(1, 2)).reshape(b, c, length)
        return (flat + self.proj_out(attended)).reshape(x.shape)


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(upsample2x(x))


class Stage(nn.Sequential):
    """guided-diffusion's TimestepEmbedSequential."""

    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class SmallUNet(nn.Module):
    def __init__(self, in_channels=1, classes=10, base=16, mult=(1, 2, 2), groups=8, head_channels=16,
                 attention_levels=(2,), dropout=0.1):
        super().__init__()
        emb = 4 * base
        self.base = base
        self.time_embed = nn.Sequential(nn.Linear(base, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label_emb = nn.Embedding(classes, emb) if classes > 0 else None
        ch = base * mult[0]
        skips = [ch]
        self.input_blocks = nn.ModuleList([Stage(nn.Conv2d(in_channels, ch, 3, padding=1))])
        for level, m in enumerate(mult):
            stage = Stage(ResBlock(ch, emb, dropout, base * m, groups))
            ch = base * m
            if level in attention_levels:
                stage.append(AttentionBlock(ch, ch // head_channels, groups))
            self.input_blocks.append(stage)
            skips.append(ch)
            if level + 1 < len(mult):
                self.input_blocks.append(Stage(Downsample(ch)))
                skips.append(ch)
        self.middle_block = Stage(ResBlock(ch, emb, dropout, ch, groups),
                                  AttentionBlock(ch, ch // head_channels, groups),
                                  ResBlock(ch, emb, dropout, ch, groups))
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(mult))):
            for i in range(2):
                stage = Stage(ResBlock(ch + skips.pop(), emb, dropout, base * mult[level], groups))
                ch = base * mult[level]
                if level in attention_levels:
                    stage.append(AttentionBlock(ch, ch // head_channels, groups))
                if level > 0 and i == 1:
                    stage.append(Upsample(ch))
                self.output_blocks.append(stage)
        self.out = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(),
                                 nn.Conv2d(base * mult[0], in_channels, 3, padding=1))
        nn.init.zeros_(self.out[2].weight)
        nn.init.zeros_(self.out[2].bias)

    def forward(self, x, t, y):
        emb = self.time_embed(timestep_embedding(t, self.base))
        if self.label_emb is not None:
            emb = emb + self.label_emb(y)
        skips, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


def time_one(net, x, t, y, backward, repetitions, min_seconds):
    """Median seconds per iteration over `repetitions` runs of >= min_seconds each."""
    net.train(backward)

    def iteration():
        if backward:
            net.zero_grad(set_to_none=True)
            net(x, t, y).square().mean().backward()
            return next(net.parameters()).grad[0].sum().item()
        with torch.no_grad():
            return net(x, t, y)[0].sum().item()

    for _ in range(3):  # warm-up: allocator, oneDNN primitives
        iteration()
    medians = []
    for _ in range(repetitions):
        count, start = 0, time.perf_counter()
        while True:
            iteration()
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        medians.append(elapsed / count)
    return statistics.median(medians)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=2.0, help="per repetition")
    parser.add_argument("--weights", help="a state dict written by pretrain_diffusion (model.pt), loaded strictly")
    args = parser.parse_args()

    torch.manual_seed(1)
    weights = torch.load(args.weights, map_location="cpu") if args.weights else None
    # An unconditional file (no label_emb) times the unconditional network.
    net = SmallUNet(classes=10 if weights is None or "label_emb.weight" in weights else 0)
    if weights is not None:
        net.load_state_dict(weights, strict=True)
    parameters = sum(p.numel() for p in net.parameters())
    if weights is not None:  # a fixed input, to compare with the C++ UNet on the same file
        net.eval()
        with torch.no_grad():
            probe = torch.sin(torch.arange(8 * 784, dtype=torch.float32) * 0.37).reshape(8, 1, 28, 28)
            y_probe = torch.arange(8) % 10 if net.label_emb is not None else None
            total = net(probe, torch.linspace(0, 999, 8), y_probe).sum()
            print(f"output sum on sin(0.37 k), t = linspace(0, 999, 8): {total:.9g}")
    x = torch.randn(args.batch, 1, 28, 28)
    t = torch.linspace(0, 999, args.batch)
    y = torch.arange(args.batch) % 10
    print(f"PyTorch {torch.__version__}, {parameters:,} parameters, batch {args.batch}"
          + (f", weights {args.weights}" if args.weights else ""))
    print("| threads | forward, ms (images/s) | forward + backward, ms (images/s) |")
    print("|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        cells = []
        for backward in (False, True):
            seconds = time_one(net, x, t, y, backward, args.repetitions, args.min_seconds)
            cells.append(f"{1e3 * seconds:.1f} ({args.batch / seconds:,.0f})")
        print(f"| {threads} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()

"""Train `TwoScaleNet` with a plain PyTorch loop, as a user would outside mtunlearn, and save it
with `torch.save(model.state_dict(), ...)`. Reads the .npy layout directly (numpy only).

    python examples/own_model/train_elsewhere.py DATA_ROOT OUT.pt [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from my_models import TwoScaleNet


def load_split(root: Path, split: str, tasks: dict[str, dict]) -> dict[str, torch.Tensor]:
    ids = sorted(int(p.stem) for p in (root / split / "image").glob("*.npy"))
    data = {"image": torch.from_numpy(np.stack([np.load(root / split / "image" / f"{i}.npy")
                                                for i in ids])).permute(0, 3, 1, 2).float()}
    for name, task in tasks.items():
        arrays = np.stack([np.load(root / split / task["folder"] / f"{i}.npy") for i in ids])
        tensor = torch.from_numpy(arrays)
        if task["kind"] == "segmentation":
            data[name] = tensor.long()  # (N, H, W)
        else:  # (N, H, W, C) -> (N, C, H, W); (N, H, W) -> (N, 1, H, W)
            data[name] = tensor.float().permute(0, 3, 1, 2) if tensor.dim() == 4 else tensor.float()[:, None]
    return data


def loss(name: str, kind: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "segmentation":
        return F.cross_entropy(pred, target, ignore_index=-1)
    if kind == "depth":
        valid = target > 0
        return (pred - target).abs()[valid].mean()
    valid = (target != 0).any(1)
    return (1 - (F.normalize(pred, dim=1) * target).sum(1))[valid].mean()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    tasks = json.loads((args.root / "meta.json").read_text())["tasks"]
    data = load_split(args.root, "train", tasks)
    model = TwoScaleNet({name: task["channels"] for name, task in tasks.items()}, args.width)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    count = data["image"].shape[0]
    for epoch in range(args.epochs):
        order = torch.randperm(count)
        for start in range(0, count, 16):
            picked = order[start:start + 16]
            out = model(data["image"][picked])
            total = sum(loss(n, t["kind"], out[n], data[n][picked]) for n, t in tasks.items())
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}: loss {float(total):.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()

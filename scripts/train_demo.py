#!/usr/bin/env python3
"""Train the demo TopFormer-Tiny on the synthetic dataset (topformer_deploy.data) on a CPU.

Recipe: random crops of generated 256x256 images (+ horizontal flip), AdamW, linear warmup then cosine
decay, cross-entropy on logits upsampled to the crop size (as mmseg does). One thread by default so it
shares a small machine politely. Saves the official checkpoint layout ({'meta', 'state_dict'}, float16
tensors), then reloads that file with ``load_checkpoint`` and reports its held-out mIoU at 256x256.

    python scripts/train_demo.py                      # the recipe behind models/topformer_tiny_demo.pth
    python scripts/train_demo.py --steps 50 --train-images 64 --out /tmp/smoke.pth   # smoke run
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from topformer_deploy import __version__, build_model, load_checkpoint  # noqa: E402
from topformer_deploy.artifact import MEAN, STD  # noqa: E402
from topformer_deploy.data import CLASSES, IGNORE_INDEX, NUM_CLASSES, iter_samples  # noqa: E402
from topformer_deploy.eval.metrics import confusion_matrix, scores  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "models" / "topformer_tiny_demo.pth")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128, help="square training crop (multiple of 32)")
    p.add_argument("--image-size", type=int, default=256, help="generated image size (and eval size)")
    p.add_argument("--train-images", type=int, default=1000, help="training pool size (generated up front)")
    p.add_argument("--val-images", type=int, default=100, help="held-out 'val' split images for the final mIoU")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                   help="stop after this much training time: the cosine schedule then follows elapsed time "
                        "(whichever of steps/time runs out first), for a shared or slow machine")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=500, help="quick mIoU on 30 val images (0 = never)")
    return p.parse_args(argv)


def make_pool(count: int, size: int, seed: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for image, label in iter_samples(count, (size, size), seed, split):
        images.append(image)
        labels.append(label)
    return np.stack(images), np.stack(labels)


def normalise(images_uint8: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32, the same (x - mean) / std as data.preprocess."""
    x = images_uint8.permute(0, 3, 1, 2).float()
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def sample_batch(images, labels, batch: int, crop: int, gen: torch.Generator):
    n, h, w = labels.shape
    idx = torch.randint(n, (batch,), generator=gen)
    ys = torch.randint(h - crop + 1, (batch,), generator=gen)
    xs = torch.randint(w - crop + 1, (batch,), generator=gen)
    flips = torch.rand(batch, generator=gen) < 0.5
    xb, yb = [], []
    for i, y, x, f in zip(idx.tolist(), ys.tolist(), xs.tolist(), flips.tolist()):
        img, lab = images[i, y:y + crop, x:x + crop], labels[i, y:y + crop, x:x + crop]
        if f:
            img, lab = img.flip(1), lab.flip(1)
        xb.append(img)
        yb.append(lab)
    return normalise(torch.stack(xb)), torch.stack(yb).long()


def lr_at(step: int, progress: float, base: float, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to 1% as ``progress`` goes 0 -> 1."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@torch.no_grad()
def evaluate_pool(model, images, labels) -> dict:
    """Held-out mIoU at the images' own size: logits upsampled to the label size, then argmax."""
    model.eval()
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for start in range(0, len(images), 8):
        x = normalise(images[start:start + 8])
        logits = F.interpolate(model(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        pred = logits.argmax(1).numpy()
        for p, lab in zip(pred, labels[start:start + 8].numpy()):
            lab = np.where(lab == IGNORE_INDEX, -1, lab)
            confusion += confusion_matrix(p, lab, NUM_CLASSES)
    return scores(confusion)


def save_official(model, path: Path, meta: dict) -> None:
    """Official mmcv layout, float16 tensors (integer buffers kept), written atomically."""
    state = {k: (v.half() if v.is_floating_point() else v).clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        torch.save({"meta": meta, "state_dict": state}, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.crop % 32 or args.crop > args.image_size:
        raise SystemExit("--crop must be a multiple of 32 and at most --image-size")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    images, labels = map(torch.from_numpy, make_pool(args.train_images, args.image_size, args.seed, "train"))
    val_images, val_labels = map(torch.from_numpy, make_pool(args.val_images, args.image_size, args.seed, "val"))
    print(f"generated {len(images)} train + {len(val_images)} val images in {time.time() - t0:.0f}s", flush=True)

    model = build_model("tiny", NUM_CLASSES).train()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    t_train = time.time()
    running = None
    budget = args.time_budget * 60 if args.time_budget else None
    steps_done = 0
    for step in range(args.steps):
        progress = (step - args.warmup) / max(1, args.steps - args.warmup)
        if budget:
            progress = max(progress, (time.time() - t_train) / budget)
            if progress >= 1.0:
                break
        for group in opt.param_groups:
            group["lr"] = lr_at(step, progress, args.lr, args.warmup)
        x, y = sample_batch(images, labels, args.batch, args.crop, gen)
        logits = F.interpolate(model(x), size=y.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        steps_done = step + 1
        if (step + 1) % args.log_every == 0 or step == 0:
            elapsed = time.time() - t_train
            eta = elapsed / (step + 1) * (args.steps - step - 1)
            if budget:
                eta = min(eta, budget - elapsed)
            print(f"step {step + 1}/{args.steps} loss {running:.4f} lr {opt.param_groups[0]['lr']:.2e} "
                  f"elapsed {elapsed / 60:.1f} min eta {eta / 60:.1f} min", flush=True)
        if args.eval_every and (step + 1) % args.eval_every == 0:
            quick = evaluate_pool(model, val_images[:30], val_labels[:30])
            print(f"step {step + 1}: val mIoU ({len(val_images[:30])} images) {quick['miou']:.4f}", flush=True)
            model.train()
    train_seconds = time.time() - t_train

    meta = {"name": "topformer_tiny_demo", "variant": "tiny", "num_classes": NUM_CLASSES, "classes": list(CLASSES),
            "dataset": {"generator": "topformer_deploy.data", "seed": args.seed, "train_images": args.train_images,
                        "image_size": args.image_size, "label_convention": "0 = background class, 255 = ignore"},
            "recipe": {k: v for k, v in vars(args).items() if k != "out"},
            "steps_done": steps_done, "train_seconds": round(train_seconds, 1),
            "topformer_deploy": __version__, "torch": str(torch.__version__)}
    save_official(model, args.out, meta)
    reloaded = load_checkpoint(args.out)  # what users get: the float16 file cast back to float32
    result = evaluate_pool(reloaded, val_images, val_labels)
    summary = {"checkpoint": str(args.out), "size_bytes": args.out.stat().st_size,
               "train_minutes": round(train_seconds / 60, 1), "steps": steps_done,
               "val_images": args.val_images, "eval_size": [args.image_size, args.image_size],
               "miou": round(result["miou"], 4), "pixel_accuracy": round(result["pixel_accuracy"], 4),
               "per_class_iou": {c: (round(v, 4) if v is not None else None)
                                 for c, v in zip(CLASSES, result["per_class_iou"])}}
    print(json.dumps(summary, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training augmentation: presets named by what they do, their folder transforms, the tensor
ops that augment whole batches (Fashion-MNIST's flips and shifts, random erasing of any),
and `--augment auto`, which picks a preset for a folder of images on a validation split.

    none        the image as it is tested (resized, centre-cropped)
    shift       random shifts of up to SHIFT of the side, zero-filled (28 pixels: 2)
    flip-shift  shift, and random horizontal flips
    crop        random resized crops; the smallest area grows as the image shrinks
                (crop_scale), so a tiny image keeps its object
    crop-flip   crop, and random horizontal flips (ImageNet's recipe for photos)

Evaluation never augments. Random erasing is a switch of its own (--random-erasing).

`auto` looks at the folder's image size first: small images (digits, icons, Fashion-MNIST
as files) take the shift family (none, shift, flip-shift), photos the crop family (none,
crop, crop-flip). It then trains a trial model briefly with the family's mild preset and
measures every preset on held-out training images: the share of the trial model's accuracy
above chance that each keeps on augmented copies of them. A preset that turns a left arrow
into a right one, or makes a digit unreadable, loses most of it. The choice is the
family's strongest preset that keeps KEEP of it. Presets do not race in short training runs
of their own: a few dozen steps see what augmentation costs early and little of what it
gives late, so such a race would lean to `none`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import BadArgument

if TYPE_CHECKING:  # annotations only: no torch at import
    import torch


@dataclass(frozen=True)
class Preset:
    """What a preset does to a training image."""
    name: str
    crop: bool  # a random resized crop (crop_scale), else resized and centre-cropped as tested
    shift: bool  # random shifts of up to SHIFT of the side, zero-filled
    flip: bool  # random horizontal flips


# From mildest to strongest; flip (flips alone) is what runs before the presets had.
_TABLE = (Preset("none", False, False, False), Preset("shift", False, True, False),
          Preset("flip-shift", False, True, True), Preset("crop", True, False, False),
          Preset("crop-flip", True, False, True), Preset("flip", False, False, True))
PRESETS = tuple(p.name for p in _TABLE if p.name != "flip")
AUGMENTATIONS = (*(p.name for p in _TABLE), "auto")
FAMILIES = {"small": ("none", "shift", "flip-shift"), "photo": ("none", "crop", "crop-flip")}
PHOTO_SIDE = 128  # a folder whose median short side is this or more holds photos: crops keep the object
FASHION_PRESET = "flip-shift"  # Fashion-MNIST's recipe, what auto gives it (docs/training.md, "The full run")
SHIFT = 1 / 14  # of the side: 2 pixels of Fashion-MNIST's 28
KEEP = 0.75  # of the trial model's accuracy above chance that a preset must keep on validation images
MAX_TRIAL_STEPS = 500  # a long run's trial need not grow with it
TRIAL_SHARE = 0.12  # of the run's training steps that the trial model trains (evaluating it costs about 2% more)


def preset_named(name: str) -> Preset:
    """The preset named `name` (one of AUGMENTATIONS but auto)."""
    found = next((p for p in _TABLE if p.name == name), None)
    if found is None:
        raise BadArgument(f"--augment {name!r}: use one of {', '.join(AUGMENTATIONS)}")
    return found


def shift_pixels(size: int) -> int:
    """The largest shift of the `shift` presets for a side of `size` pixels."""
    return max(1, round(size * SHIFT))


def crop_scale(short_side: int) -> float:
    """The smallest area (of 1) a crop keeps of an image whose short side is `short_side`:
    0.25 from 224 pixels up (Inception's crops are 0.08; small models need less, §3.2),
    growing to about 0.9 at 28 pixels."""
    return min(0.9, max(0.25, 1 - 0.75 * short_side / 224))


class SizedCrop:
    """RandomResizedCrop to `size`, with the smallest area set by the image's own size."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image):
        from torchvision.transforms import RandomResizedCrop
        from torchvision.transforms.v2 import functional as TF

        scale = crop_scale(min(image.size))
        top, left, h, w = RandomResizedCrop.get_params(image, (scale, 1.0), (3 / 4, 4 / 3))
        return TF.resized_crop(image, top, left, h, w, [self.size, self.size], antialias=True)


def folder_transforms(resolution: int, mean, std, preset: str = "none"):
    """torchvision transforms from a PIL image to a normalised tensor: `preset` for
    training, "none" (resize to 256/224 of the resolution, centre crop) for testing."""
    import torch
    from torchvision.transforms import v2

    does = preset_named(preset)
    if does.crop:
        head = [SizedCrop(resolution)]
    else:
        head = [v2.Resize(round(resolution * 256 / 224), antialias=True), v2.CenterCrop(resolution)]
        if does.shift:
            head.append(v2.RandomCrop(resolution, padding=shift_pixels(resolution)))
    if does.flip:
        head.append(v2.RandomHorizontalFlip())
    return v2.Compose([*head, v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def check_fashion_preset(preset: str) -> None:
    """Crops are for image folders: Fashion-MNIST's batches are shifted and flipped as tensors."""
    if preset != "auto" and preset_named(preset).crop:
        raise BadArgument(f"--augment {preset} is for image folders; Fashion-MNIST takes none, shift, flip or "
                          "flip-shift (auto: its recipe, flip-shift)")


# --- whole batches as tensor ops, on the batch's device (torch imported here only) -------

def flip_and_shift(x: torch.Tensor, pad: int, generator: torch.Generator, flip: bool = True) -> torch.Tensor:
    """Batch augmentation as tensor ops: random horizontal flip (unless flip=False), then a
    random shift of up to `pad` pixels (zero padding, then a random crop back to size)."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = x.shape
    if pad < 0:  # no augmentation at all
        return x
    on = {"device": x.device}
    if flip:
        mirrored = torch.rand(n, generator=generator, **on) < 0.5
        x = torch.where(mirrored.view(n, 1, 1, 1), x.flip(-1), x)
    if pad:
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, **on)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, **on)
        rows = (dy.view(n, 1) + torch.arange(h, **on)).view(n, 1, h, 1).expand(n, c, h, w + 2 * pad)
        padded = padded.gather(2, rows)
        cols = (dx.view(n, 1) + torch.arange(w, **on)).view(n, 1, 1, w).expand(n, c, h, w)
        x = padded.gather(3, cols)
    return x


def random_erasing(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Random erasing (Zhong et al., 2017) as tensor ops on a normalised batch: with
    probability p an image gets one rectangle of 2-33% of its area, aspect ratio 0.3-3.3,
    filled with noise. On x's device, with a generator there."""
    import torch

    n, c, h, w = x.shape
    on = {"device": x.device}
    area = torch.empty(n, **on).uniform_(0.02, 0.33, generator=generator) * h * w
    aspect = torch.empty(n, **on).uniform_(math.log(0.3), math.log(3.3), generator=generator).exp()
    eh = (area * aspect).sqrt().round().clamp(1, h)
    ew = (area / aspect).sqrt().round().clamp(1, w)
    y0 = (torch.rand(n, generator=generator, **on) * (h - eh + 1)).floor()
    x0 = (torch.rand(n, generator=generator, **on) * (w - ew + 1)).floor()
    rows, cols = torch.arange(h, **on).view(1, h), torch.arange(w, **on).view(1, w)
    inside = (((rows >= y0[:, None]) & (rows < (y0 + eh)[:, None]))[:, :, None]
              & ((cols >= x0[:, None]) & (cols < (x0 + ew)[:, None]))[:, None, :])
    chosen = torch.rand(n, generator=generator, **on) < p
    mask = (inside & chosen.view(n, 1, 1)).unsqueeze(1)  # (n, 1, h, w)
    return torch.where(mask, torch.randn(x.shape, generator=generator, dtype=x.dtype, **on), x)


def kept_share(clean: float, augmented: float, classes: int) -> float:
    """How much of the accuracy above chance survives the augmentation (1: all of it)."""
    chance = 1 / classes
    return (augmented - chance) / max(clean - chance, 1e-9)


def family(short_side: float) -> tuple[str, ...]:
    """The presets auto chooses among for images of this (median) short side, mildest first."""
    return FAMILIES["photo" if short_side >= PHOTO_SIDE else "small"]


def mild(short_side: float) -> str:
    """The family's mild preset: what the trial model trains with, and auto's fallback."""
    return family(short_side)[1]


def choose(scores: dict[str, float], clean: float, classes: int, candidates: tuple[str, ...]) -> str:
    """The strongest candidate whose augmented accuracy keeps KEEP of `clean` above chance."""
    kept = [p for p in candidates if p == "none" or kept_share(clean, scores[p], classes) >= KEEP]
    return kept[-1]


def trial_steps(run_steps: int) -> int:
    """TRIAL_SHARE of the run's steps, at most MAX_TRIAL_STEPS: enough to judge what a preset keeps."""
    return max(1, min(MAX_TRIAL_STEPS, math.ceil(TRIAL_SHARE * run_steps)))


def choice_line(record: dict) -> str:
    """The log's line on the choice that `record` (trial.run_trial's, kept in config.json) says."""
    if record["chosen_by"] == "fallback":
        return f"--augment auto: {record['preset']}, the mild preset for these images: {record['reason']}"
    trial = record["trial"]
    kept = ", ".join(f"{p} {100 * share:.0f}%" for p, share in trial["kept"].items())
    return (f"--augment auto: {record['preset']}, by a trial of {trial['steps']} steps on {trial['train_images']} "
            f"training images ({trial['seconds']:.1f}s), judged on {trial['val_images']} held-out training images: "
            f"{100 * trial['val_accuracy']['none']:.1f}% as they are; accuracy above chance kept by {kept}")

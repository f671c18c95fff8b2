"""Named recipes. The paper presets equal the official recipes.

Source: sail-sg/mugs, ``pretraining.sh`` and README (ViT-S/16 100/300/800 ep, ViT-B/16 400 ep,
ViT-L/16 250 ep). Per-GPU batch x GPUs: ViT-S 100 ep 64x8=512, ViT-S 300/800 ep 64x16=1024,
ViT-B 42x24=1008, ViT-L 16x40=640. ``train.batch_size`` here is per process, so a preset
states the per-GPU batch and ``world_size_hint`` is documentation only.
"""

from __future__ import annotations

import copy
from typing import Any

from mugs.errors import ConfigError

_VIT_S_COMMON: dict[str, Any] = {
    "model": {"arch": "vit_small", "patch_size": 16, "drop_path_rate": 0.1, "norm_last_layer": False},
    "method": {
        "loss_weights": [1.0, 1.0, 1.0],
        "instance_queue_size": 65536,
        "local_group_queue_size": 65536,
        "memory_size": 65536,
        "topk": 8,
        "group_warmup_teacher_temp": 0.04,
    },
    "data": {"dataset": "imagefolder", "image_size": 224, "local_crop_size": 96, "local_crops_number": 10},
    "train": {
        "batch_size": 64,
        "lr": 0.0008,
        "min_lr": 1e-6,
        "warmup_epochs": 10,
        "weight_decay": 0.04,
        "clip_grad": 3.0,
        "freeze_last_layer": 1,
        "momentum_teacher": 0.996,
        "patch_embed_lr_mult": 0.2,
    },
}


def _with(base: dict[str, Any], **sections: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for sec, vals in sections.items():
        out.setdefault(sec, {}).update(vals)
    return out


PRESETS: dict[str, dict[str, Any]] = {
    "vit_s16_100ep": _with(
        _VIT_S_COMMON,
        method={"group_teacher_temp": 0.04, "group_warmup_teacher_temp_epochs": 0},
        train={"epochs": 100, "weight_decay_end": 0.2},
        eval={"n_last_blocks": 4, "avgpool_patchtokens": False},
    ),
    "vit_s16_300ep": _with(
        _VIT_S_COMMON,
        method={"group_teacher_temp": 0.07, "group_warmup_teacher_temp_epochs": 30},
        train={"epochs": 300, "weight_decay_end": 0.1},
        eval={"n_last_blocks": 4, "avgpool_patchtokens": False},
    ),
    "vit_s16_800ep": _with(
        _VIT_S_COMMON,
        method={"group_teacher_temp": 0.07, "group_warmup_teacher_temp_epochs": 30},
        train={"epochs": 800, "weight_decay_end": 0.1},
        eval={"n_last_blocks": 4, "avgpool_patchtokens": False},
    ),
    "vit_b16_400ep": _with(
        _VIT_S_COMMON,
        model={"arch": "vit_base", "drop_path_rate": 0.1, "norm_last_layer": False},
        method={"group_teacher_temp": 0.07, "group_warmup_teacher_temp_epochs": 50},
        train={
            "epochs": 400,
            "batch_size": 42,
            "min_lr": 2e-6,
            "weight_decay_end": 0.1,
            "freeze_last_layer": 3,
        },
        eval={"n_last_blocks": 1, "avgpool_patchtokens": True},
    ),
    "vit_l16_250ep": _with(
        _VIT_S_COMMON,
        model={"arch": "vit_large", "drop_path_rate": 0.3, "norm_last_layer": True},
        method={"group_teacher_temp": 0.07, "group_warmup_teacher_temp_epochs": 50},
        train={
            "epochs": 250,
            "batch_size": 16,
            "lr": 0.0015,
            "min_lr": 1.5e-4,
            "weight_decay": 0.025,
            "weight_decay_end": 0.08,
            "freeze_last_layer": 3,
        },
        eval={"n_last_blocks": 1, "avgpool_patchtokens": True},
    ),
    # ViT-Tiny with 4-px patches on 32-px CIFAR-10 images; one GPU.
    "cifar10": {
        "model": {
            "arch": "vit_tiny",
            "patch_size": 4,
            "drop_path_rate": 0.1,
            "group_out_dim": 4096,
            "norm_last_layer": False,
        },
        "method": {
            "loss_weights": [1.0, 1.0, 1.0],
            "instance_queue_size": 8192,
            "local_group_queue_size": 8192,
            "memory_size": 8192,
            "topk": 8,
            "group_teacher_temp": 0.04,
            "group_warmup_teacher_temp_epochs": 0,
        },
        "data": {
            "dataset": "cifar10",
            "root": "../shared/data/cifar10",
            "image_size": 32,
            "local_crop_size": 16,
            "local_crops_number": 6,
            "global_crops_scale": [0.25, 1.0],
            "local_crops_scale": [0.05, 0.25],
        },
        "train": {
            "epochs": 100,
            "batch_size": 256,
            "lr": 0.0005,
            "warmup_epochs": 10,
            "weight_decay": 0.04,
            "weight_decay_end": 0.2,
            "freeze_last_layer": 1,
        },
        "eval": {"knn_k": [10, 20, 100, 200], "linear_epochs": 50, "n_last_blocks": 4},
    },
    # CPU minutes on scikit-learn's digits (1,797 real 8x8 scans, upsampled to 16 px).
    # Deviations from the official recipe, each measured on digits (teacher k-NN top-1 k=20 on the
    # test split after 110-176 steps, untrained 40-44 %; reports/recipe_search/demo_recipe.md):
    # - model.use_bn_in_head (official flag, off there): without BN the heads cannot even fit one
    #   fixed batch against a fixed teacher (InfoNCE 6.97 -> 6.76 in 40 steps; with BN -> 4.13);
    # - train.momentum_teacher 0.7 (official 0.996): with a few hundred steps the EMA teacher
    #   barely leaves its random init; 0.99 -> 34 %, 0.9 -> 55 %, 0.7 -> 65 % (one seed each);
    # - weak views only (data.strong_prob 0, no solarisation, no local crops, global scale
    #   0.5-1): RandAugment, erasing and 8-px local crops of a 16-px digit leave too little of it
    #   to predict the teacher's view (k-NN at the untrained value with them);
    # - no horizontal flips (data.flip_prob 0): a mirrored digit is another glyph; seeds 0/1
    #   65.9/59.7 % without flips against 64.5 % (seed 0) with them;
    # - model.depth 2 (4 before): half the model's cost buys twice the steps in the same time;
    #   220 steps at depth 2 gave 67.0/70.4 % (seeds 0/1; untrained 40.6/37.2) against 65.9 %
    #   (seed 0) for 110 steps at depth 4; a wider model (dim 128) 61.4 % and slower;
    # - train.freeze_last_layer 0 (official 1 epoch of 100+): frozen for 1 of 10 epochs, the GDS
    #   prototypes stay random while the centre catches up and the GDS-only loss rises over the
    #   run (5.24 -> 6.36); unfrozen it falls (5.08 -> 4.96) and GDS-only k-NN goes 50.7 -> 57.8 %;
    # - data.augment_backend "tensor" (the same weak views, drawn per sample and rendered per batch,
    #   mugs.data.tensor_views; official: PIL per crop): 4x cheaper data on 16-px images; 440 steps
    #   at batch 64, seeds 0-3: 71.6/62.0/69.6/72.4 % against PIL's 70.1/73.8/60.3/58.6 (within
    #   the seed noise, untrained 38.9 % mean);
    # - train.batch_size 32 (official 64 per GPU): twice the steps for the compute of batch 64;
    #   seeds 0-3 at 900 steps: 76.1/78.6/63.9/73.5 % (untrained 40.6/37.2/39.4/38.6; batch 64 for
    #   440 steps: above; batch 32 for 450 steps: 66.2/70.4/61.4/69.9);
    # - train.epochs 16 (720 steps): 20 epochs took 15 min 46 s in `make demo` (limit 15 min);
    # - method.group_teacher_temp and group_warmup_teacher_temp 0.02 (official 0.04 -> 0.04/0.07):
    #   at 0.04 the GDS-only loss of seed 0 drifts to uniform targets (5.16 -> 6.23 ~ ln 512, k-NN
    #   54.9 %) while seed 1 learns; at 0.02 both fall (4.42 -> 2.34, 4.13 -> 2.09; k-NN 50.7/62.5)
    #   and full Mugs gives 68.2/71.0 % against 70.1/73.8 at 0.04 (seeds 0/1, 720 steps each).
    "demo": {
        "model": {
            "arch": "vit_tiny",
            "patch_size": 4,
            "embed_dim": 96,
            "depth": 2,
            "num_heads": 3,
            "drop_path_rate": 0.0,
            "head_hidden_dim": 256,
            "predictor_hidden_dim": 256,
            "instance_out_dim": 64,
            "local_group_out_dim": 64,
            "group_out_dim": 512,
            "group_bottleneck_dim": 64,
            "use_bn_in_head": True,
        },
        "method": {
            "loss_weights": [1.0, 1.0, 1.0],
            "instance_queue_size": 1024,
            "local_group_queue_size": 1024,
            "memory_size": 1024,
            "topk": 8,
            "group_teacher_temp": 0.02,
            "group_warmup_teacher_temp": 0.02,
        },
        "data": {
            "dataset": "digits",
            "image_size": 16,
            "local_crop_size": 8,
            "local_crops_number": 0,
            "global_crops_scale": [0.5, 1.0],
            "local_crops_scale": [0.1, 0.4],
            "strong_prob": 0.0,
            "solarize_prob": 0.0,
            "flip_prob": 0.0,
            "num_workers": 0,
            "augment_backend": "tensor",
        },
        "train": {
            "epochs": 16,
            "batch_size": 32,
            "lr": 0.002,
            "min_lr": 1e-5,
            "warmup_epochs": 1,
            "weight_decay": 0.04,
            "weight_decay_end": 0.1,
            "freeze_last_layer": 0,
            "momentum_teacher": 0.7,
            "log_every": 5,
        },
        "eval": {"knn_k": [5, 10, 20], "linear_epochs": 30, "linear_batch_size": 128, "n_last_blocks": 1},
    },
}


# SMoG (method.name smog; mugs/methods/smog/config.py has the method defaults and their sources).
# Its paper's full text was not available to us: the ImageNet recipe below is ours (Mugs' ViT-S/16
# schedule), not the paper's; K = 3000 groups follows lightly's remark that 3000 is the optimal
# setting (lightly-ai/lightly, the first cifar10_benchmark.py with SMoG, commit 1f5394b9).
_SMOG_VIEWS = {"local_crops_number": 0, "strong_prob": 0.0, "augment_backend": "tensor"}


def _with_method(name: str, base: str, method: dict[str, Any], **sections: dict[str, Any]) -> dict[str, Any]:
    """Preset ``base`` with method ``name``'s section (replacing Mugs') and ``sections`` merged."""
    out = _with(PRESETS[base], **sections)
    out["method"] = {"name": name, **method}
    return out


def _smog(base: str, method: dict[str, Any], **sections: dict[str, Any]) -> dict[str, Any]:
    return _with_method("smog", base, method, **sections)


PRESETS["smog_demo"] = _smog(
    "demo",
    {
        "n_groups": 100,
        "bank_size": 2048,
        "reset_every": 300,
        "projector_hidden_dim": 256,
        "predictor_hidden_dim": 256,
        "out_dim": 64,
    },
    data=_SMOG_VIEWS,
)
PRESETS["smog_cifar10"] = _smog(
    "cifar10",
    {"n_groups": 300, "bank_size": 10000, "reset_every": 300},
    data={**_SMOG_VIEWS, "global_crops_scale": [0.2, 1.0], "solarize_prob": 0.0},
    train={"momentum_teacher": 0.99, "freeze_last_layer": 0},
)
PRESETS["smog_vit_s16_imagenet"] = _smog(
    "vit_s16_100ep",
    {"n_groups": 3000, "bank_size": 65536, "reset_every": 300},
    data={"local_crops_number": 0, "strong_prob": 0.0},
    train={"freeze_last_layer": 0},
)


# PW-Self (method.name pwself; mugs/methods/pwself/config.py has the method defaults and their
# sources). It needs the tensor views (crop geometry, per-patch jitter), so digits and CIFAR-10
# only for now (ImageNet's ImageFolder goes through the PIL views, which carry no geometry yet).
# pwself_demo: the demo's schedule, views and model, and these deviations, each from one probe
# (scripts/recipe_probe.py, 720 steps, teacher k-NN k=20 on digits' test split, untrained
# 40.6 % seed 0):
# - method.teacher_temp / warmup_teacher_temp 0.02 (authors 0.04) and method.head_bn on
#   (authors off): at 0.04 without BN the loss rises to uniform and k-NN falls to 35.8 %; at
#   0.02 with BN 54.1 %, but the CLS term still rises to uniform while the patch term learns;
# - the head runs on CLS tokens and patch tokens in two calls (BatchNorm statistics per kind):
#   then the CLS term falls too (4.45 -> 1.23), k-NN 51.8 % (seed 0), 55.8 % (seed 1, untrained
#   37.2); the CLS term alone (method.patch_weight 0) 47.0 % (seed 0);
# - the demo's head sizes (out_dim 512, hidden 256, bottleneck 64).
# With the patch term as a per-image mean (what DDP needs, mugs/methods/pwself/loss.py), this
# preset as it stands: k-NN 50.1 % (seed 0, untrained 40.6) and 56.1 % (seed 1, untrained
# 37.2); total loss 7.88 -> 5.01 and 7.55 -> 6.35 (first / last 10 % of logged steps); the
# patch term itself ends about where it starts (3.45 -> 3.85, seed 0; uniform is ln 512 = 6.24).
# On another machine (AMD EPYC, AVX2, torch 2.14.1) the same preset and code give 64.8 % (seed 0)
# and 49.6 % (seed 1), loss 7.88 -> 4.90 and 7.55 -> 5.42: 720 steps amplify the CPU kernels'
# rounding differences to the size of the seed noise (README, the methods sweep).
_PWSELF_DEMO = {
    "name": "pwself",
    "out_dim": 512,
    "head_hidden_dim": 256,
    "head_bottleneck_dim": 64,
    "head_bn": True,
    "teacher_temp": 0.02,
    "warmup_teacher_temp": 0.02,
}
PRESETS["pwself_demo"] = {**copy.deepcopy(PRESETS["demo"]), "method": dict(_PWSELF_DEMO)}
# pwself_cifar10: the cifar10 preset's model and schedule (ViT-Tiny/4 on 32 px; 8 x 8 patches a
# global view, 4 x 4 a 16-px local crop) through the tensor views; the demo's head choices
# (BN, split CLS/patch calls, teacher 0.02) with the authors' head sizes scaled to the preset's.
PRESETS["pwself_cifar10"] = _with(
    PRESETS["cifar10"],
    data={"strong_prob": 0.0, "solarize_prob": 0.0, "augment_backend": "tensor"},
    train={"freeze_last_layer": 0},
)
PRESETS["pwself_cifar10"]["method"] = {**_PWSELF_DEMO, "out_dim": 4096, "head_hidden_dim": 2048, "head_bottleneck_dim": 256}
# pwself_vit_s16_imagenet: the authors' recipe (alijavidani/Local_Global_Representation_Learning
# at 5c841c9, patch_wise_dino.py argparse: 100 epochs, AdamW lr 0.0005 per 256 images, 10 warm-up
# epochs, min lr 1e-6, weight decay 0.04 -> 0.4, clip 3.0, EMA 0.996, drop path 0.1, freeze the last
# layer 1 epoch, 2 global crops 224 px at scale 0.4-1 and 8 local 96 px at 0.05-0.4, the head and
# temperatures of mugs/methods/pwself/config.py) on ViT-S/16, the backbone the methods sweep
# compares at (the authors' default is ViT-B/8, batch 6 a GPU). Their loader first resizes every
# image to 256 x 256; here crops are drawn on the image as it is. Weak views only (tensor views).
PRESETS["pwself_vit_s16_imagenet"] = _with(
    PRESETS["vit_s16_100ep"],
    data={"augment_backend": "tensor", "strong_prob": 0.0, "global_crops_scale": [0.4, 1.0],
          "local_crops_scale": [0.05, 0.4], "local_crops_number": 8},
    train={"lr": 0.0005, "weight_decay_end": 0.4, "momentum_teacher": 0.996},
)
PRESETS["pwself_vit_s16_imagenet"]["method"] = {"name": "pwself"}


# UniVIP (method.name univip; mugs/methods/univip/config.py has the method defaults and their
# sources). Two overlapping scene views through the tensor views (the instances need the crops'
# geometry), no local crops; the heads scaled down to the preset's model at demo scale.
_UNIVIP_VIEWS = {"local_crops_number": 0, "strong_prob": 0.0, "augment_backend": "tensor"}


def _univip(base: str, method: dict[str, Any], **sections: dict[str, Any]) -> dict[str, Any]:
    return _with_method("univip", base, method, **sections)


PRESETS["univip_demo"] = _univip(
    "demo",
    {"projector_hidden_dim": 256, "predictor_hidden_dim": 256, "out_dim": 64},
    data=_UNIVIP_VIEWS,
)
PRESETS["univip_cifar10"] = _univip(
    "cifar10",
    {"projector_hidden_dim": 2048, "predictor_hidden_dim": 2048, "out_dim": 256},
    data={**_UNIVIP_VIEWS, "global_crops_scale": [0.2, 1.0], "solarize_prob": 0.0},
    train={"momentum_teacher": 0.99, "freeze_last_layer": 0},
)

# univip_vit_s16_imagenet: the paper's recipe was not available to us (its text beyond the
# abstract; it pretrains a ResNet-50 on COCO and ImageNet): ours, Mugs' ViT-S/16 100-epoch
# schedule with UniVIP's method defaults (BYOL's heads, K = 4, mugs/methods/univip/config.py) and
# two scene views. No COCO preset: COCO has no ImageFolder layout and its selective-search
# proposals are not read here (random boxes inside the overlap stand in for them).
PRESETS["univip_vit_s16_imagenet"] = _univip(
    "vit_s16_100ep",
    {},
    data={**_UNIVIP_VIEWS, "global_crops_scale": [0.2, 1.0]},
    train={"freeze_last_layer": 0},
)
def list_presets() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown preset {name!r} (known: {', '.join(list_presets())})")
    return copy.deepcopy(PRESETS[name])

"""Shared helpers for trainer tests: small real batches from scikit-learn's digits."""

from __future__ import annotations

from torch.utils.data import DataLoader

from mugs.config import MugsConfig, build_config
from mugs.data.datasets import load_split
from mugs.data.pipeline import multicrop_dataset
from mugs.methods.registry import method_class


def demo_config(*overrides: str) -> MugsConfig:
    return build_config("demo", None, list(overrides))


def real_batch(cfg: MugsConfig, batch_size: int, seed: int = 0) -> tuple:
    """One multi-crop batch of real digits images: (crops, weak), and the extras dict as a third
    item for a method whose views carry more (PW-Self: the crops' geometry)."""
    base = load_split(cfg.data, "train")
    method = method_class(cfg.method.name)(cfg)
    ds, collate = multicrop_dataset(
        base, cfg.data, seed, student_views=method.student_views, extras=method.view_extras()
    )
    return tuple(next(iter(DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate))))


def losses_with_and_without_resume(make_config, tmp_path, steps: int, stop_at: int) -> tuple[list[float], list[float]]:
    """Losses of an uninterrupted run of ``steps`` logged steps and of one stopped after step
    ``stop_at`` and resumed from its checkpoint (``make_config()`` builds the config anew)."""
    import json

    from mugs.callbacks import JsonlMetrics
    from mugs.engine import Trainer

    class StopAt(JsonlMetrics):
        def on_step_end(self, trainer, metrics):
            super().on_step_end(trainer, metrics)
            if metrics["step"] == stop_at:
                trainer.request_stop()

    a, b = tmp_path / "a", tmp_path / "b"
    assert Trainer(make_config(), a, callbacks=[JsonlMetrics(a / "m.jsonl")]).fit() == "completed"
    assert Trainer(make_config(), b, callbacks=[StopAt(b / "m.jsonl")]).fit() == "preempted"
    second = Trainer(make_config(), b, callbacks=[JsonlMetrics(b / "m.jsonl")])
    assert second.maybe_resume() and second.step == stop_at and second.fit() == "completed"

    def losses(p):
        return [json.loads(x)["loss"] for x in (p / "m.jsonl").read_text().splitlines()]

    assert len(losses(a)) == steps
    return losses(a), losses(b)


def mixed_size_imagefolder(root, per_class: int = 4, classes: int = 2) -> None:
    """An ImageFolder ``root/train/<class>/`` of real CIFAR-10 training images (the shared JPEG
    copy), each resized to its own size between 24 and 64 px a side, as an ImageFolder of
    photographs would have them."""
    import io
    import tarfile
    from pathlib import Path

    from PIL import Image

    archive = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10" / "train.tar.gz"
    counts: dict[str, int] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 3:
                continue
            cls = parts[-2]
            if counts.get(cls, 0) >= per_class or (cls not in counts and len(counts) >= classes):
                continue
            i = counts[cls] = counts.get(cls, 0) + 1
            img = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
            size = (24 + 9 * i + 5 * len(counts), 64 - 7 * i)
            out = Path(root) / "train" / cls / f"{i}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            img.resize(size).save(out)
            if len(counts) == classes and all(v >= per_class for v in counts.values()):
                break

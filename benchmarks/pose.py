"""2-D → 3-D pose recovery on SYNTHETIC stick figures: the multimodal deep autoencoder against a direct CNN regressor.

Hong et al. (2015)'s multimodal deep autoencoder (``configs/pose_mmae_synthetic.yaml``: image autoencoder, pose
autoencoder, a network from image codes to pose codes, then end-to-end fine-tuning, as the stages of one fit) is
scored before and after its fine-tuning stage, against

- a direct CNN regressor (``configs/pose_regressor_synthetic.yaml``): the same conv image encoder and an MLP head
  trained on the pose error alone, with about as many parameters as the autoencoder's recovery chain (image
  encoder + mapping + pose decoder; both counts are printed);
- the mean training pose (predicted for every image);
- the pose autoencoder's own floor: the true test pose through its code and back (not an image method; it says
  how much the pose code loses).

Metric: MPJPE (mean per-joint position error, root-aligned) in skeleton units on the held-out test split, with a
95 % interval of the mean (±1.96 σ/√n) and a paired interval for the fine-tuned autoencoder against the regressor.
The schedules are fixed in ``benchmarks/pose.yaml`` and nothing is chosen on the test split (the val column is
reported beside it; no checkpoint selection: each model is scored after its last epoch; "before fine-tuning" is
the same run's weights at the start of its fine-tuning stage).

    python -m benchmarks.pose --quick      # <= 70 CPU-seconds on a 2-core CPU (one thread)
    python -m benchmarks.pose --full       # the configs' own schedules on 50k samples (GPU when present)

Data: generated (ae_lightning.data.PoseDataModule), nothing to download; SYNTHETIC, so the numbers are not
comparable with the paper's (real mocap, mm). Writes ``benchmarks/results/pose_synthetic.{csv,md,png}`` (full mode:
``pose_synthetic_full.*``).
"""

from __future__ import annotations

import copy
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
import yaml

from ae_lightning.config import load_config
from ae_lightning.data import PoseDataModule
from ae_lightning.data.pose import PARENTS
from ae_lightning.models import MultimodalAutoencoder, PoseRegressor
from ae_lightning.models.multimodal import mpjpe
from benchmarks.common import (
    RESULTS,
    benchmark_parser,
    build,
    config_file,
    hardware,
    markdown_table,
    model_spec,
    quiet,
    run_main,
    trainer,
    write_csv,
)

CONFIG = Path(__file__).with_name("pose.yaml")
COLUMNS = ["method", "val_mpjpe", "test_mpjpe", "test_ci95", "params_inference", "params_trained", "epochs",
           "train_s", "config"]
#: the nets of the autoencoder's recovery chain image → code → pose code → pose (what it runs at test time)
CHAIN = ("encoder", "mapping", "pose_decoder")


def load_settings(config: dict | None = None) -> dict:
    return copy.deepcopy(config) if config is not None else yaml.safe_load(CONFIG.read_text())


def spec_of(name: str, mode: str, cfg: dict) -> dict:
    """The ``model`` block of ``cfg['models'][name]``'s config; the autoencoder's schedule set by the mode (if it says)."""
    schedule = cfg["modes"][mode]["schedule"] if name == "mmae" else None
    return model_spec(cfg["models"][name], **(schedule or {}))


def regressor_epochs(mode: str, cfg: dict) -> int:
    epochs = cfg["modes"][mode]["regressor_epochs"]
    return epochs or load_config(cfg["models"]["regressor"])["trainer"]["max_epochs"]


def models(mode: str = "quick", config: dict | None = None) -> dict[str, L.LightningModule]:
    """The untrained models the benchmark trains (``mmae``, ``regressor``), built from their configs."""
    cfg = load_settings(config)
    out = {}
    for name in ("mmae", "regressor"):
        torch.manual_seed(0)
        out[name] = build(spec_of(name, mode, cfg))
    return out


def count(model: torch.nn.Module, nets: Sequence[str] | None = None) -> int:
    parts = [getattr(model, n) for n in nets] if nets else [model]
    return sum(p.numel() for part in parts for p in part.parameters())


class BeforeFinetune(L.Callback):
    """Keeps a copy of the weights at the start of the fine-tuning stage: the chain as pretrained (steps 1-3)."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] | None = None

    def on_train_epoch_start(self, trainer, module: MultimodalAutoencoder) -> None:
        if self.state is None and module.stage_name(module.stage) == "finetune":
            self.state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


@torch.no_grad()
def recover(model: L.LightningModule, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Poses (N, J, 3) the model recovers from images (N, 1, S, S), in eval mode, fp32."""
    model.eval()
    run = model.recover_pose if isinstance(model, MultimodalAutoencoder) else model
    device = next(model.parameters()).device
    return torch.cat([run(b.to(device)).float().cpu() for b in images.split(batch)])


def summary(errors: dict[str, torch.Tensor]) -> dict:
    """Mean MPJPE per split and the test mean's 95 % interval half-width (1.96 σ/√n)."""
    test = errors["test"]
    return {"val_mpjpe": float(errors["val"].mean()), "test_mpjpe": float(test.mean()),
            "test_ci95": float(1.96 * test.std() / len(test) ** 0.5)}


def paired(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean and 95 % half-width of the per-sample difference ``a - b``."""
    d = a - b
    return float(d.mean()), float(1.96 * d.std() / len(d) ** 0.5)


def verdict(name_a: str, name_b: str, diff: float, half: float) -> str:
    if abs(diff) <= half:
        return f"neither {name_a} nor {name_b} wins: the test MPJPE difference {diff:+.4f} ± {half:.4f} includes 0"
    winner, loser = (name_a, name_b) if diff < 0 else (name_b, name_a)
    return f"**{winner} wins** against {loser}: test MPJPE lower by {abs(diff):.4f} ± {half:.4f} (paired, 95 %)"


# --- the figure --------------------------------------------------------------------------------
def figure(images: torch.Tensor, truth: torch.Tensor, preds: dict[str, torch.Tensor], path: Path, title: str) -> None:
    """Each row: a test image, then the true and predicted skeletons seen from the camera (x, y) and from the side
    (depth z, y): the side view shows what the image cannot (each limb's depth)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"true": "black", **dict(zip(preds, ["tab:red", "tab:blue", "tab:green"], strict=False))}
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n), dpi=100)
    for r in range(n):
        axes[r, 0].imshow(images[r, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(f"test image {r}", fontsize=9)
        for c, (axis, label) in enumerate(((0, "camera view (x, y)"), (2, "side view (depth z, y)")), start=1):
            ax = axes[r, c]
            for name, poses in {"true": truth, **preds}.items():
                p = poses[r].numpy()
                for j, parent in enumerate(PARENTS):
                    if parent >= 0:
                        ax.plot([p[parent, axis], p[j, axis]], [p[parent, 1], p[j, 1]], color=colours[name], lw=1.6,
                                label=name if j == 1 else None)
            ax.set_xlim(-1.1, 1.1)
            ax.set_ylim(-1.1, 1.1)
            ax.set_aspect("equal")
            ax.set_title(label, fontsize=9)
            ax.tick_params(labelsize=7)
    for ax in axes[:, 0]:
        ax.axis("off")
    axes[0, 1].legend(fontsize=7, loc="lower left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --- the run -------------------------------------------------------------------------------------
def run(mode: str = "quick", out_dir: Path = RESULTS, config: dict | None = None) -> list[dict]:
    """Train and score every row of the table; write the CSV, the Markdown and the figure; return the rows."""
    cfg = load_settings(config)
    if mode not in cfg["modes"]:
        raise ValueError(f"mode must be one of {sorted(cfg['modes'])}, got {mode!r}")
    quiet()
    settings = cfg["modes"][mode]
    threads = torch.get_num_threads()
    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])
    try:
        return _run(mode, cfg, settings, out_dir)
    finally:
        torch.set_num_threads(threads)


def _run(mode: str, cfg: dict, settings: dict, out_dir: Path) -> list[dict]:
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    accelerator, precision, hw = hardware()
    dm = PoseDataModule(**settings["data"], batch_size=settings["batch_size"], seed=0)
    dm.setup("fit")
    images = {"val": dm.val_set.images, "test": dm.test_set.images}  # (N, 1, 64, 64)
    poses = {"val": dm.val_set.poses, "test": dm.test_set.poses}  # (N, 16, 3)
    print(f"pose ({mode}): {dm.source}: {len(dm.train_set)} train / {len(dm.val_set)} val / {len(dm.test_set)} test; "
          f"{hw}", flush=True)

    def errors_of(predict) -> dict[str, torch.Tensor]:
        return {s: mpjpe(predict(s), poses[s]) for s in ("val", "test")}  # split → (N,)

    rows, errors, trained = [], {}, {}
    mean_pose = dm.train_set.poses.mean(0, keepdim=True)  # (1, 16, 3)
    errors["mean pose"] = errors_of(lambda s: mean_pose.expand(len(poses[s]), -1, -1))
    rows.append(dict(method="mean training pose", **summary(errors["mean pose"]), params_inference=0,
                     params_trained=0, epochs=0, train_s=0.0, config="—"))

    # the multimodal autoencoder: one fit through its four stages, weights kept at the start of fine-tuning
    built = models(mode, cfg)
    mmae: MultimodalAutoencoder = built["mmae"]
    keep = BeforeFinetune()
    t = time.perf_counter()
    trainer(mmae.total_epochs, accelerator, precision, limit_val_batches=0, callbacks=[keep]).fit(mmae, dm)
    mmae_s = time.perf_counter() - t
    before = copy.deepcopy(mmae).cpu()
    before.load_state_dict(keep.state)
    mmae_label = config_file(cfg["models"]["mmae"]) + f" ({mmae.schedule_text()})"
    chain, total = count(mmae, CHAIN), count(mmae)
    with torch.no_grad():
        before.eval()
        errors["pose AE"] = errors_of(lambda s: before.decode_pose(before.pose_encoder(poses[s])))
    errors["MMAE before"] = errors_of(lambda s: recover(before, images[s]))
    errors["MMAE"] = errors_of(lambda s: recover(mmae, images[s]))
    pre_epochs = sum(mmae.pretrain_epochs)
    rows += [
        dict(method="pose AE floor: true pose → pose code → pose (not from the image)", **summary(errors["pose AE"]),
             params_inference=count(mmae, ("pose_encoder", "pose_decoder")), params_trained=total,
             epochs=mmae.pretrain_epochs[1], train_s=float("nan"), config=mmae_label),
        dict(method="multimodal AE, before fine-tuning (steps 1-3)", **summary(errors["MMAE before"]),
             params_inference=chain, params_trained=total, epochs=pre_epochs, train_s=float("nan"), config=mmae_label),
        dict(method="multimodal AE, fine-tuned end to end (step 4)", **summary(errors["MMAE"]), params_inference=chain,
             params_trained=total, epochs=mmae.total_epochs, train_s=mmae_s, config=mmae_label),
    ]
    trained["multimodal AE"] = mmae
    print(f"  multimodal AE ({mmae.schedule_text()}): test MPJPE {rows[-2]['test_mpjpe']:.4f} before, "
          f"{rows[-1]['test_mpjpe']:.4f} after fine-tuning ({mmae_s:.0f} s)", flush=True)

    reg: PoseRegressor = built["regressor"]
    epochs = regressor_epochs(mode, cfg)
    t = time.perf_counter()
    trainer(epochs, accelerator, precision, limit_val_batches=0).fit(reg, dm)
    reg_s = time.perf_counter() - t
    errors["regressor"] = errors_of(lambda s: recover(reg, images[s]))
    rows.append(dict(method="direct CNN regressor (image → pose)", **summary(errors["regressor"]),
                     params_inference=count(reg), params_trained=count(reg), epochs=epochs, train_s=reg_s,
                     config=config_file(cfg["models"]["regressor"])))
    trained["CNN regressor"] = reg
    print(f"  CNN regressor ({epochs} epochs): test MPJPE {rows[-1]['test_mpjpe']:.4f} ({reg_s:.0f} s)", flush=True)

    # what the table claims, from the numbers
    findings = [
        verdict("the fine-tuned multimodal AE", "the direct CNN regressor",
                *paired(errors["MMAE"]["test"], errors["regressor"]["test"])),
        "fine-tuning: " + verdict("the fine-tuned multimodal AE", "the same AE before fine-tuning",
                                  *paired(errors["MMAE"]["test"], errors["MMAE before"]["test"])),
        verdict("the fine-tuned multimodal AE", "the mean training pose",
                *paired(errors["MMAE"]["test"], errors["mean pose"]["test"])),
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "pose_synthetic" if mode == "quick" else f"pose_synthetic_{mode}"
    k = cfg["figure"]["samples"]
    figure(images["test"][:k], poses["test"][:k],
           {name: recover(m, images["test"][:k]) for name, m in trained.items()},
           out_dir / f"{stem}.png", f"SYNTHETIC stick figures ({mode}): true (black) and recovered 3-D poses")
    write_csv(out_dir / f"{stem}.csv", rows, COLUMNS)
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    table = markdown_table(
        ["method", "val MPJPE", "test MPJPE (95 %)", "params at test time", "params trained", "epochs", "train s",
         "config"],
        [[r["method"], f"{r['val_mpjpe']:.4f}", f"{r['test_mpjpe']:.4f} ± {r['test_ci95']:.4f}",
          f"{r['params_inference']:,}", f"{r['params_trained']:,}", r["epochs"],
          "—" if r["train_s"] != r["train_s"] or not r["train_s"] else f"{r['train_s']:.0f}", r["config"]]
         for r in rows],
    )
    counts = (f"Parameters: the autoencoder's recovery chain (image encoder + mapping + pose decoder) has {chain:,} "
              f"({total:,} trained in all, with the image decoder and pose encoder); the regressor has {count(reg):,}.")
    (out_dir / f"{stem}.md").write_text(
        f"# 2-D → 3-D pose recovery on SYNTHETIC stick figures ({mode})\n\n"
        f"{dm.source}: {len(dm.train_set)} training / {len(dm.val_set)} val / {len(dm.test_set)} test samples, "
        f"disjoint seeds. MPJPE = mean per-joint position error (root-aligned) in skeleton units (thigh 0.42, "
        f"figure ≈ 1.7 tall), each model after its last epoch (no selection; nothing chosen on test). "
        f"Schedules from `benchmarks/pose.yaml`; batch {settings['batch_size']}. {hw}; {seconds:.0f} s wall, "
        f"{cpu:.0f} CPU-s.\n\n" + table + "\n" + counts + "\n\n"
        + "".join(f"- {f}.\n" for f in findings)
        + f"\n**Paper**: {cfg['paper']['setup']}\n\n**Ours**: {cfg['paper']['ours']}\n\n"
        f"![true and recovered skeletons]({stem}.png)\n"
    )
    print("\n" + table + "\n" + counts)
    for f in findings:
        print(f"- {f}")
    print(f"paper: {cfg['paper']['setup']}\nours: {cfg['paper']['ours']}")
    print(f"pose: {seconds:.0f} s wall, {cpu:.0f} CPU-s; results in {out_dir}/{stem}.*")
    return rows


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: Sequence[str] | None = None) -> int:
    ap = benchmark_parser(__doc__, "the configs' own schedules")
    args = ap.parse_args(argv)
    return run_main(lambda: run(args.mode, args.out))

if __name__ == "__main__":
    sys.exit(main())

"""2-D → 3-D pose recovery on SYNTHETIC stick figures: the multimodal deep autoencoder against a direct CNN regressor.

Hong et al. (2015)'s multimodal deep autoencoder (image AE, pose AE, a network from image codes to pose codes, then
end-to-end fine-tuning, as the stages of one fit) before and after fine-tuning, against a direct CNN regressor with
about as many parameters as the autoencoder's recovery chain, the mean training pose, and the pose autoencoder's own
floor (the true pose through its code and back: how much the pose code loses). MPJPE in skeleton units on the test
split with 95 % intervals (paired between methods); the schedules are fixed in ``benchmarks/pose.yaml``, nothing is
chosen on the test split and no checkpoint is selected. SYNTHETIC data: not comparable with the paper's mocap (mm).

    python -m benchmarks.pose --quick      # <= 70 CPU-seconds on a 2-core CPU (one thread)
    python -m benchmarks.pose --full       # the configs' own schedules on 50k samples (GPU when present)
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Sequence

import lightning as L
import torch

from ae_lightning.config import load_config
from ae_lightning.data import PoseDataModule
from ae_lightning.data.pose import PARENTS
from ae_lightning.inference import in_eval_batches
from ae_lightning.models import MultimodalAutoencoder
from ae_lightning.models.multimodal import mpjpe
from benchmarks.common import build, config_file, model_spec
from benchmarks.core import Benchmark, Context, Results, Stopwatch, markdown_table, threads

COLUMNS = ["method", "val_mpjpe", "test_mpjpe", "test_ci95", "params_inference", "params_trained", "epochs",
           "train_s", "config"]
#: the nets of the autoencoder's recovery chain image → code → pose code → pose (what it runs at test time)
CHAIN = ("encoder", "mapping", "pose_decoder")
SPLITS = ("val", "test")


def count(model: torch.nn.Module, nets: Sequence[str] | None = None) -> int:
    parts = [getattr(model, n) for n in nets] if nets else [model]
    return sum(p.numel() for part in parts for p in part.parameters())


def fit(ctx: Context, model: L.LightningModule, dm: L.LightningDataModule, epochs: int, **trainer_args) -> float:
    """Trains ``model`` (no validation loop: nothing is selected) and returns the wall seconds it took."""
    watch = Stopwatch()
    ctx.trainer(epochs, limit_val_batches=0, **trainer_args).fit(model, dm)
    return watch.elapsed()[0]


class BeforeFinetune(L.Callback):
    """Keeps a copy of the weights at the start of the fine-tuning stage: the chain as pretrained (steps 1-3)."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] | None = None

    def on_train_epoch_start(self, trainer, module: MultimodalAutoencoder) -> None:
        if self.state is None and module.stage_name(module.stage) == "finetune":
            self.state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def recover(model: L.LightningModule, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Poses (N, J, 3) the model recovers from images (N, 1, S, S), in eval mode, fp32."""
    run = model.recover_pose if isinstance(model, MultimodalAutoencoder) else model
    return in_eval_batches(model, lambda b: run(b).float(), images, batch)


def summary(errors: dict[str, torch.Tensor]) -> dict:
    """Mean MPJPE per split and the test mean's 95 % interval half-width (1.96 σ/√n)."""
    test = errors["test"]
    return {"val_mpjpe": float(errors["val"].mean()), "test_mpjpe": float(test.mean()),
            "test_ci95": float(1.96 * test.std() / len(test) ** 0.5)}


def verdict(name_a: str, name_b: str, a: torch.Tensor, b: torch.Tensor) -> str:
    """Which of two methods has the lower test MPJPE, by the 95 % interval of the per-sample difference ``a - b``."""
    d = a - b
    diff, half = float(d.mean()), float(1.96 * d.std() / len(d) ** 0.5)
    if abs(diff) <= half:
        return f"neither {name_a} nor {name_b} wins: the test MPJPE difference {diff:+.4f} ± {half:.4f} includes 0"
    winner, loser = (name_a, name_b) if diff < 0 else (name_b, name_a)
    return f"**{winner} wins** against {loser}: test MPJPE lower by {abs(diff):.4f} ± {half:.4f} (paired, 95 %)"


def figure(images: torch.Tensor, truth: torch.Tensor, preds: dict[str, torch.Tensor], title: str):
    """Each row: a test image, then the true and predicted skeletons seen from the camera (x, y) and from the side
    (depth z, y): the side view shows what the image cannot (each limb's depth)."""
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
    return fig


class Pose(Benchmark):
    name = "pose"
    doc = ("2-D -> 3-D pose recovery on SYNTHETIC stick figures: the multimodal deep autoencoder (Hong et al. 2015) "
           "against a direct CNN regressor")

    def models(self, s: dict) -> dict[str, L.LightningModule]:
        """The untrained models the benchmark trains (``mmae``, ``regressor``), built from their configs."""
        out = {}
        for name in ("mmae", "regressor"):
            schedule = s["schedule"] if name == "mmae" else None  # the mode's schedule, if it sets one
            torch.manual_seed(0)
            out[name] = build(model_spec(s["models"][name], **(schedule or {})))
        return out

    def run(self, ctx: Context, s: dict) -> Results:
        with threads(s.get("threads")):  # pose.yaml: one thread on a CPU, small convs
            dm = PoseDataModule(**s["data"], batch_size=s["batch_size"], seed=0)
            dm.setup("fit")
            print(f"pose ({ctx.mode}): {dm.source}: {len(dm.train_set)} train / {len(dm.val_set)} val / "
                  f"{len(dm.test_set)} test; {ctx.device}", flush=True)
            return self.train_and_report(ctx, s, dm)

    def train_and_report(self, ctx: Context, s: dict, dm: PoseDataModule) -> Results:
        """Every method trained and scored on ``dm``'s val and test splits; the table, figure and findings."""
        images = {split: getattr(dm, f"{split}_set").images for split in SPLITS}  # (N, 1, 64, 64)
        poses = {split: getattr(dm, f"{split}_set").poses for split in SPLITS}  # (N, 16, 3)

        def errors_of(predict) -> dict[str, torch.Tensor]:  # split → per-sample MPJPE (N,)
            return {split: mpjpe(predict(split), poses[split]) for split in SPLITS}

        errors = {}
        mean_pose = dm.train_set.poses.mean(0, keepdim=True)  # (1, 16, 3)
        errors["mean pose"] = errors_of(lambda split: mean_pose.expand(len(poses[split]), -1, -1))
        rows = [dict(method="mean training pose", **summary(errors["mean pose"]), params_inference=0, params_trained=0,
                     epochs=0, train_s=0.0, config="—")]

        # the multimodal autoencoder: one fit through its four stages, weights kept at the start of fine-tuning
        built = self.models(s)
        mmae: MultimodalAutoencoder = built["mmae"]
        keep = BeforeFinetune()
        mmae_s = fit(ctx, mmae, dm, mmae.total_epochs, callbacks=[keep])
        before = copy.deepcopy(mmae).cpu()
        before.load_state_dict(keep.state)
        mmae_label = config_file(s["models"]["mmae"]) + f" ({mmae.schedule_text()})"
        chain, total = count(mmae, CHAIN), count(mmae)
        errors["pose AE"] = errors_of(lambda split: in_eval_batches(
            before, lambda p: before.decode_pose(before.pose_encoder(p)), poses[split], len(poses[split])))
        errors["MMAE before"] = errors_of(lambda split: recover(before, images[split]))
        errors["MMAE"] = errors_of(lambda split: recover(mmae, images[split]))
        rows += [
            dict(method="pose AE floor: true pose → pose code → pose (not from the image)",
                 **summary(errors["pose AE"]), params_inference=count(mmae, ("pose_encoder", "pose_decoder")),
                 params_trained=total, epochs=mmae.pretrain_epochs[1], train_s=math.nan, config=mmae_label),
            dict(method="multimodal AE, before fine-tuning (steps 1-3)", **summary(errors["MMAE before"]),
                 params_inference=chain, params_trained=total, epochs=sum(mmae.pretrain_epochs), train_s=math.nan,
                 config=mmae_label),
            dict(method="multimodal AE, fine-tuned end to end (step 4)", **summary(errors["MMAE"]),
                 params_inference=chain, params_trained=total, epochs=mmae.total_epochs, train_s=mmae_s,
                 config=mmae_label),
        ]
        print(f"  multimodal AE ({mmae.schedule_text()}): test MPJPE {rows[-2]['test_mpjpe']:.4f} before, "
              f"{rows[-1]['test_mpjpe']:.4f} after fine-tuning ({mmae_s:.0f} s)", flush=True)

        reg = built["regressor"]
        epochs = s["regressor_epochs"] or load_config(s["models"]["regressor"])["trainer"]["max_epochs"]
        reg_s = fit(ctx, reg, dm, epochs)
        errors["regressor"] = errors_of(lambda split: recover(reg, images[split]))
        rows.append(dict(method="direct CNN regressor (image → pose)", **summary(errors["regressor"]),
                         params_inference=count(reg), params_trained=count(reg), epochs=epochs, train_s=reg_s,
                         config=config_file(s["models"]["regressor"])))
        print(f"  CNN regressor ({epochs} epochs): test MPJPE {rows[-1]['test_mpjpe']:.4f} ({reg_s:.0f} s)", flush=True)

        # what the table claims, from the numbers
        tuned = errors["MMAE"]["test"]
        findings = [
            verdict("the fine-tuned multimodal AE", "the direct CNN regressor", tuned, errors["regressor"]["test"]),
            "fine-tuning: " + verdict("the fine-tuned multimodal AE", "the same AE before fine-tuning", tuned,
                                      errors["MMAE before"]["test"]),
            verdict("the fine-tuned multimodal AE", "the mean training pose", tuned, errors["mean pose"]["test"]),
        ]
        results = ctx.results()
        k = s["figure"]["samples"]
        results.figure("pose_synthetic", figure(
            images["test"][:k], poses["test"][:k],
            {name: recover(model, images["test"][:k]) for name, model in (("multimodal AE", mmae), ("CNN regressor", reg))},
            f"SYNTHETIC stick figures ({ctx.mode}): true (black) and recovered 3-D poses"))
        results.table("pose_synthetic", rows, COLUMNS)
        table = markdown_table(
            ["method", "val MPJPE", "test MPJPE (95 %)", "params at test time", "params trained", "epochs", "train s",
             "config"],
            [[r["method"], f"{r['val_mpjpe']:.4f}", f"{r['test_mpjpe']:.4f} ± {r['test_ci95']:.4f}",
              f"{r['params_inference']:,}", f"{r['params_trained']:,}", r["epochs"],
              "—" if math.isnan(r["train_s"]) or not r["train_s"] else f"{r['train_s']:.0f}", r["config"]]
             for r in rows],
        )
        counts = (f"Parameters: the autoencoder's recovery chain (image encoder + mapping + pose decoder) has "
                  f"{chain:,} ({total:,} trained in all, with the image decoder and pose encoder); the regressor has "
                  f"{count(reg):,}.")
        results.markdown("pose_synthetic", (
            f"# 2-D → 3-D pose recovery on SYNTHETIC stick figures ({ctx.mode})\n\n"
            f"{dm.source}: {len(dm.train_set)} training / {len(dm.val_set)} val / {len(dm.test_set)} test samples, "
            f"disjoint seeds. MPJPE = mean per-joint position error (root-aligned) in skeleton units (thigh 0.42, "
            f"figure ≈ 1.7 tall), each model after its last epoch (no selection; nothing chosen on test). "
            f"Schedules from `benchmarks/pose.yaml`; batch {s['batch_size']}.\n\n" + table + "\n" + counts + "\n\n"
            + "".join(f"- {f}.\n" for f in findings)
            + f"\n**Paper**: {s['paper']['setup']}\n\n**Ours**: {s['paper']['ours']}\n\n"
            f"![true and recovered skeletons]({results.path('pose_synthetic', 'png').name})\n"))
        print("\n" + table + "\n" + counts + "".join(f"\n- {f}" for f in findings))
        return results


main = Pose.main

if __name__ == "__main__":
    sys.exit(main())

"""The LightningModule (:class:`FaceModule`) around :class:`facerec.recognition.model.FaceClassifier`."""

from __future__ import annotations

import math
import time

import lightning.pytorch as L
import numpy as np
import torch
import torch.nn.functional as F

from facerec.recognition.calibration import calibrate_threshold
from facerec.recognition.checkpoint import GALLERY_KEY, gallery_entry
from facerec.recognition.model import FaceClassifier


# ------------------------------------------------------------------------------------ LightningModule
class FaceModule(L.LightningModule):
    """Trains a :class:`~facerec.recognition.model.FaceClassifier`: cosine head with margin and label
    smoothing, AdamW, warm-up + cosine learning-rate schedule, accuracy and macro-F1 per epoch, and
    the open-set threshold calibrated into every checkpoint."""

    def __init__(self, model_config: dict, learning_rate: float = 1e-3, weight_decay: float = 1e-4,
                 label_smoothing: float = 0.1, warmup_epochs: float = 1.0,
                 backbone_lr_mult: float = 1.0, target_fpir: float = 0.01,
                 timm_model: torch.nn.Module | None = None, backbone_lr: float | None = None,
                 train_config: dict | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["timm_model"])
        self.model = FaceClassifier(model_config, timm_model=timm_model)
        self.calibration: dict = dict(model_config.get("calibration") or {})
        from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

        k = max(2, len(model_config["labels"]))
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_acc", MulticlassAccuracy(num_classes=k, average="micro"))
            if stage != "train":
                setattr(self, f"{stage}_f1", MulticlassF1Score(num_classes=k, average="macro"))
        self._stash: dict[str, list] = {"train": [], "val": []}

    @property
    def means(self) -> bool:
        """Prototypes are the means of the people's features (a frozen embedder's, or
        --finetune's as they are now): calibration holds each face out exactly. Otherwise they are
        the trained head's class weights."""
        return self.model.kind.prototypes_are_means

    @property
    def tuned(self) -> bool:
        return self.model.tail is not None

    # ---- optimisation
    def configure_optimizers(self):
        hp = self.hparams
        head = [self.model.head.weight]
        groups = [{"params": head, "weight_decay": 0.0, "lr": hp.learning_rate}]
        if self.model.backbone is not None:
            decay, no_decay = [], []
            for n, p in self.model.backbone.named_parameters():
                if p.requires_grad:
                    (no_decay if p.ndim <= 1 else decay).append(p)
            lr = hp.learning_rate * hp.backbone_lr_mult
            groups += [{"params": decay, "weight_decay": hp.weight_decay, "lr": lr},
                       {"params": no_decay, "weight_decay": 0.0, "lr": lr}]
        if self.model.tail is not None:  # --finetune: dlib's last levels, at their own rate
            lr = hp.backbone_lr if hp.backbone_lr is not None else hp.learning_rate * 0.01
            tail = list(self.model.tail.parameters())
            groups += [{"params": [p for p in tail if p.ndim > 1], "lr": lr,
                        "weight_decay": hp.weight_decay},
                       {"params": [p for p in tail if p.ndim <= 1], "lr": lr, "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=hp.learning_rate, weight_decay=hp.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        warm = min(total // 2, int(round(hp.warmup_epochs * per_epoch)))

        def factor(step: int) -> float:
            if warm and step < warm:
                return (step + 1) / warm
            progress = min(1.0, (step - warm) / max(1, total - warm))
            return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- steps
    def training_step(self, batch, batch_idx):
        x, y = batch
        z = self.model.features(x)
        logits = self.model.head(self.model.dropout(z), y)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        with torch.no_grad():
            self.train_acc(self.model.head(z).argmax(1), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=len(y))
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, batch_size=len(y))
        if not self.means and not self._has_val():
            self._stash["train"].append((z.detach().float(), y.detach()))
        return loss

    def _eval_step(self, batch, stage: str):
        x, y = batch
        z = self.model.features(x)
        logits = self.model.head(z)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        pred = logits.argmax(1)
        getattr(self, f"{stage}_acc")(pred, y)
        getattr(self, f"{stage}_f1")(pred, y)
        n = len(y)
        self.log(f"{stage}_loss", loss, on_epoch=True, prog_bar=stage == "val", sync_dist=True,
                 batch_size=n)
        self.log(f"{stage}_acc", getattr(self, f"{stage}_acc"), on_epoch=True, prog_bar=True,
                 batch_size=n)
        self.log(f"{stage}_f1", getattr(self, f"{stage}_f1"), on_epoch=True, batch_size=n)
        return z, y, pred

    def validation_step(self, batch, batch_idx):
        z, y, _ = self._eval_step(batch, "val")
        if not self.means:
            self._stash["val"].append((z.detach().float(), y.detach()))

    def test_step(self, batch, batch_idx):
        z, y, _ = self._eval_step(batch, "test")
        idx, _, _, known = self.model.predict_features(z)
        missed = (~(known & (idx == y))).float()  # not accepted as the right person
        self.log("test_fnir", missed.mean(), on_epoch=True, sync_dist=True, batch_size=len(y))

    # ---- calibration
    def _has_val(self) -> bool:
        dm = getattr(self.trainer, "datamodule", None)
        return bool(dm is not None and dm.count("val") > 0)

    def _prior(self) -> float | None:
        return self.model.kind.prior_threshold

    def _calibrate_means(self, log: bool = True) -> None:
        """Exact hold-out calibration on the cached train+val features (prototypes are means).
        ``--finetune``: the features of the network as it is now (recomputed from the cached
        activations), and the prototypes follow them."""
        sums, counts, z, y = self.trainer.datamodule.prototype_sums(
            ("train", "val"), self.model if self.tuned else None)
        if self.tuned:
            means = sums / np.maximum(counts, 1)[:, None]
            self.model.set_prototypes(torch.from_numpy(means).float())
        with torch.no_grad():
            pred = self.model.head(torch.from_numpy(z).to(self.device)).argmax(1).cpu().numpy()
        cal = calibrate_threshold(z, y, self.model.prototypes.cpu().numpy(), proto_sums=sums,
                                  proto_counts=counts, member=np.ones(len(y), bool), predicted=pred,
                                  target_fpir=self.hparams.target_fpir, prior=self._prior())
        cal["data"] = ("train+val" if self._has_val() else "train") + ", each person held out in turn"
        if self.tuned:
            cal["data"] += (" (features of the fine-tuned network, which was trained on these "
                            "people: the FPIR estimate is optimistic)")
        # kept in the checkpoint: enroll/forget recalibrate on it
        self._gallery = (z, y, "finetuned" if self.tuned else "frozen")
        self._set_calibration(cal, log=log)

    def _gather(self, key: str):
        items = self._stash[key]
        self._stash[key] = []
        dim = int(self.model.config["backbone"]["dim"])
        z = torch.cat([a for a, _ in items]) if items else torch.zeros(0, dim, device=self.device)
        y = torch.cat([b for _, b in items]) if items else torch.zeros(0, dtype=torch.long,
                                                                        device=self.device)
        if self.trainer.world_size > 1:
            n = torch.tensor([len(y)], device=self.device)
            sizes = self.all_gather(n).flatten()
            m = int(sizes.max())
            zp = torch.zeros(m, dim, device=self.device, dtype=z.dtype)
            yp = torch.full((m,), -1, dtype=torch.long, device=self.device)
            zp[:len(y)], yp[:len(y)] = z, y
            zg, yg = self.all_gather(zp), self.all_gather(yp)
            keep = yg.flatten() >= 0
            z, y = zg.reshape(-1, dim)[keep], yg.flatten()[keep]
        return z.cpu().numpy(), y.cpu().numpy()

    def _calibrate_trained(self, key: str) -> None:
        z, y = self._gather(key)
        protos = self.model.head_prototypes()
        self.model.set_prototypes(protos)
        pred = (torch.from_numpy(z).to(self.device) @ protos.T).argmax(1).cpu().numpy() if len(z) \
            else None
        cal = calibrate_threshold(z, y, protos.cpu().numpy(), predicted=pred,
                                  target_fpir=self.hparams.target_fpir, prior=self._prior())
        cal["data"] = ("val (held-out people scored against the trained head; features were "
                       "trained on everyone, so the FPIR estimate is optimistic)" if key == "val"
                       else "train (augmented; no validation set: optimistic)")
        self._gallery = (z, y, key)
        self._set_calibration(cal)

    def _set_calibration(self, cal: dict, log: bool = True) -> None:
        self.calibration = cal
        self.model.threshold = float(cal["threshold"])
        if log:  # every process computes the same calibration (same data, deterministic)
            if cal.get("est_fnir") is not None:
                self.log("calib_fnir", float(cal["est_fnir"]), sync_dist=True)
            self.log("threshold", float(cal["threshold"]), sync_dist=True)

    def on_fit_start(self) -> None:
        if self.means:
            sums, counts, _, _ = self.trainer.datamodule.prototype_sums(
                ("train", "val"), self.model if self.tuned else None)
            protos = torch.from_numpy(sums / np.maximum(counts, 1)[:, None]).float()
            self.model.set_prototypes(protos)
            if self.trainer.ckpt_path is None:  # fresh run: start from the prototypes
                self.model.head.imprint(self.model.prototypes)
            self._calibrate_means(log=False)

    def on_train_epoch_start(self) -> None:
        self._stash = {"train": [], "val": []}

    def on_train_epoch_end(self) -> None:
        if not self.means and not self._has_val():
            self._calibrate_trained("train")
        elif self.means and not self._has_val():
            self._calibrate_means()

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._stash["val"] = []
            return
        if self.means:
            self._calibrate_means()
        else:
            self._calibrate_trained("val")

    # ---- checkpoints
    def facerec_info(self) -> dict:
        info = dict(self.model.config)
        t = self.model.threshold
        info["threshold"] = t if math.isfinite(t) else None
        info["calibration"] = dict(self.calibration)
        return info

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["facerec"] = self.facerec_info()
        gallery = getattr(self, "_gallery", None)
        if gallery is not None and len(gallery[1]):
            # the features the threshold was calibrated on (plain tensors: weights_only-safe), so
            # that `facerec enroll/forget` can recalibrate with the same held-out procedure
            z, y, source = gallery
            z, y = _cap_gallery(np.asarray(z), np.asarray(y))
            checkpoint[GALLERY_KEY] = gallery_entry(z, y, source)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        info = checkpoint.get("facerec") or {}
        self.calibration = dict(info.get("calibration") or {})


#: at most this many stored calibration features per checkpoint (20,000 x 128-d = 10 MB)
GALLERY_MAX = 20_000


def _cap_gallery(z: np.ndarray, y: np.ndarray, cap: int = GALLERY_MAX):
    """A deterministic subsample of at most ``cap`` rows, the same share of every person (at
    least 10 each), so that big datasets do not make checkpoints big."""
    if len(y) <= cap:
        return z, y
    people = np.unique(y)
    per = max(10, cap // len(people))
    rng = np.random.default_rng(0)
    keep = np.concatenate([rng.permutation(np.flatnonzero(y == p))[:per] for p in people])
    keep.sort()
    return z[keep], y[keep]


class EpochTimer(L.Callback):
    """Counts the epochs this fit ran and their wall-clock seconds (for the summary and benches)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(time.perf_counter() - self._t0)

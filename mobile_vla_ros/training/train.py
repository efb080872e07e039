"""Fine-tune the policy on recorded episodes (PyTorch Lightning) and export a checkpoint.

Layout of `--out MODEL_DIR`:

    policy.json, *.safetensors     the exported policy (what the robot loads; policy/checkpoint.py)
    training/run.json              data directories, base model, resolved configuration
    training/checkpoints/last.ckpt resume state: a safetensors file (see checkpoint_io.py), not a pickle
    training/logs/version_N/metrics.csv  per-step / per-epoch metrics (Lightning CSVLogger), one per (re)start
    training/summary.json          the final summary printed at the end

The frame features a frozen encoder gives are computed in training/features.py; the summary's
table in training/summary.py.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from mobile_vla_ros.data.windows import (
    action_range,
    common_action_dt,
    load_training_episodes,
    split_by_episode,
    training_camera,
    with_mirrors,
)
from mobile_vla_ros.errors import CheckpointError, DatasetError
from mobile_vla_ros.json_files import read_json_object
from mobile_vla_ros.policy.backbone import load_base_model
from mobile_vla_ros.policy.checkpoint import load_policy, save_policy
from mobile_vla_ros.policy.model import VLAPolicy
from mobile_vla_ros.training.config import CHOSEN_POLICY_SETTINGS, TrainConfig, TrainConfigError
from mobile_vla_ros.training.features import cache_features, set_feature_statistics
from mobile_vla_ros.training.summary import summarize

LOG = logging.getLogger(__name__)
RUN_FILE = "run.json"
BUDGET_KEYS = ("max_steps", "max_minutes")  # may change when a run is resumed


@dataclass
class TrainRun:
    data_dirs: list[str]
    base_model_dir: str
    out_dir: str
    config: TrainConfig
    init_from: str | None = None  # a trained policy to continue from (e.g. fine-tuning on corrections)

    @property
    def work_dir(self) -> Path:
        return Path(self.out_dir) / "training"

    @property
    def last_checkpoint(self) -> Path:
        return self.work_dir / "checkpoints" / "last.ckpt"

    def to_dict(self) -> dict:
        return {
            "data_dirs": self.data_dirs,
            "base_model_dir": self.base_model_dir,
            "config": self.config.to_dict(),
            "init_from": self.init_from,
        }


def saved_run(out_dir: str | Path) -> dict:
    """run.json of an earlier run in `out_dir` (for --resume)."""
    path = Path(out_dir) / "training" / RUN_FILE
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: {path} does not exist (train without --resume first)")
    return read_json_object(path, CheckpointError, "the run is damaged and cannot be resumed")


def _fixed_part(run: dict) -> dict:
    config = json.loads(json.dumps(run["config"]))
    for key in BUDGET_KEYS:
        config["trainer"].pop(key, None)
    return {
        "data_dirs": run["data_dirs"],
        "base_model_dir": run["base_model_dir"],
        "config": config,
        "init_from": run.get("init_from"),
    }


def _check_resumable(run: TrainRun) -> None:
    if not run.last_checkpoint.is_file():
        raise CheckpointError(f"nothing to resume: {run.last_checkpoint} does not exist")
    before, now = _fixed_part(saved_run(run.out_dir)), _fixed_part(run.to_dict())
    if before != now:
        changed = [key for key in before if before[key] != now[key]]
        raise TrainConfigError(
            f"--resume continues the run in {run.out_dir} with its own {', '.join(changed)}; only "
            f"{' and '.join(BUDGET_KEYS)} may change. Start a new run in another --out to change the rest."
        )


def dataset_hash(episodes) -> str:
    """sha256 over the episode files a run trains on (names and `content_digest`s, in a fixed order)."""
    import hashlib

    from mobile_vla_ros.data.episode import content_digest

    digest = hashlib.sha256()
    for source in sorted({str(episode.source) for episode in episodes}):
        digest.update(Path(source).name.encode() + b"\0" + content_digest(source))
    return "sha256:" + digest.hexdigest()


def _check_same_inputs(run: TrainRun, inputs: dict) -> None:
    """--resume continues on exactly the data (and so the action normalisation) it started on."""
    saved = saved_run(run.out_dir).get("inputs")
    if not isinstance(saved, dict) or not {"dataset_sha256", "action_low", "action_high"} <= saved.keys():
        raise CheckpointError(
            f"{run.work_dir / RUN_FILE} does not record its dataset; the run cannot be resumed safely"
        )
    if saved["dataset_sha256"] != inputs["dataset_sha256"]:
        raise TrainConfigError(
            f"--resume: the episodes in {', '.join(run.data_dirs)} are not the ones "
            f"the run in {run.out_dir} started on "
            f"(content {inputs['dataset_sha256'][:19]}..., then {saved['dataset_sha256'][:19]}...); "
            "start a new run in another --out to train on changed data"
        )
    if [saved["action_low"], saved["action_high"]] != [inputs["action_low"], inputs["action_high"]]:
        raise TrainConfigError(
            f"--resume: the action normalisation range would change from {saved['action_low']}..{saved['action_high']} "
            f"to {inputs['action_low']}..{inputs['action_high']}; start a new run in another --out"
        )


def _report_outliers(outliers, low, high) -> None:
    for outlier in outliers[:10]:
        LOG.warning(
            "outlier action %.4g (dimension %d) at frame %d of %s: left out of the normalisation range "
            "%s..%s and clamped in training",
            outlier.value,
            outlier.dim,
            outlier.frame,
            outlier.source,
            low,
            high,
        )
    if len(outliers) > 10:
        LOG.warning("%d outlier actions in all", len(outliers))


def _trainer(run: TrainRun, has_val: bool, callbacks: list):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from mobile_vla_ros.training.checkpoint_io import SafetensorsCheckpointIO
    from mobile_vla_ros.training.lightning_module import FinalCheckpoint

    settings = run.config.trainer
    periodic = ModelCheckpoint(
        dirpath=run.last_checkpoint.parent,
        filename="last",
        every_n_train_steps=settings.checkpoint_every_n_steps,
        save_top_k=1,
        enable_version_counter=False,
    )
    return L.Trainer(
        max_steps=settings.max_steps if settings.max_steps >= 1 else -1,
        max_epochs=-1,
        max_time={"minutes": settings.max_minutes} if settings.max_minutes else None,
        precision=settings.precision,
        accelerator=settings.accelerator,
        devices=settings.devices,
        strategy=settings.strategy,
        accumulate_grad_batches=settings.accumulate_grad_batches,
        log_every_n_steps=settings.log_every_n_steps,
        logger=CSVLogger(run.work_dir, name="logs"),  # version_N: one per start, a resume never overwrites
        callbacks=[periodic, FinalCheckpoint(run.last_checkpoint), *callbacks],
        plugins=[SafetensorsCheckpointIO()],
        num_sanity_val_steps=0,
        limit_val_batches=None if has_val else 0,
        enable_model_summary=False,
        default_root_dir=run.work_dir,
    )


def train(run: TrainRun, resume: bool = False, callbacks: Sequence = ()) -> dict:
    """Train, export the policy to `run.out_dir` and return the summary. `callbacks`: more
    Lightning callbacks (bench-train measures the steps with one)."""
    config = run.config
    config.validate()
    if resume:
        _check_resumable(run)
    elif run.last_checkpoint.exists():
        raise CheckpointError(
            f"{run.out_dir} already holds a training run; pass --resume to continue it or choose another --out"
        )
    from mobile_vla_ros.training.metrics import cpu_threads

    with cpu_threads(config.trainer.threads):
        return _train(run, resume, callbacks)


def _train(run: TrainRun, resume: bool, callbacks: Sequence) -> dict:
    import lightning as L

    from mobile_vla_ros.training.lightning_module import ClipDataModule, PolicyModule, RunState
    from mobile_vla_ros.training.metrics import evaluate_policy
    from mobile_vla_ros.training.precision_checks import calibrate_familiarity, check_precisions

    config = run.config
    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    started = time.monotonic()

    initial = _initial_policy(run) if run.init_from else None
    base = None if initial is not None else load_base_model(run.base_model_dir)
    episodes, skipped = load_training_episodes(
        run.data_dirs,
        initial.config.image_size if initial is not None else base.image_size,
        config.data.min_frames or config.policy.window_size,
        config.data.legacy_action_dt,
        config.data.max_idle_s,
        config.data.frame_cache_mb,
    )
    action_dt = common_action_dt(episodes)
    train_episodes, val_episodes = split_by_episode(episodes, config.data.val_fraction, config.trainer.seed)
    train_set, val_set = (
        with_mirrors(train_episodes, config.data.mirror),
        with_mirrors(val_episodes, config.data.mirror),
    )
    low, high, outliers = action_range(train_set)
    _report_outliers(outliers, low, high)
    inputs = {"dataset_sha256": dataset_hash(episodes), "action_low": low, "action_high": high}
    if resume:
        _check_same_inputs(run, inputs)
    instructions = {episode.instruction for episode in train_set}
    if initial is not None:  # its action ranges and feature statistics stay: the head keeps its meaning
        policy = _continue(initial, run.init_from, action_dt, instructions, training_camera(episodes))
    else:
        chosen = replace(
            config.policy,
            action_dt=action_dt,
            instructions=tuple(sorted(instructions)),
            camera=training_camera(episodes),
        )
        policy = VLAPolicy(chosen, base)
        policy.normalizer.set_action_range(low, high)
    if config.optim.backbone_learning_rate == 0:  # a fixed encoder: encode every frame once, train the head alone
        train_set, val_set = cache_features(policy, train_set), cache_features(policy, val_set)
    if initial is None and not resume:  # a resumed run restores the statistics its head was trained with
        set_feature_statistics(policy, train_set, config.runtime_precision)
    LOG.info(
        "%d training episodes (%d with mirrors), %d validation episodes (%d with mirrors); action_dt %.3g s; %s",
        len(train_episodes),
        len(train_set),
        len(val_episodes),
        len(val_set),
        action_dt,
        skipped.summary(),
    )

    run.work_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        (run.work_dir / RUN_FILE).write_text(json.dumps({**run.to_dict(), "inputs": inputs}, indent=2) + "\n")
    module = PolicyModule(
        policy,
        config.optim.learning_rate,
        config.optim.weight_decay,
        config.optim.huber_delta,
        config.optim.backbone_learning_rate,
        config.trainer.gradient_checkpointing,
    )
    data = ClipDataModule(train_set, val_set, config)
    state = RunState()
    trainer = _trainer(run, bool(val_set), [state, *callbacks])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        # The frozen Kosmos-2 stays in eval mode on purpose: its features must not change with dropout.
        warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")
        trainer.fit(module, datamodule=data, ckpt_path=str(run.last_checkpoint) if resume else None)
    if not trainer.is_global_zero:
        return {}
    cut_short = _cut_by_clock(trainer, config.trainer)
    if cut_short:
        LOG.warning("%s", cut_short)

    policy.eval()
    report, replays = evaluate_policy(policy, val_set) if val_set else (None, None)
    if report is not None:
        policy.config.precision_checks = check_precisions(policy, val_set, report, replays, config.runtime_precision)
        policy.config.familiarity = calibrate_familiarity(policy.config.precision_checks)
    summary = summarize(
        run,
        trainer,
        state,
        skipped,
        len(train_set),
        len(val_set),
        data,
        report,
        policy.config.precision_checks,
        policy.config.familiarity,
        time.monotonic() - started,
    )
    summary["cut_by_max_minutes"] = cut_short
    summary["action_outliers"] = [vars(outlier) for outlier in outliers]
    policy.config.training = {
        **summary,
        "base_model_dir": str(Path(run.base_model_dir).resolve()),
        "init_from": run.init_from,
        "correction_episodes": skipped.corrections,
    }
    save_policy(policy, run.out_dir)
    (run.work_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _initial_policy(run: TrainRun) -> VLAPolicy:
    """The policy to continue from, on the run's base model (refused when the fingerprints differ);
    its window, chunk, prompt, LoRA and head settings replace the configuration's."""
    policy = load_policy(run.init_from, run.base_model_dir)
    loaded = policy.config
    run.config.policy = replace(run.config.policy, **{key: getattr(loaded, key) for key in CHOSEN_POLICY_SETTINGS})
    LOG.info("continuing from %s (window %d, chunk %d)", run.init_from, loaded.window_size, loaded.chunk_size)
    return policy


def _continue(policy: VLAPolicy, init_from: str, action_dt: float, instructions: set[str], camera: dict) -> VLAPolicy:
    """Check that the data fits the policy being continued; its action ranges stay (the head's
    outputs keep their meaning)."""
    config = policy.config
    if abs(action_dt - config.action_dt) > 1e-6:
        raise DatasetError(
            f"the episodes are sampled every {action_dt:g} s, the policy in {init_from} every "
            f"{config.action_dt:g} s: a window would span another time"
        )
    trained, recorded = config.camera.get("rotate_180"), camera.get("rotate_180")
    if None not in (trained, recorded) and trained != recorded:
        raise DatasetError(
            f"the episodes were recorded with rotate_180 {recorded}, the policy in {init_from} "
            f"was trained with {trained}"
        )
    config.instructions = tuple(sorted(set(config.instructions) | instructions))
    return policy


def _cut_by_clock(trainer, settings) -> str | None:
    """A warning when --max-minutes, not the step budget, ended training: how far the run got
    then depends on the machine's speed and load, so its results do not reproduce."""
    if not settings.max_minutes or trainer.global_step >= settings.max_steps >= 1:
        return None
    stopped = (
        f"training was cut short by max_minutes={settings.max_minutes:g} at step {trainer.global_step} of "
        f"{settings.max_steps}"
        if settings.max_steps >= 1
        else f"training had only max_minutes={settings.max_minutes:g} to stop it and ran {trainer.global_step} steps"
    )
    return (
        f"{stopped}: the result depends on how fast and busy this machine was; "
        "train by steps for a result that reproduces"
    )

"""The rows of the results table (docs/report.md): one Spec per row (tools/report.py runs them).

A Spec names the recipe to pretrain, the data it needs (the recipe files are checked too), the
probe, and gin bindings for pretraining (params) or for the probes only (eval_params, e.g. a
label-free video probe). `how` says how to get data that is not bundled.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import List, Optional

FASHION_FULL = "data/fashion_mnist/fashion_mnist.npz"
KICAD_UNLABELED = ("KiCad 3-D package models: pretrained on 1178 labeled train + 2141 unlabeled shapes (78 other "
                   "families); probed on the 12 families' 1178 train / 288 test shapes, 512 points")
KICAD_LABELED_ONLY = "PointCloudDataset.root='data/kicad3d'"  # probes read the labeled folder only
KICAD3D_HOW = "python tools/make_sample_data.py kicad3d (Debian's kicad-packages3d; CC-BY-SA 4.0, git-ignored)"
KICAD_HOW = ("python tools/make_sample_data.py kicad3d && python tools/make_sample_data.py kicad3d-unlabeled "
             "(Debian's kicad-packages3d; CC-BY-SA 4.0, git-ignored)")
KICAD_NEEDS = ["data/kicad3d", "data/kicad3d_unlabeled"]
POINTS_FINETUNE = ["train.steps=1200", "train.warmup_steps=60", "train.eval_every=200"]


@dataclass
class Spec:
    """One modality's report row: what to pretrain and how to probe it."""
    key: str
    data: str
    recipe: List[str]
    needs: List[str] = field(default_factory=list)  # data files that must exist (the recipe files always must)
    params: List[str] = field(default_factory=list)  # extra gin bindings for pretraining
    protocol: str = "linear"
    pool: str = "mean"
    layer: Optional[int] = None  # probe this encoder block's output (tools/eval.py --layer) instead of the top
    eval_params: List[str] = field(default_factory=list)  # gin bindings for the probes only
    raw_pool: Optional[str] = None  # how the raw-input baseline pools tokens (default: flatten)
    how: str = ""  # how to get `needs` when they are missing
    eval_args: List[str] = field(default_factory=list)  # extra tools/eval.py arguments (--modality image)
    finetune: Optional[str] = None  # a fine-tuning recipe: the row fine-tunes (from pretrained vs random init)
    finetune_params: List[str] = field(default_factory=list)  # its bindings (steps)
    pretrained_by: Optional[str] = None  # the row whose pretraining run (same seed and budget) this row reuses
    episode_binding: Optional[str] = None  # few-shot rows: the binding that picks a draw of the k shots
    episodes: int = 1  # how many draws the row averages (tools/report.py --episodes overrides)
    # fine-tune rows: fine-tune seeds over the one pretraining checkpoint (None: the pretraining
    # seed alone; tools/report.py --finetune-seeds sets them), so a gain can be told from fine-tune noise
    finetune_seeds: Optional[List[int]] = None

    def required(self) -> List[str]:
        return list(self.recipe) + list(self.needs)

    def copy(self) -> "Spec":
        return copy.deepcopy(self)


ROWS = [
    Spec("images", "Fashion-MNIST sample, 4k train / 1k test, 28x28", ["gin/image_mae_cpu.gin"]),
    # MAE's headline protocol: fine-tune every weight (gin/finetune_image.gin: layer decay, mixup,
    # cutmix, label smoothing, drop path) from the pretrained run and from random init, equal steps;
    # top-1 on the test split. The raw column stays the linear probe on raw pixels.
    Spec("images-finetune", "Fashion-MNIST sample, 4k train / 1k test, 28x28", ["gin/image_mae_cpu.gin"],
         protocol="finetune", finetune="gin/finetune_image.gin",
         finetune_params=["train.steps=400", "train.warmup_steps=40", "train.eval_every=100"]),
    # Other targets and pipelines on the same backbone, data and probe as the "images" row.
    Spec("images-maskfeat", "Fashion-MNIST sample, 4k train / 1k test, 28x28", ["gin/maskfeat_cpu.gin"]),
    Spec("images-data2vec", "Fashion-MNIST sample, 4k train / 1k test, 28x28", ["gin/data2vec_image_cpu.gin"]),
    Spec("images-mfm", "Fashion-MNIST sample, 4k train / 1k test, 28x28", ["gin/mfm_cpu.gin"]),
    Spec("images-beit", "Fashion-MNIST sample, 4k train / 1k test, 28x28 (codes of the shipped VQ tokenizer)",
         ["gin/beit_v2_tiny.gin"], needs=["data/sample/tokenizers/fashion_vq512.pt"]),
    # the teacher: the images-finetune row's pretrained MAE (run that row first)
    Spec("images-distill", "Fashion-MNIST sample, 4k train / 1k test, 28x28 (teacher: the images-finetune row's MAE)",
         ["gin/distill_mae.gin"], needs=["runs/report/images-finetune/checkpoints/last.pt"],
         params=["TeacherTarget.checkpoint='runs/report/images-finetune/checkpoints/last.pt'"],
         how="python tools/report.py images-finetune (its pretraining run is the teacher)"),
    Spec("images-cropmae", "Fashion-MNIST sample, 4k train / 1k test, 28x28", ["gin/crop_mae_cpu.gin"]),
    # Cross-modal: the image probe of the joint audio-visual MAE vs an image-only MAE of the same
    # size on the same digit images (equal CPU budget).
    Spec("digits", "MNIST digits sample, 4k train / 1k test, 28x28 (image-only MAE)", ["gin/image_mae_cpu.gin"],
         params=["ImageDataset.root='data/sample/images/digits.npz'"]),
    Spec("av-digits", "the same digits, each paired with a spoken digit of its class; probe: image tokens only",
         ["gin/av_digits_mae.gin"], eval_args=["--modality", "image"]),
    Spec("images-full", "Fashion-MNIST, 60k train / 10k test, 28x28", ["gin/image_mae_cpu.gin"], needs=[FASHION_FULL],
         params=[f"ImageDataset.root='{FASHION_FULL}'"],
         how="All of Fashion-MNIST comes from Debian's dataset-fashion-mnist: python tools/make_sample_data.py "
             "fashion-full"),
    # No labeled video set is available offline, so the probe is temporal coherence: 16 windows of
    # 8 frames (stride 2) per clip, each in order (0) and shuffled (1); train windows start in the
    # first half of each clip, test windows in the last 30%. The raw baseline mean-pools tubelets.
    Spec("video", "4 sample clips; probe: frames in order vs shuffled, train = early windows, test = late ones",
         ["gin/video_mae_cpu.gin"], eval_params=["VideoDataset.probe='shuffle'", "VideoDataset.clips_per_video=16",
                                                  "VideoDataset.sampling_rate=2"], raw_pool="mean"),
    # SiamMAE's encoder sees one frame, so its label-free probe is on frames: which of the 4 clips
    # is this frame from (VideoDataset.probe='identity'), train frames from the first half of each
    # clip, test frames from the last 30% (FramePairs probes read VideoDataset's windows: 2 frames,
    # 8 apart; view 1, the first, is probed).
    Spec("video-siammae", "4 sample clips as frames; probe: which clip, train = early frames, test = late ones",
         ["gin/siam_mae_cpu.gin"], eval_params=["VideoDataset.probe='identity'", "VideoDataset.clips_per_video=16",
                                                 "VideoDataset.num_frames=2", "VideoDataset.sampling_rate=8"],
         raw_pool="mean"),
    Spec("points", "MNIST digits sample as 512-point sets, 4k train / 1k test", ["gin/point_mae_cpu.gin"]),
    Spec("points3d", "KiCad 3-D package models (12 families), 1178 train / 288 test shapes, 512 points",
         ["gin/point_mae_kicad_cpu.gin"], needs=["data/kicad3d"],
         how=KICAD3D_HOW),
    # Point-MAE's own protocol: fine-tune every weight with a classification head (equal steps
    # from the points3d row's pretrained encoder and from random init); raw: the linear probe.
    Spec("points3d-finetune", "KiCad 3-D package models (12 families), 1178 train / 288 test shapes, 512 points",
         ["gin/point_mae_kicad_cpu.gin"], needs=["data/kicad3d"], protocol="finetune",
         finetune="gin/finetune_points.gin",  # 400 steps (11 epochs) left both still climbing steeply
         finetune_params=POINTS_FINETUNE, pretrained_by="points3d",
         how=KICAD3D_HOW),
    # Point-MAE's setting: pretrain on more (unlabeled) shapes than are labeled, probe and
    # fine-tune on the labeled ones only; random init and raw read the same labeled data as points3d.
    Spec("points3d-unlabeled", KICAD_UNLABELED, ["gin/point_mae_kicad_unlabeled_cpu.gin"],
         needs=KICAD_NEEDS, eval_params=[KICAD_LABELED_ONLY], how=KICAD_HOW),
    Spec("points3d-unlabeled-finetune", KICAD_UNLABELED, ["gin/point_mae_kicad_unlabeled_cpu.gin"],
         needs=KICAD_NEEDS, eval_params=[KICAD_LABELED_ONLY], protocol="finetune",
         finetune="gin/finetune_points.gin", finetune_params=POINTS_FINETUNE, pretrained_by="points3d-unlabeled",
         how=KICAD_HOW),
    # Label-scarce fine-tuning (Point-MAE's few-shot tables, here 10 labeled shapes per family):
    # the points3d-unlabeled run vs random init at equal steps; raw: the linear probe on the same 10-shot train split.
    Spec("points3d-10shot", "KiCad 3-D package models: pretrained as points3d-unlabeled; fine-tuned on 10 labeled "
         "shapes per family (120), tested on all 288", ["gin/point_mae_kicad_unlabeled_cpu.gin"],
         needs=KICAD_NEEDS, eval_params=[KICAD_LABELED_ONLY, "PointCloudDataset.shots=10"],
         protocol="finetune", finetune="gin/finetune_points.gin", pretrained_by="points3d-unlabeled", how=KICAD_HOW,
         episode_binding="PointCloudDataset.episode", episodes=5,
         finetune_params=["PointCloudDataset.shots=10", "train.steps=600", "train.warmup_steps=30",
                          "train.eval_every=100"]),
    Spec("point2vec", "MNIST digits sample as 512-point sets, 4k train / 1k test", ["gin/point2vec_cpu.gin"]),
    # PCP-MAE: Point-MAE whose decoder reads predicted, not given, centres of the hidden groups.
    Spec("points-pcp", "MNIST digits sample as 512-point sets, 4k train / 1k test", ["gin/pcp_mae_cpu.gin"]),
    Spec("points3d-pcp", "KiCad 3-D package models (12 families), 1178 train / 288 test shapes, 512 points",
         ["gin/point_mae_kicad_cpu.gin", "gin/pcp_centres.gin"], needs=["data/kicad3d"],
         how=KICAD3D_HOW),
    Spec("graphs", "Drosophila connectome sample, node labels, labeled nodes split 80/20", ["gin/graph_mae.gin"]),
    # The probe learns the word on 6 voices and is tested on the 2 held-out ones; the raw baseline
    # is the flattened normalized fbank (time order kept), which mean-pooled features do not have.
    Spec("audio", "spoken digits (espeak-ng), 240 train / 80 test clips, test voices unseen", ["gin/audio_mae_cpu.gin"]),
    # The 40 fortune files are the labels; the raw baseline is the bag of bytes (mean of one-hot ids).
    Spec("text", "Debian fortunes, 40 categories, 4445 train / 768 test texts (7801 / 1266 sequences of 128 bytes)", ["gin/text_mlm_cpu.gin"],
         raw_pool="mean"),
    Spec("satellite", "Statlog Landsat MSS, 3x3 pixels x 4 bands, 6 land-cover classes, 4435 train / 2000 test",
         ["gin/sat_mae_cpu.gin"], needs=["data/satellite_statlog/statlog.npz"],
         how="python tools/make_sample_data.py statlog (reads Satellite.rda of Debian's r-cran-mlbench; GPL-2, "
             "so not committed)"),
]


def lp_ft_of(spec: Spec) -> Spec:
    """The same fine-tune row under LP-FT (gin/finetune_points_lpft.gin: the head alone on the
    frozen encoder for the first quarter of the steps, then every weight), row <key>-lpft."""
    other = spec.copy()
    other.key, other.finetune = f"{spec.key}-lpft", "gin/finetune_points_lpft.gin"
    return other


ROWS += [lp_ft_of(spec) for spec in ROWS if spec.key in ("points3d-unlabeled-finetune", "points3d-10shot")]
SPECS = {spec.key: spec for spec in ROWS}

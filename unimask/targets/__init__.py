"""What the decoder predicts: a Target maps Tokens to (values [B, N, T], weight [B, N, T] | None).
The Target base (the contract and its defaults) is in unimask/interfaces.py.

    pixels.py     PixelTarget: raw patches or norm-pix (MAE, VideoMAE per channel)
    hog.py        HOGTarget: per-patch histograms of oriented gradients (MaskFeat)
    frequency.py  FrequencyTarget: the spectrum band FrequencyMasker removed (MFM)
    teachers.py   EMATeacherTarget (data2vec, Point2Vec, GraphMAE2), TeacherTarget (a frozen
                  encoder from a checkpoint, MaskDistill), top-k layer averages and their norms
    outside.py    TimmTeacher, HFTeacher: frozen teachers from timm state dicts and Hugging Face
                  folders (MaskDistill, MaskAlign, MR-MAE, DMAE), kept out of checkpoints
    codes.py      TokenTarget: discrete codes of a VQ tokenizer (BEiT v2-style)
    discriminative.py  DiscriminativeTarget: a teacher's features aggregated over each token's
                  top-k most similar neighbours (DMT-JEPA)
    clusters.py   ClusterTarget: Sinkhorn-balanced assignments to online prototypes of a teacher's
                  features (CAPI, SIGMA), AssignmentCELoss for the student's logits
"""
from unimask.targets.clusters import AssignmentCELoss, ClusterTarget, sinkhorn  # noqa: F401
from unimask.targets.codes import TokenTarget  # noqa: F401
from unimask.targets.discriminative import DiscriminativeTarget, neighbour_aggregate  # noqa: F401
from unimask.targets.frequency import FrequencyTarget  # noqa: F401
from unimask.targets.hog import HOGTarget  # noqa: F401
from unimask.targets.outside import HFTeacher, TimmTeacher  # noqa: F401
from unimask.targets.pixels import PixelTarget  # noqa: F401
from unimask.targets.teachers import EMATeacherTarget, TeacherTarget  # noqa: F401

"""Fine-tuning's input-space augmentation: mixup / cutmix blend normalized pixels whether the
loader hands over floats or uint8 images (ImageDataset.output='uint8', normalized on the device)."""
import numpy as np
import pytest
import torch

from helpers import tiny_image_model
from unimask.models.classifier import Classifier


def test_mixup_on_uint8_images_equals_mixup_on_their_normalized_floats():
    model = tiny_image_model()
    classifier = Classifier(model.adapter, model.encoder, num_classes=4, mixup=0.8, cutmix=1.0, layer_decay=None)
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    floats = model.adapter.normalize(images)
    assert floats.dtype == torch.float32 and torch.equal(model.adapter.float_input({"image": images})["image"], floats)
    losses = []
    for batch in ({"image": images, "label": labels}, {"image": floats, "label": labels}):
        np.random.seed(0)  # timm's Mixup draws its lambda and mode from numpy
        torch.manual_seed(0)
        losses.append(classifier(batch).loss)
    assert torch.isfinite(losses[0]) and torch.equal(losses[0], losses[1])
    assert model.adapter.float_input({"image": floats})["image"] is floats  # floats pass through untouched


def test_finetune_augmentation_through_timm_is_seeded_and_refused_where_it_cannot_apply():
    """ImageDataset.rand_augment / random_erasing: MAE's fine-tuning pipeline from timm's
    create_transform, drawn from the sample's seed like every augmentation here (resume is exact)."""
    from modalities.image import ImageDataset

    root = "data/sample/images/fashion_mnist.npz"
    strong = ImageDataset(root=root, img_size=28, in_chans=1, rand_augment="rand-m9-mstd0.5-inc1", random_erasing=1.0)
    first = strong[(0, 5)]["image"]
    assert first.shape == (1, 28, 28) and first.dtype == torch.float32
    assert torch.equal(first, strong[(0, 5)]["image"]) and not torch.equal(first, strong[(0, 6)]["image"])
    plain = ImageDataset(root=root, img_size=28, in_chans=1)
    assert not torch.equal(first, plain[(0, 5)]["image"])
    for bad in ({"augment": False}, {"output": "uint8"}):
        with pytest.raises(ValueError, match="rand_augment"):
            ImageDataset(root=root, img_size=28, in_chans=1, rand_augment="rand-m9-mstd0.5-inc1", **bad)


@pytest.mark.slow
def test_paper_scale_finetune_recipe_trains_under_smoke(tmp_path):
    from helpers import SMOKE, fast_params, read_metrics, run_train

    workdir = str(tmp_path / "ft")
    assert run_train(["--gin", "gin/finetune_mae.gin", "--gin", SMOKE, "--workdir", workdir,
                      *fast_params("train.init_from=None", "train.steps=4", "train.eval_every=4")]) == 0
    rows = read_metrics(workdir)
    assert len(rows) == 4 and "eval_top1" in rows[-1]

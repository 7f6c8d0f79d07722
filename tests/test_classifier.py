"""Fine-tuning's input-space augmentation: mixup / cutmix blend normalized pixels whether the
loader hands over floats or uint8 images (ImageDataset.output='uint8', normalized on the device)."""
import numpy as np
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

"""The PretrainingModel classes the trainer runs (their base and StepOutput: unimask/interfaces.py).

masked.py      MaskedModel: tokenize -> mask -> encode -> decode -> loss (MAE, SimMIM, BERT, GraphMAE...)
multimodal.py  MultiModalModel: one encoder over several adapters' tokens (MultiMAE)
siamese.py     SiameseModel: two views, the second reconstructed from the first (SiamMAE)
classifier.py  Classifier: a pretrained encoder plus a head (fine-tuning, linear probing)
vq.py          VQTokenizer: learns the discrete codes that code targets predict
"""

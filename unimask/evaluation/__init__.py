"""Evaluation: what the tools in tools/ call to probe a checkpoint and to measure a results table.

    protocols.py   one probe of one model (linear, kNN, fine-tune): ProbeOptions -> evaluate() -> dict
    probe_data.py  the probe's train/test data, rebuilt from the run's train.dataset through gin
    specs.py       a results table's rows (Spec), read from a JSON file of rows
    budget.py      CPU-time budgets: timing a few steps, steps that fit, a training child process
    runs.py        a row's runs: pretraining on a budget, its three probes or its fine-tune pairs
    records.py     finished fine-tunes read back instead of run again (a stamp of what made them)
    statistics.py  test-set noise, spreads and means over paired runs (seeds, episodes)
    table.py       a row's cells; markdown.py the marked tables they are upserted into
    plots.py       training curves and the mask-ratio sweep as PNGs
    report.py      a row, a row over seeds, all rows, the mask-ratio sweep

Nothing here names a modality or a recipe: the rows are data (gin/report_specs.json).
"""

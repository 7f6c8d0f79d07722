"""Text with string labels (issue 45, defect 10): `{"text": ..., "label": "sports"}` loads; names map
to the indices of the train split's sorted names in every split; a name the train split lacks is
an error naming it; pretraining, which reads only the train split, trains."""
import json
import os
import subprocess
import sys

import pytest

from modalities.text import CorpusError, TextDataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = [("goal in the last minute", "sports"), ("rates rise again", "economy"), ("a new planet found", "science"),
         ("the match was won", "sports"), ("stocks fall", "economy"), ("a comet passes", "science")]
TEST = [("the cup final", "sports"), ("a probe lands", "science")]  # no 'economy': indices must not shift


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for text, label in rows:
            f.write(json.dumps({"text": text, "label": label}) + "\n")


@pytest.fixture
def corpus(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", TRAIN)
    write_jsonl(tmp_path / "test.jsonl", TEST)
    return tmp_path


def labels_by_text(dataset, rows):
    """{text: label} of a dataset built with packing='document' (one document a sequence)."""
    texts = [text for text, _ in rows]
    return {texts[i]: int(dataset.sequences.labels[i]) for i in range(len(texts))}


def test_names_map_to_sorted_train_classes_in_every_split(corpus):
    train = TextDataset(root=str(corpus), packing="document")
    test = TextDataset(root=str(corpus), split="test", packing="document")
    assert train.classes == test.classes == ["economy", "science", "sports"]
    for dataset, rows in ((train, TRAIN), (test, TEST)):
        got = labels_by_text(dataset, rows)
        assert got == {text: dataset.classes.index(name) for text, name in rows}


def test_a_test_root_uses_the_train_split_names(corpus, tmp_path):
    other = tmp_path / "elsewhere.jsonl"
    write_jsonl(other, [("interest cut", "economy")])
    test = TextDataset(root=str(corpus / "train.jsonl"), split="test", test_root=str(other), packing="document")
    assert test.classes == ["economy", "science", "sports"] and int(test.sequences.labels[0]) == 0


def test_an_unseen_name_in_the_test_split_is_an_error_naming_it(corpus):
    write_jsonl(corpus / "test.jsonl", TEST + [("a recipe for soup", "cooking")])
    with pytest.raises(CorpusError, match=r"test\.jsonl:3: label 'cooking' of the test split is not a class"):
        TextDataset(root=str(corpus), split="test")
    assert TextDataset(root=str(corpus)).classes == ["economy", "science", "sports"]  # the train split reads


def test_a_class_list_beside_the_file_still_fixes_the_order(corpus):
    (corpus / "classes.txt").write_text("sports\neconomy\nscience\n")
    train = TextDataset(root=str(corpus), packing="document")
    assert labels_by_text(train, TRAIN)["stocks fall"] == 1 and train.classes is None


def test_names_and_integers_mixed_are_ignored_in_train_and_an_error_in_test(corpus):
    with open(corpus / "train.jsonl", "a") as f:
        f.write(json.dumps({"text": "numbered", "label": 2}) + "\n")
    with pytest.warns(UserWarning, match=r"train\.jsonl:1: label 'sports' is a class name but .*train\.jsonl:7"):
        train = TextDataset(root=str(corpus), packing="document")
    assert train.classes is None and (train.sequences.labels == -1).all()
    with pytest.raises(CorpusError, match=r"train\.jsonl:1: label 'sports' is a class name but .*train\.jsonl:7"):
        TextDataset(root=str(corpus), split="test")


@pytest.mark.parametrize("bad", [None, ["sports", "economy"], 1.0, True])
def test_labels_that_are_no_class_do_not_stop_the_train_split(corpus, bad):
    """Pretraining reads the train split: a null, multi-label, float or bool label is ignored (-1);
    the test split, which scores a probe, refuses it naming file and line (null is just unlabeled)."""
    rows = TRAIN + [("an odd row", bad)]
    write_jsonl(corpus / "train.jsonl", rows)
    train = TextDataset(root=str(corpus), packing="document")
    assert labels_by_text(train, rows)["an odd row"] == -1 and train.classes == ["economy", "science", "sports"]
    if bad is None:
        assert TextDataset(root=str(corpus), split="test").classes == train.classes
        return
    with pytest.raises(CorpusError, match=r"train\.jsonl:7: label .* is neither an integer nor a class name"):
        TextDataset(root=str(corpus), split="test")
    write_jsonl(corpus / "train.jsonl", TRAIN)
    write_jsonl(corpus / "test.jsonl", TEST + [("an odd row", bad)])
    with pytest.raises(CorpusError, match=r"test\.jsonl:3: label .* is neither an integer nor a class name"):
        TextDataset(root=str(corpus), split="test")


def test_integer_test_labels_against_train_names_are_an_error_naming_the_file(corpus):
    write_jsonl(corpus / "test.jsonl", [(text, 2) for text, _ in TEST])
    with pytest.raises(CorpusError, match=r"test\.jsonl:1: the test split has the integer label 2 .*train\.jsonl"):
        TextDataset(root=str(corpus), split="test")


def test_pretraining_on_string_labels_runs(corpus, tmp_path):
    write_jsonl(corpus / "test.jsonl", TEST + [("a recipe for soup", "cooking")])  # pretraining reads train only
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "--gin", "gin/text_mlm_cpu.gin",
           "--gin", "gin/smoke.gin", "--gin_param", f"TextDataset.root='{corpus}'", "--gin_param", "train.steps=3",
           "--gin_param", "train.num_workers=1", "--workdir", str(tmp_path / "run")]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=500)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "done: step 3/3" in run.stdout
    with open(tmp_path / "run" / "run.json") as f:
        assert json.load(f)["classes"] == ["economy", "science", "sports"]  # saved in the run
    write_jsonl(corpus / "test.jsonl", TEST)
    probe = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "eval.py"), "--checkpoint",
                            str(tmp_path / "run" / "checkpoints" / "last.pt")], cwd=ROOT, capture_output=True,
                           text=True, timeout=500)
    assert probe.returncode == 0 and "top1_acc=" in probe.stdout, probe.stdout[-2000:] + probe.stderr[-4000:]

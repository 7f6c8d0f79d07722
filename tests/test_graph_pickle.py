"""Graph files are data, never code (issue 45, defect 1, the graph readers): a .pt is read
weights-only and a networkx pickle is refused unless GraphDataset.trust_pickle=True. The payloads
are crafted here: unpickling them would create a sentinel file, which must never appear."""
import os
import pickle

import networkx as nx
import pytest
import torch

from modalities.graph import GraphDataset


class Payload:
    """Unpickling this opens (creates) `sentinel` for writing: proof that code ran."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def test_pt_with_a_payload_is_refused_naming_file_and_binding(tmp_path):
    sentinel = tmp_path / "ran.txt"
    torch.save({"edge_index": torch.tensor([[0], [1]]), "extra": Payload(sentinel)}, tmp_path / "evil.pt")
    assert not sentinel.exists()
    with pytest.raises(Exception, match=r"evil\.pt.*GraphDataset\.trust_pickle=True"):
        GraphDataset(str(tmp_path / "evil.pt"))
    assert not sentinel.exists()


@pytest.mark.parametrize("ext", [".pkl", ".pickle", ".gpickle"])
def test_pickled_graph_is_refused_without_trust(tmp_path, ext):
    sentinel = tmp_path / "ran.txt"
    with open(tmp_path / f"evil{ext}", "wb") as f:
        pickle.dump(Payload(sentinel), f)
    with pytest.raises(Exception, match=rf"evil\{ext}.*GraphDataset\.trust_pickle=True"):
        GraphDataset(str(tmp_path / f"evil{ext}"))
    assert not sentinel.exists()


def test_pyg_data_still_loads_weights_only(tmp_path):
    from torch_geometric.data import Data

    data = Data(x=torch.randn(4, 3), edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]), y=torch.tensor([0, 1, 1, 0]),
                train_mask=torch.tensor([True, True, False, False]))
    torch.save(data, tmp_path / "one.pt")
    torch.save([data, data], tmp_path / "two.pt")
    record = GraphDataset(str(tmp_path / "one.pt")).records[0]
    assert record["num_nodes"] == 4 and torch.equal(record["x"], data.x)
    assert len(GraphDataset(str(tmp_path / "two.pt"))) == 2


def test_trusted_gpickle_still_loads(tmp_path):
    graph = nx.karate_club_graph()
    with open(tmp_path / "k.gpickle", "wb") as f:
        pickle.dump(graph, f)
    record = GraphDataset(str(tmp_path / "k.gpickle"), trust_pickle=True).records[0]
    assert record["num_nodes"] == 34


def test_trusted_pt_gets_a_full_unpickle(tmp_path):
    """trust_pickle=True is the explicit opt-in: the same file then loads (here harmlessly)."""
    torch.save({"edge_index": torch.tensor([[0], [1]]), "note": Note("x")}, tmp_path / "custom.pt")
    with pytest.raises(Exception, match="GraphDataset.trust_pickle=True"):
        GraphDataset(str(tmp_path / "custom.pt"))
    assert GraphDataset(str(tmp_path / "custom.pt"), trust_pickle=True).records[0]["num_nodes"] == 2
    assert os.path.exists(tmp_path / "custom.pt")


class Note:
    def __init__(self, text):
        self.text = text

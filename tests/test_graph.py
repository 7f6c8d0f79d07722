"""Graphs (issue 6): loading, collation, GraphMAE masking, GNN encoder/decoder, SCE, sampling,
EMA teacher, edge masking, and smoke training on the bundled samples."""
import os
import pickle

import numpy as np

import gin
import networkx as nx
import pytest
import torch
import torch.nn.functional as F

from helpers import SMOKE, fast_params, read_metrics, run_train
from modalities.graph import (GraphAdapter, GraphDataset, GraphFormatError, graph_embeddings, hide_edges,
                              node_embeddings, pyg_neighbor_sampler_available, probe_nodes, sample_subgraph)
from unimask.evaluation.protocols import one_thread
from unimask.gnn import GNNDecoder, GNNEncoder
from unimask.losses import FeatureLatentSCELoss, SCELoss
from unimask.objectives import EdgeReconstruction
from unimask.masking import ConstantRatio, RandomMasker
from unimask.models.masked import MaskedModel
from unimask.targets import EMATeacherTarget
from unimask.optim import param_groups

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRAPHS = os.path.join(ROOT, "data", "sample", "graphs")
KARATE, DROSOPHILA, MICE = (os.path.join(GRAPHS, name) for name in ("karate", "drosophila", "mice"))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny graphs: scatter ops run faster on one thread, and do not spin against other jobs on
    a shared 2-core machine (2 threads were 30x slower there)."""
    with one_thread():
        yield


def tiny_model(in_dim, dim=16, mode="replace", replace_probs=(1.0, 0.0, 0.0), ratio=0.5, conv="gat",
               decoder="gat", target=None, loss=None, aux=(), edge_mask_ratio=0.0):
    adapter = GraphAdapter(in_dim=in_dim, dim=dim, edge_mask_ratio=edge_mask_ratio)
    encoder = GNNEncoder(dim=dim, depth=2, num_heads=2, conv=conv, feat_drop=0.0, attn_drop=0.0)
    dec = GNNDecoder(in_dim=dim, dim=dim, kind=decoder, feat_drop=0.0, attn_drop=0.0)
    return MaskedModel(adapter, RandomMasker(), ConstantRatio(ratio), encoder, dec, target=target,
                            loss=loss or SCELoss(alpha=3.0), mode=mode, replace_probs=replace_probs,
                            objectives=aux)


def batch_of(dataset, indices):
    return dataset.collate([dataset[i] for i in indices])


def write_csv(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(header + "\n" + "".join(",".join(str(v) for v in row) + "\n" for row in rows))


def edge_set(edge_index):
    return {tuple(e) for e in edge_index.t().tolist()}


# ---- loading ------------------------------------------------------------------------------------
def test_csv_pair_sample_loads_with_degree_features_and_labels():
    ds = GraphDataset(KARATE)
    rec = ds.records[0]
    assert len(ds) == 1 and ds.task == "node" and rec["num_nodes"] == 34
    assert rec["edge_index"].shape == (2, 156)  # 78 undirected edges, both directions
    assert not bool((rec["edge_index"][0] == rec["edge_index"][1]).any())  # no self-loops stored
    assert ds.feature_dim == 18  # GraphMAE: max degree (17) + 1 one-hot columns
    assert torch.equal(rec["x"].argmax(1), torch.bincount(rec["edge_index"][1], minlength=34))
    assert sorted(torch.bincount(rec["node_label"]).tolist()) == [17, 17]
    dros = GraphDataset(DROSOPHILA, feature_dim=128)
    assert dros.records[0]["num_nodes"] == 209
    assert torch.bincount(dros.records[0]["node_label"]).tolist() == [21, 101, 29, 58]


def test_feature_less_defaults_identity_and_laplacian():
    ident = GraphDataset(KARATE, features="identity", feature_dim=40).records[0]["x"]
    assert torch.equal(ident, torch.eye(34, 40))
    lap = GraphDataset(KARATE, features="laplacian", feature_dim=8).records[0]["x"]
    assert lap.shape == (34, 8) and torch.allclose(lap.t() @ lap, torch.eye(8), atol=1e-4)  # orthonormal
    assert bool((lap.abs().argmax(0) == lap.argmax(0)).all())  # sign fixed: largest entry positive


def test_multi_graph_folder_gives_graph_labels():
    ds = GraphDataset(MICE)
    assert len(ds) == 32 and ds.task == "graph"
    assert torch.bincount(torch.tensor([r["graph_label"] for r in ds.records])).tolist() == [8, 8, 8, 8]
    batch = batch_of(ds, [0, 9, 17])
    assert batch["label"].shape == (3,) and batch["x"].shape[0] == 3
    assert GraphAdapter(in_dim=ds.feature_dim).labels(batch).shape == (3,)


def test_pt_files_load_data_and_lists(tmp_path):
    from torch_geometric.data import Data

    edges = torch.tensor([[0, 1, 2], [1, 2, 3]])
    one = Data(x=torch.randn(4, 5), edge_index=edges, y=torch.tensor([0, 1, -1, 1]))
    torch.save(one, tmp_path / "one.pt")
    ds = GraphDataset(str(tmp_path / "one.pt"))
    assert ds.feature_dim == 5 and torch.equal(ds.records[0]["x"], one.x)
    assert ds.records[0]["node_label"].tolist() == [0, 1, -1, 1] and ds.task == "node"
    assert edge_set(ds.records[0]["edge_index"]) == edge_set(edges) | edge_set(edges.flip(0))
    many = [Data(edge_index=edges, num_nodes=4, y=torch.tensor([i % 2])) for i in range(3)]
    torch.save(many, tmp_path / "many.pt")
    ds = GraphDataset(str(tmp_path / "many.pt"), features="identity", feature_dim=6)
    assert len(ds) == 3 and ds.task == "graph" and ds.records[0]["x"].shape == (4, 6)
    assert batch_of(ds, [0, 1, 2])["label"].tolist() == [0, 1, 0]


def test_networkx_files_and_objects_load(tmp_path):
    g = nx.karate_club_graph()
    for n in g:
        g.nodes[n]["y"] = int(g.nodes[n]["club"] == "Officer")  # GML keeps 'label' for node names
        del g.nodes[n]["club"]
    nx.write_gml(g, tmp_path / "k.gml")
    nx.write_graphml(g, tmp_path / "k.graphml")
    with open(tmp_path / "k.gpickle", "wb") as f:
        pickle.dump(g, f)
    expected = GraphDataset(KARATE).records[0]
    for source in (g, str(tmp_path / "k.gml"), str(tmp_path / "k.graphml"), str(tmp_path / "k.gpickle")):
        trusted = isinstance(source, str) and source.endswith(".gpickle")  # a pickle needs the opt-in
        rec = GraphDataset(source, trust_pickle=trusted).records[0]
        assert rec["num_nodes"] == 34 and edge_set(rec["edge_index"]) == edge_set(expected["edge_index"]), source
        assert torch.equal(rec["node_label"], expected["node_label"]), source


def test_bad_inputs_raise_errors_naming_the_problem(tmp_path):
    from torch_geometric.data import Data

    write_csv(str(tmp_path / "range" / "nodes.csv"), "id,label", [(0, 0), (1, 1), (2, 0)])
    write_csv(str(tmp_path / "range" / "edges.csv"), "src,dst", [(0, 1), (1, 5)])
    with pytest.raises(GraphFormatError, match=r"edges\.csv.*\[5\].*out of range"):
        GraphDataset(str(tmp_path / "range"))
    torch.save(Data(edge_index=torch.tensor([[0, 7], [1, 0]]), num_nodes=3), tmp_path / "bad.pt")
    with pytest.raises(GraphFormatError, match=r"bad\.pt.*out of range for 3 nodes"):
        GraphDataset(str(tmp_path / "bad.pt"))
    write_csv(str(tmp_path / "feat" / "nodes.csv"), "id,label,f0,f1", [(0, 0, 1.0, 2.0), (1, 1, "", 3.0)])
    write_csv(str(tmp_path / "feat" / "edges.csv"), "src,dst", [(0, 1)])
    with pytest.raises(GraphFormatError, match=r"nodes\.csv:3: missing feature"):
        GraphDataset(str(tmp_path / "feat"))
    with pytest.raises(GraphFormatError, match=r"karate.*no node features"):
        GraphDataset(KARATE, features="given")
    write_csv(str(tmp_path / "empty" / "edges.csv"), "src,dst", [])
    with pytest.raises(GraphFormatError, match=r"empty.*no nodes"):
        GraphDataset(str(tmp_path / "empty"))
    write_csv(str(tmp_path / "empty2" / "nodes.csv"), "id,label", [])
    write_csv(str(tmp_path / "empty2" / "edges.csv"), "src,dst", [])
    with pytest.raises(GraphFormatError, match=r"empty2.*no nodes"):
        GraphDataset(str(tmp_path / "empty2"))
    with pytest.raises(GraphFormatError, match=r"3 features, GraphDataset.feature_dim is 8"):
        GraphDataset(Data(x=torch.randn(2, 3), edge_index=torch.tensor([[0], [1]])), feature_dim=8)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        GraphDataset(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="in_dim is 7"):
        GraphAdapter(in_dim=7).tokenize(batch_of(GraphDataset(KARATE), [0]))


def test_isolated_nodes_train_and_self_loops_are_dropped(tmp_path):
    write_csv(str(tmp_path / "iso" / "nodes.csv"), "id,label", [(i, i % 2) for i in range(6)])
    write_csv(str(tmp_path / "iso" / "edges.csv"), "src,dst", [(0, 1), (1, 2), (2, 2)])  # 3..5 isolated
    ds = GraphDataset(str(tmp_path / "iso"), features="identity", feature_dim=6)
    assert edge_set(ds.records[0]["edge_index"]) == {(0, 1), (1, 0), (1, 2), (2, 1)}
    model = tiny_model(6)
    out = model(batch_of(ds, [0, 0]), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and bool(torch.isfinite(out.pred).all())


# ---- collation, masking, replace ---------------------------------------------------------------
def ragged_dataset():
    from torch_geometric.data import Data

    graphs = [Data(x=torch.randn(n, 4), edge_index=torch.stack([torch.arange(n - 1), torch.arange(1, n)]),
                   y=torch.arange(n) % 3) for n in (5, 9, 12)]
    return GraphDataset(graphs)


def test_collate_pads_and_offsets_edges():
    ds = ragged_dataset()
    batch = batch_of(ds, [0, 1, 2])
    assert batch["x"].shape == (3, 12, 4) and batch["valid"].sum(1).tolist() == [5, 9, 12]
    assert batch["label"].shape == (3, 12) and batch["label"][0, 5:].tolist() == [-1] * 7
    src, dst = batch["edge_index"]
    assert bool((src // 12 == dst // 12).all())  # no edge crosses samples
    assert bool(batch["valid"].flatten()[batch["edge_index"]].all())  # none touches padding
    assert batch["edge_index"].shape[1] == 2 * (4 + 8 + 11)


def test_masked_node_count_is_exact_per_graph():
    ds = ragged_dataset()
    tokens = GraphAdapter(in_dim=4).tokenize(batch_of(ds, [0, 1, 2]))
    mask = RandomMasker()(tokens, 0.5, torch.Generator().manual_seed(0))
    assert mask.masked.sum(1).tolist() == [3, 5, 6]  # round(0.5 n), halves up
    assert not bool((mask.masked & ~tokens.valid).any())


def test_drop_mode_on_a_ragged_batch_keeps_padding_out():
    ds = ragged_dataset()
    model = tiny_model(4, mode="drop").eval()
    out = model(batch_of(ds, [0, 1, 2]), generator=torch.Generator().manual_seed(0))
    mask = out.mask
    assert mask.keep_valid.sum(1).tolist() == [2, 4, 6]  # n - round(n / 2) visible
    assert bool((out.extras["latent"][~mask.keep_valid] == 0).all()) and torch.isfinite(out.loss)


def encoder_input(model, batch, seed=0):
    """Run the model once and capture what the encoder received [B, N, D] and the mask."""
    seen = {}
    handle = model.encoder.register_forward_pre_hook(lambda m, args: seen.update(x=args[0].detach()))
    out = model(batch, generator=torch.Generator().manual_seed(seed))
    handle.remove()
    return seen["x"], out


def test_replace_mode_puts_mask_token_and_random_nodes_on_hidden_nodes_only():
    ds = GraphDataset(DROSOPHILA, feature_dim=128)
    batch = batch_of(ds, [0, 0])
    model = tiny_model(128, replace_probs=(1.0, 0.0, 0.0)).eval()
    x_in, out = encoder_input(model, batch)
    embedded = model.adapter.embed(batch["x"], None, None)
    hidden = out.mask.masked
    assert torch.allclose(x_in[hidden], model.enc_mask_token.view(1, -1).expand(int(hidden.sum()), -1))
    assert torch.allclose(x_in[~hidden], embedded[~hidden])
    # replace_rate r = (1 - r, r, 0): about r of the hidden nodes get another real node's features
    model = tiny_model(128, replace_probs=(0.8, 0.2, 0.0)).eval()
    x_in, out = encoder_input(model, batch, seed=3)
    embedded = model.adapter.embed(batch["x"], None, None)
    hidden = out.mask.masked
    is_token = (x_in - model.enc_mask_token).abs().amax(-1) < 1e-6
    real = embedded.flatten(0, 1)
    gap = (x_in.flatten(0, 1)[:, None] - real[None]).abs().amax(-1)  # [B*N, B*N]
    is_real_node = gap.min(1).values.view_as(hidden) < 1e-6
    assert torch.allclose(x_in[~hidden], embedded[~hidden])
    assert bool((is_token | is_real_node)[hidden].all()) and not bool(is_token[~hidden].any())
    share = float((~is_token[hidden]).float().mean())
    assert 0.12 < share < 0.28, share  # 210 hidden nodes, expected 0.2


def test_sce_loss_matches_hand_computation():
    ds = GraphDataset(KARATE)
    model = tiny_model(ds.feature_dim).eval()
    batch = batch_of(ds, [0])
    out = model(batch, generator=torch.Generator().manual_seed(1))
    hidden = out.mask.masked[0]  # 17 of 34 nodes
    assert int(hidden.sum()) == 17
    pred = model.full_prediction(out)[0][hidden]
    target = batch["x"][0][hidden]
    by_hand = []
    for p, t in zip(pred.tolist(), target.tolist()):
        norms = max(sum(a * a for a in p) ** 0.5, 1e-8) * max(sum(b * b for b in t) ** 0.5, 1e-8)
        cos = sum(a * b for a, b in zip(p, t)) / norms  # a zero prediction (all neighbours re-masked) -> 0
        by_hand.append((1 - cos) ** 3)
    assert abs(float(out.loss.detach()) - sum(by_hand) / len(by_hand)) < 1e-5
    # GraphMAE's own sce_loss: normalize, (1 - x.y)^alpha, mean
    graphmae = (1 - (F.normalize(pred, dim=-1) * F.normalize(target, dim=-1)).sum(-1)).pow(3).mean()
    assert torch.allclose(out.loss, graphmae, atol=1e-6)


# ---- encoder / decoder ---------------------------------------------------------------------------
def test_gnn_encoder_in_drop_mode_ignores_edges_to_hidden_nodes():
    ds = GraphDataset(KARATE)
    batch = batch_of(ds, [0])
    model = tiny_model(ds.feature_dim, mode="drop").eval()
    tokens = model.adapter.tokenize(batch)
    mask = model.make_mask(tokens, 0.0, torch.Generator().manual_seed(0))
    latent = model.encode(tokens, mask)[0]
    visible = mask.ids_keep[0]
    hidden = torch.nonzero(mask.masked[0]).squeeze(1)
    # the same encoder on the induced sub-graph of the visible nodes, built by hand
    from torch_geometric.utils import subgraph

    sub_edges, _ = subgraph(visible, batch["edge_index"], relabel_nodes=True, num_nodes=34)
    sub_batch = {"x": batch["x"][:, visible], "valid": torch.ones(1, len(visible), dtype=torch.bool),
                 "edge_index": sub_edges}
    sub_tokens = model.adapter.tokenize(sub_batch)
    ids = torch.arange(len(visible))[None]
    expected = model.encoder(model.embed_tokens(sub_tokens, ids), None, sub_tokens, ids)
    assert torch.allclose(latent, expected, atol=1e-5)
    # more edges from hidden nodes to visible ones change nothing in drop mode...
    extra = torch.stack([hidden.repeat_interleave(3), visible[:3].repeat(len(hidden))])
    more = dict(batch, edge_index=torch.cat([batch["edge_index"], extra, extra.flip(0)], 1))
    more_tokens = model.adapter.tokenize(more)
    assert torch.allclose(model.encode(more_tokens, mask)[0], latent, atol=1e-6)
    # ...but they do change the output when every node is encoded (the edges are really read)
    all_ids = torch.arange(34)[None]
    full = model.encoder(model.embed_tokens(tokens, all_ids), None, tokens, all_ids)
    full_more = model.encoder(model.embed_tokens(more_tokens, all_ids), None, more_tokens, all_ids)
    assert not torch.allclose(full[0, visible[:3]], full_more[0, visible[:3]], atol=1e-4)


@pytest.mark.parametrize("kind", ["gat", "gin", "mlp", "linear"])
def test_gnn_decoder_kinds(kind):
    ds = GraphDataset(KARATE)
    batch = batch_of(ds, [0, 0])
    model = tiny_model(ds.feature_dim, decoder=kind).eval()
    out = model(batch, generator=torch.Generator().manual_seed(0))
    assert out.pred.shape == (2, 34, ds.feature_dim) and torch.isfinite(out.loss)
    tokens = out.tokens
    x = torch.randn(2, 34, 16)
    no_edges = tokens.replace(extras={"edge_index": torch.zeros(2, 0, dtype=torch.long)})
    changed = not torch.allclose(model.decoder(x, None, tokens, None), model.decoder(x, None, no_edges, None))
    assert changed == (kind in ("gat", "gin"))  # only message passing decoders read edges


def test_gin_encoder_switch_trains():
    ds = GraphDataset(KARATE)
    model = tiny_model(ds.feature_dim, conv="gin", decoder="gin")
    assert losses_fall(model, batch_of(ds, [0, 0]), steps=25)


def losses_fall(model, batch, steps, lr=1e-2):
    opt = torch.optim.AdamW(param_groups(model, 0.0), lr=lr)
    losses = []
    for step in range(steps):
        out = model(batch, progress=step / steps, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        model.after_step(step / steps)
        losses.append(float(out.loss))
    return sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5


# ---- sampling ---------------------------------------------------------------------------------------
def test_khop_subgraphs_and_fanout_sampling():
    edge_index = GraphDataset(DROSOPHILA, feature_dim=128).records[0]["edge_index"]
    seeds = torch.tensor([3, 50, 100])
    nodes, edges, center = sample_subgraph(edge_index, 209, seeds, 1, None)
    neighbours = set(edge_index[0][torch.isin(edge_index[1], seeds)].tolist()) | set(seeds.tolist())
    assert set(nodes.tolist()) == neighbours and int(center.sum()) == 3
    assert set(nodes[center].tolist()) == set(seeds.tolist())
    torch.manual_seed(0)
    nodes, edges, center = sample_subgraph(edge_index, 209, seeds, 2, [4, 2], backend="torch")
    assert nodes[:3].tolist() == seeds.tolist() and center[:3].all() and not center[3:].any()
    assert len(nodes) == len(set(nodes.tolist())) <= 3 + 3 * 4 + 3 * 4 * 2
    hop1 = nodes[3:3 + 12]
    assert set(hop1.tolist()) <= neighbours  # the first new nodes are neighbours of the seeds
    assert int(edges.max()) < len(nodes)
    if pyg_neighbor_sampler_available():
        nodes, _, _ = sample_subgraph(edge_index, 209, seeds, 2, [4, 2], backend="pyg")
        assert nodes[:3].tolist() == seeds.tolist()
    else:
        with pytest.raises(ImportError, match="pyg-lib or torch-sparse"):
            sample_subgraph(edge_index, 209, seeds, 2, [4, 2], backend="pyg")


def test_khop_dataset_items_cover_the_graph_in_pieces():
    ds = GraphDataset(DROSOPHILA, feature_dim=128, sampling="khop", num_hops=1, seeds_per_item=32,
                      num_neighbors=[4])
    assert len(ds) == 7  # ceil(209 / 32)
    batch = batch_of(ds, [(0, 11), (1, 12)])
    assert batch["center"].sum(1).tolist() == [32, 32]
    assert batch["valid"].sum(1).max() <= 32 + 32 * 4
    labels = ds.records[0]["node_label"]
    valid = batch["valid"]
    assert torch.equal(batch["label"][valid], labels[batch["node_id"][valid]])


# ---- training --------------------------------------------------------------------------------------
def run_recipe(tmp_path, name, *params):
    workdir = str(tmp_path / name)
    code = run_train(["--gin", "gin/graph_mae.gin", "--gin", SMOKE, "--workdir", workdir,
                      *fast_params("train.steps=20", "train.eval_every=10", "train.ckpt_every=20", *params)])
    assert code == 0
    return [row["loss"] for row in read_metrics(workdir)]


def falling(losses):
    return sum(losses[-4:]) / 4 < 0.85 * sum(losses[:2]) / 2


def test_full_batch_recipe_trains_with_falling_loss(tmp_path):
    losses = run_recipe(tmp_path, "full", f"GraphDataset.root='{KARATE}'", "FEAT_DIM=18")
    assert len(losses) == 20 and falling(losses), losses
    assert os.path.isfile(tmp_path / "full" / "recon" / "step_20.png")  # GraphAdapter.render


def test_khop_recipe_trains_with_falling_loss(tmp_path):
    losses = run_recipe(tmp_path, "khop", "GraphDataset.sampling='khop'", "GraphDataset.num_hops=1",
                        "GraphDataset.seeds_per_item=16", "GraphDataset.num_neighbors=[6]")
    assert len(losses) == 20 and falling(losses), losses


def test_default_recipe_trains_on_drosophila_under_smoke(tmp_path):
    workdir = str(tmp_path / "default")
    assert run_train(["--gin", "gin/graph_mae.gin", "--gin", SMOKE, "--workdir", workdir, *fast_params()]) == 0
    losses = [row["loss"] for row in read_metrics(workdir)]
    assert len(losses) == 30 and falling(losses), losses


def test_recipe_switches_build_and_run():
    from unimask.cli import parse_gin

    switches = ["MaskedModel.target=@EMATeacherTarget()", "EMATeacherTarget.with_input=True",
                "MaskedModel.loss=@FeatureLatentSCELoss()", "GraphAdapter.edge_mask_ratio=0.3",
                "MaskedModel.objectives=[@EdgeReconstruction()]", "GNNEncoder.conv='gin'",
                "GNNDecoder.kind='mlp'", f"GraphDataset.root='{KARATE}'", "FEAT_DIM=18"]
    parse_gin(["gin/graph_mae.gin", SMOKE], switches)
    model = gin.query_parameter("train.model").scoped_configurable_fn()
    dataset = gin.query_parameter("train.dataset").scoped_configurable_fn()
    out = model(batch_of(dataset, [0, 0]), generator=torch.Generator().manual_seed(0))
    assert isinstance(model.target, EMATeacherTarget) and out.pred.shape[-1] == 18 + 64
    assert "aux_0_EdgeReconstruction" in out.terms and torch.isfinite(out.loss)


# ---- GraphMAE2 teacher and edge masking -----------------------------------------------------------
def test_ema_teacher_starts_as_the_student_and_follows_it_by_ema():
    ds = GraphDataset(KARATE)
    target = EMATeacherTarget(latent_dim=16, momentum=0.9, with_input=True)
    model = tiny_model(ds.feature_dim, target=target, loss=FeatureLatentSCELoss(latent_dim=16))
    student = dict(model.encoder.named_parameters())
    teacher = dict(target.teacher_encoder.named_parameters())
    assert all(torch.equal(student[k], teacher[k]) for k in student)
    assert not any(p.requires_grad for p in target.parameters())
    optimized = {id(p) for group in param_groups(model, 0.05) for p in group["params"]}
    assert not optimized & {id(p) for p in target.parameters()}
    batch = batch_of(ds, [0])
    values, _ = target(model.adapter.tokenize(batch), model.adapter)
    assert values.shape == (1, 34, ds.feature_dim + 16) and torch.equal(values[..., :ds.feature_dim], batch["x"])
    before = {k: v.clone() for k, v in teacher.items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    model(batch, generator=torch.Generator().manual_seed(0)).loss.backward()
    opt.step()
    model.after_step(0.1)
    for k in student:
        assert torch.allclose(teacher[k], 0.9 * before[k] + 0.1 * student[k], atol=1e-6), k
    assert any(not torch.equal(teacher[k], before[k]) for k in student)
    assert not target.teacher_encoder.training  # the teacher never runs dropout
    with pytest.raises(RuntimeError, match="attach"):
        EMATeacherTarget(latent_dim=16)(model.adapter.tokenize(batch), model.adapter)


def test_ema_teacher_target_trains():
    ds = GraphDataset(KARATE)
    model = tiny_model(ds.feature_dim, target=EMATeacherTarget(latent_dim=16, with_input=True),
                       loss=FeatureLatentSCELoss(latent_dim=16))
    assert losses_fall(model, batch_of(ds, [0, 0]), steps=25)


def test_edge_masking_hides_pairs_while_training_only():
    ds = GraphDataset(KARATE)
    batch = batch_of(ds, [0, 0])
    adapter = GraphAdapter(in_dim=ds.feature_dim, edge_mask_ratio=0.25)
    kept, hidden = hide_edges(batch["edge_index"], 0.25)
    assert hidden.shape[1] == round(0.25 * 156) and bool((hidden[0] < hidden[1]).all())
    assert kept.shape[1] == 312 - 2 * hidden.shape[1]
    assert not edge_set(kept) & (edge_set(hidden) | edge_set(hidden.flip(0)))
    assert "masked_edge_index" in adapter.train().tokenize(batch).extras
    assert adapter.eval().tokenize(batch).extras["edge_index"].shape[1] == 312
    assert "masked_edge_index" not in adapter.tokenize(batch).extras


@pytest.mark.parametrize("mode", ["replace", "drop"])
def test_edge_reconstruction_objective_adds_a_trained_term(mode):
    torch.manual_seed(0)  # which edges the adapter hides
    ds = GraphDataset(KARATE)
    objective = EdgeReconstruction(dim=16)
    model = tiny_model(ds.feature_dim, mode=mode, aux=[objective], edge_mask_ratio=0.3).train()
    out = model(batch_of(ds, [0, 0]), generator=torch.Generator().manual_seed(0))
    term = out.terms["aux_0_EdgeReconstruction"]
    assert float(term) > 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert objective.score[0].weight.grad is not None and float(objective.score[0].weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="edge_mask_ratio"):
        tiny_model(ds.feature_dim, aux=[EdgeReconstruction(dim=16)]).train()(batch_of(ds, [0]))


# ---- evaluation hooks ----------------------------------------------------------------------------------
def test_node_and_graph_embeddings_and_probe():
    ds = ragged_dataset()
    model = tiny_model(4)
    batch = batch_of(ds, [0, 1, 2])
    feats, labels = node_embeddings(model, batch)
    assert feats.shape == (26, 16) and labels.tolist() == [i % 3 for n in (5, 9, 12) for i in range(n)]
    assert model.training  # restored
    mice = GraphDataset(MICE)
    gmodel = tiny_model(mice.feature_dim)
    pooled, glabels = graph_embeddings(gmodel, batch_of(mice, [0, 1, 30]))
    assert pooled.shape == (3, 16) and glabels.tolist() == [mice.records[i]["graph_label"] for i in (0, 1, 30)]
    karate = GraphDataset(KARATE)
    result = probe_nodes(tiny_model(karate.feature_dim), karate)
    assert 0.0 <= result["top1_acc"] <= 100.0


# ---- a user's own CSVs -----------------------------------------------------------------------------
def users_graph(folder, features_file=True):
    """edges.csv + nodes.csv (id, label, name, a text column, a numeric one) [+ node_features.csv]."""
    rows = [(i, i % 2, f"node-{i}", "Paris" if i % 3 else "Oslo", 0.5 * i) for i in range(8)]
    write_csv(os.path.join(folder, "nodes.csv"), "id,label,name,city,weight", rows)
    write_csv(os.path.join(folder, "edges.csv"), "src,dst", [(i, (i + 1) % 8) for i in range(8)])
    if features_file:
        write_csv(os.path.join(folder, "node_features.csv"), "id,f0,f1,f2",
                  [(i, i, -i, 1.0) for i in reversed(range(8))])  # by id, in another order


def test_name_columns_are_skipped_and_a_features_file_is_read(tmp_path):
    users_graph(str(tmp_path / "g"), features_file=False)
    with pytest.warns(UserWarning, match=r"text column\(s\) \['city'\]"):  # 'name' is known not to be one
        ds = GraphDataset(str(tmp_path / "g"))
    assert ds.feature_dim == 1 and ds.records[0]["x"][:, 0].tolist() == [0.5 * i for i in range(8)]
    users_graph(str(tmp_path / "h"))
    ds = GraphDataset(str(tmp_path / "h"))  # the features file wins over nodes.csv's numeric column
    assert ds.feature_dim == 3 and ds.records[0]["x"][3].tolist() == [3.0, -3.0, 1.0]
    assert GraphDataset(str(tmp_path / "h"), feature_columns=["f2", "f0"]).records[0]["x"][3].tolist() == [1.0, 3.0]
    assert ds.records[0]["node_label"].tolist() == [i % 2 for i in range(8)]
    by_index = GraphDataset(str(tmp_path / "g"), feature_columns=[4], id_column=0)
    assert by_index.feature_dim == 1
    with pytest.raises(GraphFormatError, match=r"nodes\.csv:2: feature column 'name' holds 'node-0'"):
        GraphDataset(str(tmp_path / "g"), feature_columns=["name"])
    with pytest.raises(GraphFormatError, match="no feature column 'colour'"):
        GraphDataset(str(tmp_path / "g"), feature_columns=["colour"])


def test_recipe_takes_its_feature_width_from_the_data(tmp_path):
    """No FEAT_DIM to match by hand: GraphAdapter.in_dim is read from the built dataset."""
    users_graph(str(tmp_path / "g"))
    losses = run_recipe(tmp_path, "users", f"GraphDataset.root='{tmp_path / 'g'}'")
    assert len(losses) == 20 and all(np.isfinite(losses))
    with pytest.raises(GraphFormatError, match="3 features, GraphDataset.feature_dim is 5"):
        run_recipe(tmp_path, "check", f"GraphDataset.root='{tmp_path / 'g'}'", "GraphDataset.feature_dim=5")


def test_planetoid_masks_and_split_folders_give_graph_splits(tmp_path):
    from torch_geometric.data import Data

    from unimask.files import NoSplitError

    n = 10
    data = Data(x=torch.randn(n, 4), edge_index=torch.tensor([[i, (i + 1) % n] for i in range(n)]).t(),
                y=torch.arange(n) % 2, train_mask=torch.arange(n) < 6, test_mask=torch.arange(n) >= 7)
    torch.save(data, tmp_path / "planetoid.pt")
    train = GraphDataset(str(tmp_path / "planetoid.pt"))
    test = GraphDataset(str(tmp_path / "planetoid.pt"), split="test")
    assert (train.records[0]["node_label"] >= 0).sum() == 6 and (test.records[0]["node_label"] >= 0).sum() == 3
    assert test.source == "test: nodes in test_mask"
    with pytest.raises(NoSplitError, match="no val split"):
        GraphDataset(str(tmp_path / "planetoid.pt"), split="val")
    for split in ("train", "test"):  # graph collections in split folders
        for g in range(2):
            write_csv(str(tmp_path / "coll" / split / f"g{g}" / "edges.csv"), "src,dst", [(0, 1), (1, 2)])
    assert len(GraphDataset(str(tmp_path / "coll"), split="test").records) == 2


def test_every_loss_term_reaches_metrics(tmp_path):
    """An aux objective's term and the reconstruction it is added to are both logged (they were
    computed and then dropped before the trainer saw them)."""
    code = run_train(["--gin", "gin/graph_mae.gin", "--gin", SMOKE, "--workdir", str(tmp_path),
                      *fast_params("MaskedModel.objectives=[@EdgeReconstruction()]", "GraphAdapter.edge_mask_ratio=0.3",
                                   f"GraphDataset.root='{KARATE}'", "train.steps=3", "FEAT_DIM=18")])
    assert code == 0
    row = read_metrics(str(tmp_path))[-1]
    assert {"loss_recon", "loss_aux_0_EdgeReconstruction", "eval_loss_aux_0_EdgeReconstruction"} <= set(row), row
    assert row["loss"] >= row["loss_recon"]

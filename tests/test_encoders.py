"""The encoder contract (encoders.py), tested for every registered encoder, and ST-GCN's structure.

The contract tests are parametrised over `cmd_model.ENCODERS` plus the ten-line example encoder below,
which this module registers: a new encoder is tested by adding its registry entry (and, when its
defaults are large, a small config to SMALL).
"""
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn as nn

import action_classification
import cmd_model
import encoders
import evaluation
import knn_eval
import pretrain_cmd
from encoders import stgcn
from storage import checkpoints


# --- the example of docs/model.md: one class and one registry line make a third encoder -----------------
@dataclass
class MeanPoolConfig:
    width: int = 32


class MeanPoolEncoder(encoders.Encoder):
    """Each frame's 150 coordinates embedded linearly, then averaged over time."""
    Config = MeanPoolConfig
    FLAGS = (encoders.EncoderFlag("width", "--meanpool-width", "embedding width"),)

    def __init__(self, num_class, config=None, mlp=False, **overrides):
        super().__init__(config, **overrides)
        self.embed = nn.Linear(150, self.config.width)
        self.feature_dim = self.config.width
        self.add_head(num_class, mlp)

    def features(self, x):
        return self.embed(x.permute(0, 2, 3, 1, 4).flatten(2)).mean(dim=1)


@pytest.fixture(autouse=True)
def example_encoder_registered(monkeypatch):
    monkeypatch.setitem(cmd_model.ENCODERS, "meanpool", MeanPoolEncoder)   # the one registry line
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# small sizes per encoder (an encoder without an entry is tested at its defaults)
SMALL = {"bigru": {"hidden_size": 8}, "stgcn": {"base_channels": 4, "hidden_size": 16},
         "meanpool": {"width": 8}}
NAMES = sorted(set(cmd_model.ENCODERS) | {"meanpool"})
NUM_CLASS = 5


def clips(n=4, t=64, persons=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, t, 25, 2, generator=g)
    if persons == 1:
        x[..., 1] = 0
    return x


def small(name, num_class=NUM_CLASS, mlp=False, seed=0):
    torch.manual_seed(seed)
    return cmd_model.build_encoder(name, num_class, mlp=mlp, **SMALL.get(name, {}))


def test_every_registered_encoder_is_covered():
    assert {"bigru", "stgcn"} <= set(NAMES) and set(cmd_model.ENCODERS) <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("t", [64, 50])
@pytest.mark.parametrize("persons", [1, 2])
def test_shapes_and_feature_dim(name, t, persons):
    enc = small(name)
    x = clips(t=t, persons=persons)
    feats = enc.features(x)
    assert feats.shape == (4, enc.feature_dim) and torch.isfinite(feats).all()
    assert enc(x).shape == (4, NUM_CLASS)
    assert isinstance(enc.fc, nn.Linear) and enc.fc.in_features == enc.feature_dim
    if persons == 2:       # the second person is seen
        enc.eval()
        one = clips(t=t, persons=1)
        assert not torch.allclose(enc.features(one), enc.features(x))


@pytest.mark.parametrize("name", NAMES)
def test_mlp_head(name):
    enc = small(name, num_class=128, mlp=True)
    d = enc.feature_dim
    assert [type(m) for m in enc.fc] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (enc.fc[0].in_features, enc.fc[0].out_features, enc.fc[2].out_features) == (d, d, 128)
    assert {"fc.0.weight", "fc.0.bias", "fc.2.weight", "fc.2.bias"} <= set(enc.state_dict())
    x = clips(n=2)
    torch.testing.assert_close(enc(x), enc.fc(enc.features(x)))


@pytest.mark.parametrize("name", NAMES)
def test_cmd_steps_lower_the_loss_on_a_fixed_batch(name):
    torch.manual_seed(0)
    model = cmd_model.CMD(encoder=name, dim=16, K=32, topk=8, mlp=True, **SMALL.get(name, {}))
    queues = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("queue")}
    x_q, x_k = clips(n=8, seed=1), clips(n=8, seed=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def loss_with_the_initial_queues():
        model.load_state_dict({**model.state_dict(), **queues})
        return model(x_q, x_k).loss

    first = loss_with_the_initial_queues()
    for _ in range(5):
        loss = loss_with_the_initial_queues()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    last = loss_with_the_initial_queues()
    assert torch.isfinite(first) and last.item() < first.item() - 1e-3 * abs(first.item())


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_alone_rebuilds_the_encoder(name, tmp_path):
    torch.manual_seed(0)
    model = cmd_model.CMD(encoder=name, dim=16, K=32, topk=8, mlp=True, **SMALL.get(name, {}))
    model(clips(n=8, seed=1), clips(n=8, seed=2)).loss.backward()     # BatchNorm statistics move
    path = str(tmp_path / "checkpoint_0000.pth.tar")
    checkpoints.atomic_save({"epoch": 1, "state_dict": model.state_dict(), **model.encoder_record()}, path)

    args = knn_eval.build_parser().parse_args(["--pretrained", path])      # no encoder flag at all
    source = evaluation.load_pretrained_source(path)
    classifier, config = evaluation.build_classifier(args, NUM_CLASS, source, torch.device("cpu"))
    assert config["encoder"] == name and config["origin"] == "checkpoint record"
    assert type(classifier.encoder_q) is type(model.encoder_q)
    x = clips(n=3, t=50, seed=3)
    model.eval(), classifier.eval()
    # the same weights and ops: equal up to alignment-dependent BLAS rounding
    torch.testing.assert_close(classifier.features(x), model.encoder_q.features(x), rtol=1e-5, atol=1e-6)


def test_example_encoder_flags_reach_every_script():
    flags = ["--encoder", "meanpool", "--meanpool-width", "12"]
    for args in (pretrain_cmd.build_parser().parse_args(flags),
                 knn_eval.build_parser().parse_args(["--pretrained", "none", *flags]),
                 action_classification.build_parser().parse_args(["--pretrained", "none", *flags])):
        assert cmd_model.encoder_overrides("meanpool", args) == {"width": 12}
        with pytest.raises(ValueError, match="--meanpool-width 12 is a flag of encoder meanpool, not of"):
            cmd_model.encoder_overrides("stgcn", args)


def test_shared_flag_resolves_per_encoder():
    args = knn_eval.build_parser().parse_args(["--pretrained", "none", "--hidden-size", "24"])
    for name in ("bigru", "stgcn"):
        overrides = cmd_model.encoder_overrides(name, args)
        assert cmd_model.make_encoder_config(name, **overrides).hidden_size == 24
    args = knn_eval.build_parser().parse_args(["--pretrained", "none"])
    # one default per encoder, held by its config
    assert cmd_model.make_encoder_config("bigru").hidden_size == 1024
    assert cmd_model.make_encoder_config("stgcn").hidden_size == 256 and args.hidden_size is None


def test_records_leave_runtime_options_out_and_reject_unknown_fields():
    record = cmd_model.encoder_record("bigru", cmd_model.make_encoder_config("bigru", gru_mode="loop"))
    assert "gru_mode" not in record["encoder_config"] and record["encoder_config"]["hidden_size"] == 1024
    assert record["encoder_config"]["bidirectional"] is False
    with pytest.raises(ValueError, match="unknown STGCNConfig field.*'depth'"):
        cmd_model.make_encoder_config("stgcn", {"depth": 3})
    with pytest.raises(ValueError, match="base_channels must be a positive integer"):
        cmd_model.make_encoder_config("stgcn", base_channels=0)


# --- ST-GCN ---------------------------------------------------------------------------------------------
# NTU RGB+D edges (child, parent), 1-based, as in ST-GCN / 2s-AGCN's ntu_rgb_d graph
NTU_INWARD_1BASED = [(1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
                     (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
                     (20, 19), (22, 23), (23, 8), (24, 25), (25, 12)]


def _column_normalised(pairs):
    a = np.zeros((25, 25))
    for i, j in pairs:          # edge i -> j: column i sends to row j
        a[j - 1, i - 1] = 1.0
    column = a.sum(axis=0, keepdims=True)
    return a / np.where(column > 0, column, 1.0)


def test_stgcn_partitions_equal_the_construction_from_the_edge_list():
    enc = stgcn.STGCNEncoder(NUM_CLASS, base_channels=4, hidden_size=8)
    a = enc.A.double().numpy()
    assert a.shape == (3, 25, 25)
    np.testing.assert_allclose(a[0], np.eye(25))
    np.testing.assert_allclose(a[1], _column_normalised(NTU_INWARD_1BASED), rtol=1e-6)
    np.testing.assert_allclose(a[2], _column_normalised([(p, c) for c, p in NTU_INWARD_1BASED]), rtol=1e-6)
    np.testing.assert_allclose(a[1:].sum(axis=1)[a[1:].sum(axis=1) > 0], 1.0, rtol=1e-6)  # columns sum to 1


def test_graph_conv_matches_the_partition_sum():
    torch.manual_seed(0)
    conv = stgcn.GraphConv(3, 4, 3)
    a = torch.rand(3, 25, 25)
    x = torch.randn(2, 3, 5, 25)
    y = conv.conv(x).view(2, 3, 4, 5, 25).double()
    expected = sum(torch.matmul(y[:, k], a[k].double()) for k in range(3))     # out[w] = sum_v x[v] A[v, w]
    torch.testing.assert_close(conv(x, a).double(), expected, rtol=1e-5, atol=1e-5)


def test_stgcn_block_widths_strides_and_residuals():
    base, last = 16, 256
    enc = stgcn.STGCNEncoder(NUM_CLASS, base_channels=base, hidden_size=last)
    expected_out = [base] * 4 + [2 * base] * 3 + [4 * base] * 2 + [last]
    expected_in = [3] + expected_out[:-1]
    expected_stride = [1, 1, 1, 1, 2, 1, 1, 2, 1, 1]
    assert len(enc.st_gcn_networks) == 10
    for k, block in enumerate(enc.st_gcn_networks):
        temporal = block.tcn[2]
        assert block.gcn.conv.in_channels == expected_in[k]
        assert block.gcn.conv.out_channels == 3 * expected_out[k]            # one slice per partition
        assert (temporal.out_channels, temporal.kernel_size, temporal.stride) == \
            (expected_out[k], (9, 1), (expected_stride[k], 1))
        if k == 0:
            assert block.residual is None
        elif expected_in[k] == expected_out[k] and expected_stride[k] == 1:
            assert isinstance(block.residual, nn.Identity)
        else:
            assert block.residual[0].stride == (expected_stride[k], 1)
    assert len(enc.edge_importance) == 10
    assert all(torch.equal(w, torch.ones(3, 25, 25)) for w in enc.edge_importance)
    assert enc.feature_dim == last
    # time lengths through the blocks for T = 64 and T = 50
    for t, lengths in ((64, [64] * 4 + [32] * 3 + [16] * 3), (50, [50] * 4 + [25] * 3 + [13] * 3)):
        seen = []
        hooks = [b.register_forward_hook(lambda m, i, o: seen.append(o.shape[2]))
                 for b in enc.st_gcn_networks]
        enc.features(torch.randn(1, 3, t, 25, 2))
        for h in hooks:
            h.remove()
        assert seen == lengths
    plain = stgcn.STGCNEncoder(NUM_CLASS, base_channels=4, edge_importance=False)
    assert plain.edge_importance is None and not any("edge_importance" in k for k in plain.state_dict())


def test_stgcn_data_bn_is_per_joint_and_coordinate_shared_by_persons():
    enc = stgcn.STGCNEncoder(NUM_CLASS, base_channels=4, hidden_size=8)
    assert enc.data_bn.num_features == 25 * 3
    x = clips(n=3, t=20, seed=5) + torch.arange(25.0)[None, None, None, :, None]
    enc.train()
    enc.features(x)
    # BatchNorm1d(V*C) over (N*M, V*C, T): channel v*C + c, mean over samples, persons and frames
    expected = x.permute(3, 1, 0, 4, 2).reshape(75, -1).mean(dim=1) * enc.data_bn.momentum
    torch.testing.assert_close(enc.data_bn.running_mean, expected, rtol=1e-5, atol=1e-6)


def test_stgcn_features_are_symmetric_in_the_persons():
    enc = small("stgcn").eval()
    x = clips(n=2, t=32)
    torch.testing.assert_close(enc.features(x), enc.features(x.flip(-1)), rtol=1e-5, atol=1e-6)


def test_a_true_bidirectional_gru_is_recorded_and_rebuilt_from_the_record():
    """'bidirectional' is a different model (not a way to compute the released one): the record keeps it."""
    trained = cmd_model.make_encoder_config("bigru", hidden_size=8, gru_mode="bidirectional")
    record = cmd_model.encoder_record("bigru", trained)["encoder_config"]
    assert record["bidirectional"] is True and "gru_mode" not in record
    rebuilt = cmd_model.make_encoder_config("bigru", record)
    assert rebuilt.gru_mode == "bidirectional"
    torch.manual_seed(0)
    a = cmd_model.build_encoder("bigru", 5, config=trained)
    b = cmd_model.build_encoder("bigru", 5, config=rebuilt)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 6, 25, 2)
    a.eval(), b.eval()
    torch.testing.assert_close(b.features(x), a.features(x), rtol=0, atol=0)
    released = cmd_model.build_encoder("bigru", 5, hidden_size=8)
    released.load_state_dict(a.state_dict())  # same weights, the released model: other features
    assert not torch.allclose(released.eval().features(x), a.features(x), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="--gru-mode custom does not compute the recorded model, a true "
                                         "bidirectional GRU"):
        cmd_model.make_encoder_config("bigru", record, gru_mode="custom")
    with pytest.raises(ValueError, match="--gru-mode bidirectional does not compute the recorded model, the "
                                         "released stepwise BiGRU"):
        cmd_model.make_encoder_config("bigru", {"hidden_size": 8, "bidirectional": False},
                                      gru_mode="bidirectional")


def test_stgcn_initialisations():
    """'contrastive': convolutions N(0, 0.02) with zero bias, BatchNorm weights N(1, 0.02); 'pytorch': the
    layers' own defaults (a convolution uniform in +-1/sqrt(fan_in), so std 1/sqrt(3 fan_in))."""
    from encoders import stgcn
    torch.manual_seed(0)
    sizes = dict(base_channels=16, hidden_size=32)
    contrastive = stgcn.STGCNEncoder(8, **sizes)
    pytorch = stgcn.STGCNEncoder(8, init="pytorch", **sizes)
    assert contrastive.config.init == "contrastive" and pytorch.config.init == "pytorch"
    # block 2's temporal convolution: 16 -> 16 channels, kernel 9
    tcn_c, tcn_p = (m.st_gcn_networks[1].tcn[2].weight.detach() for m in (contrastive, pytorch))
    bias_c = contrastive.st_gcn_networks[1].tcn[2].bias.detach()
    fan_in = 16 * 9
    assert abs(float(tcn_c.std()) - 0.02) < 0.002 and float(bias_c.abs().max()) == 0.0
    assert abs(float(tcn_p.std()) - (3 * fan_in) ** -0.5) < 0.1 * (3 * fan_in) ** -0.5
    assert float(tcn_p.abs().max()) <= fan_in ** -0.5
    assert float(pytorch.st_gcn_networks[1].tcn[0].weight.detach().std()) == 0.0     # BatchNorm weights all 1
    with pytest.raises(ValueError, match="init 'xavier'"):
        stgcn.STGCNEncoder(8, init="xavier", **sizes)
    assert cmd_model.encoder_record("stgcn", pytorch.config)["encoder_config"]["init"] == "pytorch"

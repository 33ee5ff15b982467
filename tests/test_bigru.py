"""The fast BiGRU implementations (bigru.py) against the released per-frame loop and the GRU equations."""
import copy

import pytest
import torch
import torch.nn.functional as F

import cmd_model
from cmd_model import BiGRUEncoder, StepwiseGRU
from encoders import bigru


def close(actual, expected, rel=1e-5, name=""):
    """Equal to `rel` relative to the magnitude of `expected` (float32 sums of O(H) products)."""
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual - expected).abs().max()
    assert err <= rel * scale, f"{name}: max error {err:.3g} vs magnitude {scale:.3g}"


def encoders(mode, hidden, seed=0, mlp=True):
    torch.manual_seed(seed)
    ref = BiGRUEncoder(10, hidden_size=hidden, gru_mode="loop", mlp=mlp)
    fast = BiGRUEncoder(10, hidden_size=hidden, gru_mode=mode, mlp=mlp)
    fast.load_state_dict(ref.state_dict())
    return fast, ref


@pytest.fixture(params=["batched", "split"])
def direction_grouping(request, monkeypatch):
    """Run the custom function's two directions in one product per step, or one after the other."""
    monkeypatch.setattr(bigru, "BATCHED_DIRECTIONS_MAX_HIDDEN", 10 ** 6 if request.param == "batched" else 0)
    return request.param


@pytest.mark.parametrize("mode,direction_grouping", [("stepwise", "batched"), ("custom", "batched"),
                                                     ("custom", "split"), ("fused", "batched")],
                         indirect=["direction_grouping"])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("n,t,hidden", [(4, 7, 16), (1, 9, 24), (3, 1, 8)])
def test_released_semantics_equal_loop_features_loss_and_gradients(mode, train, n, t, hidden,
                                                                   direction_grouping):
    fast, ref = encoders(mode, hidden)
    fast.train(train), ref.train(train)
    x = torch.randn(n, 3, t, 25, 2, generator=torch.Generator().manual_seed(1))
    target = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(2))
    results = []
    for enc in (fast, ref):
        xi = x.clone().requires_grad_(True)
        feats = enc.features(xi)
        loss = F.cross_entropy(enc.fc(feats), target) + feats.pow(2).mean()
        loss.backward()
        grads = {k: p.grad for k, p in enc.named_parameters()}
        results.append((feats.detach(), loss.detach(), xi.grad, grads))
    (f_a, l_a, gx_a, g_a), (f_b, l_b, gx_b, g_b) = results
    close(f_a, f_b, name="features")
    close(l_a, l_b, name="loss")
    close(gx_a, gx_b, name="input gradient")
    assert set(g_a) == set(g_b)
    for name in g_b:
        assert g_a[name] is not None, name
        close(g_a[name], g_b[name], name=name)
    if train:
        close(fast.input_norm.running_mean, ref.input_norm.running_mean, name="running mean")


def _two_forward_grus(x, gru, hidden):
    """SPEC s.2 written from the GRU equations (batch-first x), independent of the code under test."""
    def run(x, layer, suffix):
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        w = {k: getattr(gru, f"{k}_l{layer}{suffix}") for k in names}
        h = x.new_zeros(x.shape[0], hidden)
        out = []
        for t in range(x.shape[1]):
            gi = x[:, t] @ w["weight_ih"].T + w["bias_ih"]
            gh = h @ w["weight_hh"].T + w["bias_hh"]
            r = torch.sigmoid(gi[:, :hidden] + gh[:, :hidden])
            z = torch.sigmoid(gi[:, hidden:2 * hidden] + gh[:, hidden:2 * hidden])
            n = torch.tanh(gi[:, 2 * hidden:] + r * gh[:, 2 * hidden:])
            h = (1 - z) * n + z * h
            out.append(h)
        return torch.stack(out, 1)
    for layer in range(gru.num_layers):
        x = torch.cat([run(x, layer, ""), run(x, layer, "_reverse")], dim=2)
    return x


@pytest.mark.parametrize("grad", [True, False])
def test_custom_equals_gru_equations_in_float64(grad, direction_grouping):
    torch.manual_seed(3)
    m = StepwiseGRU(5, 6, 2, mode="custom").double()
    x = torch.randn(3, 8, 5, dtype=torch.float64)
    with torch.set_grad_enabled(grad):
        y = m(x)
    assert y.shape == (3, 8, 12)
    with torch.no_grad():
        torch.testing.assert_close(y, _two_forward_grus(x, m.gru, 6), rtol=1e-12, atol=1e-12)


def test_direction_groups_follow_the_hidden_size():
    small, large = bigru.BATCHED_DIRECTIONS_MAX_HIDDEN, bigru.BATCHED_DIRECTIONS_MAX_HIDDEN + 1
    assert bigru.direction_groups(small) == ((0, 1),)
    assert bigru.direction_groups(large) == ((0,), (1,))


def test_pair_gru_function_gradcheck(direction_grouping):
    torch.manual_seed(4)
    gru = torch.nn.GRU(3, 4, num_layers=1, bidirectional=True).double()
    weights = [w.detach().clone().requires_grad_(True) for w in bigru.layer_weights(gru, 0)]
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(bigru.PairGRUFunction.apply, (x, *weights))


def test_stepwise_implementation_per_device_and_state_dict_keys():
    m = StepwiseGRU(4, 3, 3)
    assert m.implementation(torch.device("cpu")) == StepwiseGRU.IMPLEMENTATION["cpu"] == "custom"
    assert m.implementation(torch.device("cuda")) == StepwiseGRU.IMPLEMENTATION["cuda"]
    assert StepwiseGRU(4, 3, 3, mode="loop").implementation(torch.device("cpu")) == "loop"
    keys = [f"gru.{w}_l{k}{s}" for k in range(3) for s in ("", "_reverse")
            for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    for mode in StepwiseGRU.MODES:
        assert sorted(StepwiseGRU(4, 3, 3, mode=mode).state_dict()) == sorted(keys)
    with pytest.raises(ValueError, match="unknown gru_mode 'fast'"):
        StepwiseGRU(4, 3, 3, mode="fast")


def test_key_encoder_without_graph_matches_and_cmd_step_equals_loop():
    """The no-grad path (key encoders) and a whole CMD loss agree with the loop."""
    torch.manual_seed(5)
    kw = dict(hidden_size=8, K=32, topk=8, mlp=True)
    ref = cmd_model.CMD(gru_mode="loop", **kw)
    fast = cmd_model.CMD(**kw)
    fast.load_state_dict(ref.state_dict())
    x_q, x_k = torch.randn(2, 4, 3, 6, 25, 2).unbind(0)
    losses = []
    for model in (fast, ref):
        out = model(x_q, x_k)
        out.loss.backward()
        losses.append(out.loss.detach())
    close(losses[0], losses[1], name="CMD loss")
    close(fast.queue, ref.queue, name="queue")
    for (name, pa), pb in zip(fast.named_parameters(), ref.parameters()):
        if pb.grad is not None:
            close(pa.grad, pb.grad, name=name)
    enc = copy.deepcopy(fast.encoder_k)
    with torch.no_grad():
        close(enc.features(x_k), ref.encoder_k.features(x_k), name="no-grad features")

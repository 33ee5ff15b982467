"""The random-encoder baseline (--pretrained none): BatchNorm statistics estimated on the training clips,
so that a random ST-GCN's eval-mode features are not nearly constant (docs/evaluation.md)."""
import types

import numpy as np
import torch

import cmd_model
import dataset
import evaluation
import knn_eval
from helpers import common_argv, one_torch_thread, write_benchmark  # noqa: F401 (autouse fixture)



def test_estimated_statistics_are_the_average_of_the_batch_statistics():
    """Against an independent computation: the input BatchNorm of ST-GCN sees the clips as (N*M, V*C, T);
    with momentum None, the running mean is the plain average of the batches' means and the running
    variance the average of their unbiased variances."""
    torch.manual_seed(0)
    model = cmd_model.CMDClassifier(3, encoder="stgcn", base_channels=2, hidden_size=8).eval()
    clips = [torch.randn(4, 3, 16, 25, 2) * 2 + 1, torch.randn(3, 3, 16, 25, 2) * 0.5 - 1]
    loader = [(x, torch.zeros(len(x), dtype=torch.long)) for x in clips]
    bn = model.encoder_q.data_bn
    momentum = bn.momentum
    assert evaluation.estimate_batchnorm_statistics(model, loader, torch.device("cpu")) == 7
    per_batch = [x.permute(0, 4, 3, 1, 2).reshape(-1, 75, 16) for x in clips]      # (N*M, V*C, T)
    means = torch.stack([b.mean(dim=(0, 2)) for b in per_batch]).mean(0)
    variances = torch.stack([b.transpose(0, 1).reshape(75, -1).var(dim=1) for b in per_batch]).mean(0)
    torch.testing.assert_close(bn.running_mean, means, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, variances, rtol=1e-4, atol=1e-5)
    assert bn.momentum == momentum and not model.training and not bn.training
    assert all(int(layer.num_batches_tracked) == 2 for layer in evaluation.batchnorm_layers(model))
    # the other streams' encoders (view 'joint' uses encoder_q only) keep their statistics
    assert int(model.encoder_q_bone.data_bn.num_batches_tracked) == 0


def test_a_random_stgcn_gives_varied_features_after_estimation():
    """Initial statistics (mean 0, variance 1) with N(0, 0.02) convolutions: features nearly constant
    across clips; after estimation their spread is of the order of their size."""
    torch.manual_seed(0)
    model = cmd_model.CMDClassifier(3, encoder="stgcn", base_channels=4, hidden_size=16).eval()
    x = torch.randn(16, 3, 32, 25, 2)
    with torch.no_grad():
        before = model.features(x)
        evaluation.estimate_batchnorm_statistics(model, [(x, torch.zeros(16))], torch.device("cpu"))
        after = model.features(x)
    relative = lambda f: float(f.std(dim=0).mean() / f.abs().mean().clamp_min(1e-30))  # noqa: E731
    assert float(before.std(dim=0).mean()) < 1e-6
    assert relative(after) > 0.05


def test_a_model_without_batchnorm_is_left_alone():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    loader = [(torch.randn(2, 3), None)]
    assert evaluation.estimate_batchnorm_statistics(model, loader, torch.device("cpu")) == 0
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_the_cli_estimates_for_random_encoders_only(tmp_path):
    data = write_benchmark(tmp_path / "bench")
    out = tmp_path / "knn_random.json"
    result = knn_eval.main(common_argv(data, "none", "--encoder", "stgcn", "--stgcn-base-channels", "2",
                                      "--hidden-size", "8", "--output", str(out)))
    assert result["batchnorm_statistics"] == "estimated on 24 training clips (random encoder)"
    # the BiGRU has an input BatchNorm too: its statistics become the training clips' as well
    source = evaluation.load_pretrained_source("none")
    args = types.SimpleNamespace(finetune_dataset="custom", view="joint", encoder=None, batch_size=8,
                                 workers=0, finetune_skeleton_representation="graph-based", hidden_size=8,
                                 gru_layers=None, gru_mode=None, stgcn_base_channels=None,
                                 stgcn_temporal_kernel=None, stgcn_edge_importance=None)
    split = dataset.load_split(data, "train", None, "ntu")
    model, config = evaluation.build_classifier(args, 3, source, torch.device("cpu"), split)
    assert config["batchnorm_statistics"].startswith("estimated on 24")
    running_mean = model.encoder_q.input_norm.running_mean.numpy()
    assert np.abs(running_mean).max() > 0.1          # the data's x offsets (labels 0..2), not zeros

"""--shuffle-bn: MoCo's shuffling BN on one device (cmd_model.encode_in_groups), against the groups
computed one by one."""
import pytest
import torch
from torch import nn

import cmd_model
from helpers import one_torch_thread  # noqa: F401  (autouse fixture)


def _bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4)).train()


def test_one_group_is_the_plain_forward():
    net, x = _bn_net(), torch.randn(10, 6)
    torch.testing.assert_close(cmd_model.encode_in_groups(net, x, 1), net(x), rtol=0, atol=0)


def test_groups_use_their_own_batch_statistics_and_the_order_is_restored():
    net, x = _bn_net(), torch.randn(12, 6) * torch.arange(1, 13)[:, None]
    order = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    out = cmd_model.encode_in_groups(net, x, 3, order)
    expected = torch.empty(12, 4)
    for group in order.tensor_split(3):             # each group alone, written back to its clips' rows
        expected[group] = net(x[group])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    # without BatchNorm the grouping changes nothing
    plain = nn.Sequential(nn.Linear(6, 4))
    torch.testing.assert_close(cmd_model.encode_in_groups(plain, x, 3, order), plain(x), rtol=1e-5, atol=1e-5)
    # and with it, batch statistics of the whole batch differ from the groups'
    assert not torch.allclose(out, net(x), atol=1e-3)


def test_a_cmd_step_with_shuffled_bn():
    torch.manual_seed(0)
    model = cmd_model.CMD(encoder="stgcn", K=16, topk=4, dim=8, shuffle_bn=2, base_channels=2, hidden_size=8)
    x_q, x_k = torch.randn(4, 3, 16, 25, 2), torch.randn(4, 3, 16, 25, 2)
    out = model(x_q, x_k)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.encoder_q.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # keys of the same clips as the queries, whatever the group order: the queue holds the batch's keys
    assert int(model.queue_ptr) == 4
    with pytest.raises(ValueError, match="shuffle_bn=0 must be at least 1"):
        cmd_model.CMD(encoder="stgcn", K=16, topk=4, dim=8, shuffle_bn=0, base_channels=2, hidden_size=8)

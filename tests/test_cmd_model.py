import math

import pytest
import torch
import torch.nn as nn

import cmd_model
from cmd_model import BiGRUEncoder, CMD, CMDClassifier
from helpers import run_two_processes
from storage import checkpoints

H, T, N = 32, 12, 4
SPEC_PAIRS_1BASED = [(1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
                     (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
                     (20, 19), (21, 21), (22, 23), (23, 8), (24, 25), (25, 12)]


def clips(n=N, t=T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, t, 25, 2, generator=g)


def encoder_pair(mode_b, hidden=H, **kw):
    torch.manual_seed(0)
    a = BiGRUEncoder(10, hidden_size=hidden, gru_mode="stepwise", **kw)
    b = BiGRUEncoder(10, hidden_size=hidden, gru_mode=mode_b, **kw)
    b.load_state_dict(a.state_dict())
    return a, b


# ------------------------------------------------------------------ 1, 2: the stepwise quirk
@pytest.mark.parametrize("train", [False, True])
def test_stepwise_equals_per_timestep_loop_features_and_gradients(train):
    fast, loop = encoder_pair("loop", mlp=True)
    fast.train(train), loop.train(train)
    x = clips()
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    fa, fb = fast.features(xa), loop.features(xb)
    assert fa.shape == (N, 2 * H)
    # Two float32 organisations of the same sums: features lie in (-1, 1) (GRU outputs), gradients reach
    # about 10 and sum over N*T = 48 steps; both differ by a few ulps (measured up to 2e-6 on a gradient
    # of 11). rtol/atol 1e-5 is ten times that; a wrong gate, direction or time order differs by > 1e-2.
    tol = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fa, fb, **tol)
    w = torch.randn(10)  # a loss that touches the head too
    (fast(xa) @ w + fa.pow(2).sum()).sum().backward()
    (loop(xb) @ w + fb.pow(2).sum()).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, **tol)
    for (name, pa), pb in zip(fast.named_parameters(), loop.parameters()):
        assert pa.grad is not None, name
        torch.testing.assert_close(pa.grad, pb.grad, **tol, msg=name)
    if train:  # batch statistics moved identically (running means of about 0.05: 1e-6 is ~100 ulps)
        torch.testing.assert_close(fast.input_norm.running_mean, loop.input_norm.running_mean,
                                   rtol=0, atol=1e-6)


def _gru_reference(seq, gru, layers, hidden):
    """The quirk written from the GRU equations: per layer two forward-in-time GRUs, outputs concatenated."""
    def run(x, suffix, layer):
        w_ih, w_hh = getattr(gru, f"weight_ih_l{layer}{suffix}"), getattr(gru, f"weight_hh_l{layer}{suffix}")
        b_ih, b_hh = getattr(gru, f"bias_ih_l{layer}{suffix}"), getattr(gru, f"bias_hh_l{layer}{suffix}")
        h = torch.zeros(x.shape[0], hidden, dtype=x.dtype)
        out = []
        for t in range(x.shape[1]):
            gi, gh = x[:, t] @ w_ih.T + b_ih, h @ w_hh.T + b_hh
            r = torch.sigmoid(gi[:, :hidden] + gh[:, :hidden])
            z = torch.sigmoid(gi[:, hidden:2 * hidden] + gh[:, hidden:2 * hidden])
            n = torch.tanh(gi[:, 2 * hidden:] + r * gh[:, 2 * hidden:])
            h = (1 - z) * n + z * h
            out.append(h)
        return torch.stack(out, dim=1)
    x = seq
    for layer in range(layers):
        x = torch.cat([run(x, "", layer), run(x, "_reverse", layer)], dim=2)
    return x


def test_stepwise_matches_gru_equations_and_input_layout():
    torch.manual_seed(1)
    enc = BiGRUEncoder(10, hidden_size=16).eval()
    x = clips(n=3, t=8)
    captured = {}
    enc.input_norm.register_forward_hook(lambda m, i, o: captured.update(inp=i[0], out=o))
    feats = enc.features(x)
    seq = captured["inp"]  # (N, 150, T): feature index v*6 + c*2 + m
    for v, c, m, t in [(0, 0, 0, 0), (3, 2, 1, 5), (24, 1, 0, 7), (20, 2, 1, 3)]:
        assert torch.equal(seq[:, v * 6 + c * 2 + m, t], x[:, c, t, v, m])
    ref = _gru_reference(captured["out"].transpose(1, 2).double(), enc.encoder.gru.double(), 3, 16)
    # float32 encoder against a float64 reference: outputs in (-1, 1), rounding of 3 layers x 8 steps
    # stays below ~1e-6; 1e-5 (about 100 float32 ulps at 1) leaves room and still catches any wrong gate
    torch.testing.assert_close(feats.double(), ref[:, -1], rtol=0, atol=1e-5)


def test_stepwise_differs_from_true_bidirectional():
    fast, bidir = encoder_pair("bidirectional")
    x = clips()
    fa, fb = fast.features(x), bidir.features(x)
    # same weights, same input: a true bidirectional pass is a different function
    assert (fa - fb).abs().max() > 1e-2
    assert (fa[:, H:] - fb[:, H:]).abs().max() > 1e-2  # the "reverse" half above all


# ------------------------------------------------------------------ encoder structure
def spec_encoder_keys(mlp):
    keys = [f"input_norm.{s}"
            for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    keys += [f"encoder.gru.{w}_l{k}{r}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
             for k in range(3) for r in ("", "_reverse")]
    keys += ["fc.0.weight", "fc.0.bias", "fc.2.weight", "fc.2.bias"] if mlp else ["fc.weight", "fc.bias"]
    return keys


@pytest.mark.parametrize("mlp", [False, True])
def test_encoder_key_names_and_initialisation(mlp):
    torch.manual_seed(0)
    enc = BiGRUEncoder(128, hidden_size=H, mlp=mlp)
    assert sorted(enc.state_dict()) == sorted(spec_encoder_keys(mlp))
    assert enc.feature_dim == 2 * H
    gru = enc.encoder.gru

    def xavier_bound(w):
        return math.sqrt(6.0 / (w.shape[0] + w.shape[1]))
    for name, p in list(gru.named_parameters()) + [("fc", (enc.fc[2] if mlp else enc.fc).weight)]:
        if p.dim() == 2:  # xavier_uniform_: inside the bound and filling it
            b = xavier_bound(p)
            assert p.abs().max() <= b and p.abs().max() > 0.95 * b, name
        else:  # GRU biases keep PyTorch's U(-1/sqrt(H), 1/sqrt(H))
            assert p.abs().max() <= 1 / math.sqrt(H), name
    if mlp:  # the MLP's first Linear keeps the default init, bound 1/sqrt(fan_in) < its xavier bound
        w0 = enc.fc[0].weight
        assert w0.shape == (2 * H, 2 * H) and w0.abs().max() <= 1 / math.sqrt(2 * H)
        assert isinstance(enc.fc[1], nn.ReLU)
    assert torch.equal(enc.input_norm.weight, torch.ones(150))


def test_build_encoder_and_bad_inputs():
    enc = cmd_model.build_encoder("bigru", num_class=5, hidden_size=8)
    assert isinstance(enc, BiGRUEncoder) and enc.fc.out_features == 5
    with pytest.raises(ValueError, match=r"unknown encoder 'lstm'; valid names: \['bigru', 'stgcn'\]"):
        cmd_model.build_encoder("lstm", num_class=5)
    with pytest.raises(ValueError, match="unknown gru_mode 'fast'"):
        BiGRUEncoder(5, hidden_size=8, gru_mode="fast")
    with pytest.raises(ValueError,
                       match=r"expected a clip batch \(N, 3, T, 25, 2\), got shape \(2, 3, 8, 25\)"):
        enc(torch.zeros(2, 3, 8, 25))


# ------------------------------------------------------------------ 3: modalities
def test_motion_and_bone_against_loops():
    x = clips(n=2, t=6)
    motion = cmd_model.joint_to_motion(x)
    bone = cmd_model.joint_to_bone(x)
    ref_m = torch.zeros_like(x)
    for t in range(x.shape[2] - 1):
        ref_m[:, :, t] = x[:, :, t + 1] - x[:, :, t]
    ref_b = torch.zeros_like(x)
    for a, b in SPEC_PAIRS_1BASED:
        ref_b[:, :, :, a - 1] = x[:, :, :, a - 1] - x[:, :, :, b - 1]
    assert torch.equal(motion, ref_m) and torch.equal(bone, ref_b)
    assert torch.equal(motion[:, :, -1], torch.zeros_like(motion[:, :, -1]))
    assert torch.count_nonzero(bone[:, :, :, 20]) == 0  # joint 21 pairs with itself
    assert torch.equal(cmd_model.to_modality(x, "joint"), x)
    assert torch.equal(cmd_model.to_modality(x, "bone"), ref_b)
    with pytest.raises(ValueError, match="unknown modality 'velocity'"):
        cmd_model.to_modality(x, "velocity")


# ------------------------------------------------------------------ 4, 5: the CMD step
def small_cmd(K=64, topk=16, **kw):
    torch.manual_seed(0)
    return CMD(hidden_size=16, dim=8, K=K, topk=topk, mlp=True, **kw)


def record_encoder_outputs(model):
    outs = {}
    for name in ("encoder_q", "encoder_k", "encoder_q_motion", "encoder_k_motion", "encoder_q_bone",
                 "encoder_k_bone"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: outs.__setitem__(name, o))
    return outs


def reference_kl(student_sims, teacher_sims, topk, t_t, t_s):
    """KL(p_teacher || p_student) over the teacher's top-k, mean over the batch, in float64."""
    total = 0.0
    s, t = student_sims.double(), teacher_sims.double()
    for i in range(t.shape[0]):
        idx = torch.argsort(t[i], descending=True)[:topk]
        p = torch.softmax(t[i, idx] / t_t, dim=0)
        log_q = torch.log_softmax(s[i, idx] / t_s, dim=0)
        total += float((p * (p.log() - log_q)).sum())
    return total / t.shape[0]


# Tolerances of the CMD step. The reference recomputes the similarities in float32 (another matmul
# order: ~1e-7 each on values in [-1, 1]) and divides them by temperatures down to 0.05, so its logits
# differ from the model's by up to ~4e-6 on values up to 20; softmax, log-softmax and the KL/CE sums
# (values 2-40) carry that through. rtol=1e-5 with atol=1e-5 is a few times this float32 budget and far
# below what a wrong top-k set, temperature or direction of the KL changes (> 1e-2). An absolute 1e-6
# on a KL of ~6 was at the edge: it failed at 1.04e-6 on another CPU.
STEP_TOL = dict(rtol=1e-5, atol=1e-5)


def test_cmd_step_against_independent_computation():
    model = small_cmd(cmd_weight=0.5, T=0.2, teacher_T=0.05, student_T=0.1)
    outs = record_encoder_outputs(model)
    queues = {m: getattr(model, CMD.QUEUE[m]).clone() for m in cmd_model.MODALITIES}
    x_q, x_k = clips(n=8, t=8, seed=1), clips(n=8, t=8, seed=2)
    out = model(x_q, x_k)

    q = {m: nn.functional.normalize(outs[CMD.QUERY[m]], dim=1).detach() for m in cmd_model.MODALITIES}
    k = {m: nn.functional.normalize(outs[CMD.KEY[m]], dim=1) for m in cmd_model.MODALITIES}
    sims_q = {m: q[m] @ queues[m] for m in q}
    sims_k = {m: k[m] @ queues[m] for m in k}
    total = 0.0
    for a in cmd_model.MODALITIES:
        expected_logits = torch.cat([(q[a] * k[a]).sum(1, keepdim=True), sims_q[a]], dim=1) / 0.2
        torch.testing.assert_close(out.logits[a], expected_logits, **STEP_TOL)
        for b in cmd_model.MODALITIES:
            if a != b:
                ref = reference_kl(sims_q[b], sims_k[a], 16, 0.05, 0.1)
                torch.testing.assert_close(out.distill_terms[f"{a}->{b}"].item(), ref, **STEP_TOL,
                                           msg=f"{a}->{b}")
                total += ref
    assert len(out.distill_terms) == 6
    torch.testing.assert_close(out.loss_cmd.item(), 0.5 * total, **STEP_TOL)
    assert torch.equal(out.targets, torch.zeros(8, dtype=torch.long))
    ce = {m: -torch.log_softmax(out.logits[m].detach().double(), 1)[:, 0].mean().item()
          for m in cmd_model.MODALITIES}
    for m, v in out.contrastive_losses().items():
        torch.testing.assert_close(v.item(), ce[m], **STEP_TOL)
    torch.testing.assert_close(out.loss.item(), sum(ce.values()) + 0.5 * total, **STEP_TOL)

    out.loss.backward()  # gradients reach the query encoders only
    for m in cmd_model.MODALITIES:
        assert all(p.grad is not None for p in model.query_encoder(m).parameters())
        assert all(p.grad is None and not p.requires_grad for p in model.key_encoder(m).parameters())


def test_cmd_distillation_teacher_side_gets_no_gradient():
    torch.manual_seed(0)
    unit = nn.functional.normalize
    queues = {m: unit(torch.randn(16, 64), dim=0) for m in cmd_model.MODALITIES}
    k = {m: unit(torch.randn(4, 16), dim=1).requires_grad_(True) for m in cmd_model.MODALITIES}
    q = {m: unit(torch.randn(4, 16), dim=1).requires_grad_(True) for m in cmd_model.MODALITIES}
    teacher = {m: k[m] @ queues[m] for m in k}
    student = {m: q[m] @ queues[m] for m in q}
    terms = cmd_model.cmd_distillation(teacher, student, topk=8, teacher_T=0.05, student_T=0.1)
    assert sorted(terms) == sorted(f"{a}->{b}" for a in cmd_model.MODALITIES for b in cmd_model.MODALITIES
                                   if a != b)
    for name, term in terms.items():
        a, b = name.split("->")
        ref = reference_kl(student[b].detach(), teacher[a].detach(), 8, 0.05, 0.1)
        torch.testing.assert_close(term.item(), ref, **STEP_TOL, msg=name)
    sum(terms.values()).backward()
    assert all(k[m].grad is None for m in k)
    assert all(q[m].grad is not None and q[m].grad.abs().sum() > 0 for m in q)


def test_enqueue_after_step_aligned_and_wraps():
    model = small_cmd(K=64)
    outs = record_encoder_outputs(model)
    for name in CMD.POINTER.values():
        getattr(model, name)[0] = 56  # last slots: the step must wrap the pointer to 0
    before = {m: getattr(model, CMD.QUEUE[m]).clone() for m in cmd_model.MODALITIES}
    model(clips(n=8, t=8, seed=1), clips(n=8, t=8, seed=2))
    for m in cmd_model.MODALITIES:
        key = nn.functional.normalize(outs[CMD.KEY[m]], dim=1)
        queue = getattr(model, CMD.QUEUE[m])
        torch.testing.assert_close(queue[:, 56:64], key.T, rtol=0, atol=0)
        assert torch.equal(queue[:, :56], before[m][:, :56])
        assert int(getattr(model, CMD.POINTER[m])) == 0


def test_cmd_rejects_bad_batch_and_topk():
    model = small_cmd(K=64)
    with pytest.raises(ValueError, match=r"K=64 is not a multiple of the global batch size 6"):
        model(clips(n=6, t=8), clips(n=6, t=8, seed=3))
    with pytest.raises(ValueError, match=r"topk=128 must be between 1 and the queue size K=64"):
        CMD(hidden_size=8, dim=8, K=64, topk=128)


# ------------------------------------------------------------------ 6: checkpoints
def released_state_dict(hidden, dim, K, mlp=True, seed=0):
    """A state_dict built from SPEC sections 2-3 alone, as saved from DDP (`module.` prefix)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"input_norm.weight": (150,), "input_norm.bias": (150,), "input_norm.running_mean": (150,),
              "input_norm.running_var": (150,)}
    for k in range(3):
        inp = 150 if k == 0 else 2 * hidden
        for r in ("", "_reverse"):
            shapes[f"encoder.gru.weight_ih_l{k}{r}"] = (3 * hidden, inp)
            shapes[f"encoder.gru.weight_hh_l{k}{r}"] = (3 * hidden, hidden)
            shapes[f"encoder.gru.bias_ih_l{k}{r}"] = (3 * hidden,)
            shapes[f"encoder.gru.bias_hh_l{k}{r}"] = (3 * hidden,)
    if mlp:
        shapes.update({"fc.0.weight": (2 * hidden, 2 * hidden), "fc.0.bias": (2 * hidden,),
                       "fc.2.weight": (dim, 2 * hidden), "fc.2.bias": (dim,)})
    sd = {}
    for enc in ("encoder_q", "encoder_k", "encoder_q_motion", "encoder_k_motion", "encoder_q_bone",
                "encoder_k_bone"):
        for key, shape in shapes.items():
            sd[f"module.{enc}.{key}"] = torch.randn(shape, generator=g)
        sd[f"module.{enc}.input_norm.num_batches_tracked"] = torch.tensor(7)
    for suffix in ("", "_motion", "_bone"):
        sd[f"module.queue{suffix}"] = torch.randn(dim, K, generator=g)
        sd[f"module.queue_ptr{suffix}"] = torch.tensor([16])
    return sd


def test_released_keys_load_strict_into_cmd_and_query_encoders_into_classifier(tmp_path):
    sd = released_state_dict(hidden=16, dim=8, K=64)
    path = tmp_path / "checkpoint_0450.pth.tar"
    torch.save({"epoch": 451, "state_dict": sd, "optimizer": {}}, path)
    loaded = checkpoints.extract_state_dict(checkpoints.load_checkpoint(str(path)))

    model = CMD(hidden_size=16, dim=8, K=64, topk=16, mlp=True)
    checkpoints.load_pretraining_weights(model, loaded)
    own = model.state_dict()
    assert set(own) == {k[len("module."):] for k in sd}
    for key, value in sd.items():
        assert torch.equal(own[key[len("module."):]], value), key

    clf = CMDClassifier(num_class=7, hidden_size=16, view="all")
    fc_before = {k: v.clone() for k, v in clf.state_dict().items() if ".fc." in k}
    clf.load_pretrained(loaded)
    for key, value in clf.state_dict().items():
        if ".fc." in key:
            assert torch.equal(value, fc_before[key]), key  # heads stay new
        else:
            assert key.split(".")[0] in ("encoder_q", "encoder_q_motion", "encoder_q_bone")
            assert torch.equal(value, sd[f"module.{key}"]), key  # query encoder, not key encoder

    broken = dict(loaded)
    del broken["encoder_q.encoder.gru.weight_hh_l1"]
    with pytest.raises(KeyError, match=r"missing keys \(1\): encoder_q.encoder.gru.weight_hh_l1"):
        CMDClassifier(num_class=7, hidden_size=16).load_pretrained(broken)
    with pytest.raises(KeyError, match="encoder_q.encoder.gru.weight_hh_l1"):
        checkpoints.load_pretraining_weights(CMD(hidden_size=16, dim=8, K=64, topk=16, mlp=True), broken)
    extra = dict(loaded, **{"encoder_q_bone.extra_layer.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match=r"unexpected keys \(1\): encoder_q_bone.extra_layer.weight"):
        CMDClassifier(num_class=7, hidden_size=16).load_pretrained(extra)


def test_our_cmd_state_dict_has_exactly_the_released_keys():
    model = small_cmd()
    expected = {f"{enc}.{k}" for enc in ("encoder_q", "encoder_k", "encoder_q_motion", "encoder_k_motion",
                                         "encoder_q_bone", "encoder_k_bone") for k in spec_encoder_keys(True)}
    expected |= {"queue", "queue_motion", "queue_bone", "queue_ptr", "queue_ptr_motion", "queue_ptr_bone"}
    assert set(model.state_dict()) == expected
    for m in cmd_model.MODALITIES:  # key encoders start as exact copies
        for pk, pq in zip(model.key_encoder(m).parameters(), model.query_encoder(m).parameters()):
            assert torch.equal(pk, pq)


# ------------------------------------------------------------------ classifier views
def test_classifier_views_features_and_heads():
    torch.manual_seed(0)
    clf = CMDClassifier(num_class=5, hidden_size=8, view="all").eval()
    x = clips(n=3, t=8)
    per_view = [clf.encoder_q(x), clf.encoder_q_motion(cmd_model.joint_to_motion(x)),
                clf.encoder_q_bone(cmd_model.joint_to_bone(x))]
    torch.testing.assert_close(clf(x), torch.stack(per_view).mean(0))
    assert clf.features(x).shape == (3, 6 * 8)
    assert clf.heads() == [clf.encoder_q.fc, clf.encoder_q_motion.fc, clf.encoder_q_bone.fc]
    clf.view = "motion"
    torch.testing.assert_close(clf(x), per_view[1])
    torch.testing.assert_close(clf.features(x), clf.encoder_q_motion.features(cmd_model.joint_to_motion(x)))
    assert clf.view_encoders() == [clf.encoder_q_motion]
    with pytest.raises(ValueError, match="unknown view 'depth'"):
        CMDClassifier(num_class=5, hidden_size=8, view="depth")


# ------------------------------------------------------------------ 8 (model level): CMD under DDP, gloo
def _ddp_worker(rank, world, init_file, out_dir):
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    torch.set_num_threads(1)  # two processes share the cores
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = small_cmd(K=64)  # same seed on both ranks
        outs = record_encoder_outputs(model)
        ddp = DDP(model)
        out = ddp(clips(n=4, t=8, seed=10 + rank), clips(n=4, t=8, seed=20 + rank))
        out.loss.backward()
        keys = {m: nn.functional.normalize(outs[CMD.KEY[m]], dim=1) for m in cmd_model.MODALITIES}
        torch.save({"state": {k: v for k, v in model.state_dict().items() if "queue" in k}, "keys": keys},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_cmd_under_ddp_gathers_keys_from_both_ranks(tmp_path):
    r0, r1 = run_two_processes(_ddp_worker, tmp_path, timeout_s=180)
    for name, value in r0["state"].items():
        assert torch.equal(value, r1["state"][name]), name
    for m in cmd_model.MODALITIES:
        queue = r0["state"][CMD.QUEUE[m]]
        torch.testing.assert_close(queue[:, 0:4], r0["keys"][m].T, rtol=0, atol=0)
        torch.testing.assert_close(queue[:, 4:8], r1["keys"][m].T, rtol=0, atol=0)
        assert not torch.equal(r0["keys"][m], r1["keys"][m])
        assert int(r0["state"][CMD.POINTER[m]]) == 8

"""Fast exact implementations of the released BiGRU layer (SPEC.md section 2).

One layer of the released encoder is two independent forward-in-time GRUs over the same input, one
with the `_l{k}` weights and one with the `_l{k}_reverse` weights, outputs concatenated (2H). Two
implementations live here; `cmd_model.StepwiseGRU` picks one per device.

`PairGRUFunction` (custom autograd, fastest on CPU): the input projections of all time steps are one
matrix product per direction; per step only the hidden-to-hidden product runs; the gates are kept
from the forward pass; the backward pass runs the recurrence once in reverse for the hidden-state
gradient and then forms every weight gradient and the input gradient as a few large products over
all time steps. PyTorch's GRU equations exactly:

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h          (computed as lerp(n, h, z) = n + z * (h - n))

Inside the recurrence the states are feature-major, `(directions, H, N)`, so the per-step product is
`W_hh (3H, H) @ h (H, N)`, the form in which MKL ran one direction's product fastest in isolation
(1.25 ms against 2.91 ms for `h (N, H) @ W_hh^T`; H=1024, N=16, 2 threads, the 2-core development
CPU; inside a whole encoder pass the difference mostly disappears). The two directions share one
batched product per step up to `BATCHED_DIRECTIONS_MAX_HIDDEN` and run one after the other above it.
The input projections are written straight into per-direction blocks and the weight gradients come
out per direction, so no weight is concatenated or copied per call (but the transposed W_hh for the
backward pass).

`cudnn_pair_gru` (CUDA): cuDNN's fused GRU, one call per direction, with the weights of each
layer-direction laid out once in a flat buffer of its own (`relayout_for_cudnn`), so that cuDNN uses
them in place (no per-call weight copy, no "not part of single contiguous chunk" warning).

Layer inputs and outputs are time-major, `(T, N, features)`, so a layer's output feeds the next
layer without a transpose.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn

aten = torch.ops.aten

# Directions batched in one product per step up to this hidden size, one after the other above it.
# Measured with `python benchmark.py gru` on the 2-core development CPU (2 threads, quiet), one encoder's
# forward+backward+no-grad forward, batched / one after the other: H=256 0.36 / 0.46 s, H=512 1.05 /
# 1.08 s, H=1024 4.01 / 3.94 s. (Running the two directions at once in two threads, one intra-op thread
# each, was slower or equal at every size: 0.50, 1.11, 4.01 s.)
BATCHED_DIRECTIONS_MAX_HIDDEN = 512


def direction_groups(hidden_size: int) -> tuple:
    """How the two directions run: together ((0, 1),) or one after the other ((0,), (1,))."""
    return ((0, 1),) if hidden_size <= BATCHED_DIRECTIONS_MAX_HIDDEN else ((0,), (1,))


def _stacked(tensors: list, group: tuple) -> torch.Tensor:
    """(len(group), ...) from the tensors of the directions in `group` (a view for one direction)."""
    if len(group) == 1:
        return tensors[group[0]].unsqueeze(0)
    return torch.stack([tensors[d] for d in group])


def _input_projections(x, w_ih, b_ih, b_hh):
    """W_ih x + b_ih for every step, with b_hh's r and z parts added (b_hn stays inside r * (...)),
    feature-major per step: (T, 2, 3H, N)."""
    t_len, n, i_size = x.shape
    g3 = w_ih[0].shape[0]
    h2 = 2 * g3 // 3
    x_t = x.reshape(t_len * n, i_size).t()
    gi = x.new_empty(2, g3, t_len, n)
    for d in range(2):
        bias = torch.cat((b_ih[d][:h2] + b_hh[d][:h2], b_ih[d][h2:]))
        torch.addmm(bias.unsqueeze(1), w_ih[d], x_t, out=gi[d].view(g3, t_len * n))
    return gi.permute(2, 0, 1, 3).contiguous()


def _pair_forward(x, weights, keep: bool):
    """x (T, N, I) contiguous -> outputs (T, N, 2H); with `keep`, also what the backward pass needs.

    `weights`: w_ih, w_hh, b_ih, b_hh of the forward-weights direction, then of the reverse-weights one."""
    w_ih, w_hh, b_ih, b_hh = weights[0::4], weights[1::4], weights[2::4], weights[3::4]
    t_len, n, _ = x.shape
    h_size = w_hh[0].shape[1]
    h2 = 2 * h_size
    gi = _input_projections(x, w_ih, b_ih, b_hh)
    hh_bias = [torch.cat((b.new_zeros(h2), b[h2:])).unsqueeze(1) for b in b_hh]     # (3H, 1): 0, 0, b_hn
    hs = x.new_empty(t_len + 1, 2, h_size, n)                         # hidden states, hs[0] = 0
    hs[0].zero_()
    if keep:
        gates = x.new_empty(t_len, 2, 3 * h_size, n)                  # r, z, W_hn h + b_hn
        news = x.new_empty(t_len, 2, h_size, n)                       # n
    for group in direction_groups(h_size):
        ds = slice(group[0], group[-1] + 1)
        w, bias = _stacked(w_hh, group), _stacked(hh_bias, group)
        if not keep:
            g_t = x.new_empty(len(group), 3 * h_size, n)
            n_t = x.new_empty(len(group), h_size, n)
        for t in range(t_len):
            h = hs[t, ds]
            if keep:
                g_t, n_t = gates[t, ds], news[t, ds]
            torch.baddbmm(bias, w, h, out=g_t)
            gi_t = gi[t, ds]
            rz = g_t[:, :h2]
            rz.add_(gi_t[:, :h2]).sigmoid_()
            torch.addcmul(gi_t[:, h2:], rz[:, :h_size], g_t[:, h2:], out=n_t)
            n_t.tanh_()
            torch.lerp(n_t, h, rz[:, h_size:], out=hs[t + 1, ds])
    out = hs[1:].permute(0, 3, 1, 2).reshape(t_len, n, h2)
    return out, ((hs, gates, news) if keep else None)


def _pair_backward(grad_out, x, weights, saved):
    """Gradients of x and of the 8 weights (same order as `weights`)."""
    hs, gates, news = saved
    w_ih, w_hh = weights[0::4], weights[1::4]
    t_len, n, i_size = x.shape
    h_size = w_hh[0].shape[1]
    h2, g3 = 2 * h_size, 3 * h_size
    dy = grad_out.view(t_len, n, 2, h_size).permute(0, 2, 3, 1).contiguous()  # (T, 2, H, N)
    dgh = x.new_empty(t_len, 2, g3, n)                               # grads of W_h h + b_h per step
    da_n = x.new_empty(t_len, 2, h_size, n)                          # grad of n's pre-activation
    for group in direction_groups(h_size):
        ds = slice(group[0], group[-1] + 1)
        w_t = _stacked([w.t() for w in w_hh], group).contiguous()    # (D, H, 3H)
        dh = dy[t_len - 1, ds].clone()
        for t in range(t_len - 1, -1, -1):
            if t < t_len - 1:
                dh.add_(dy[t, ds])
            g_t = gates[t, ds]
            r, z, gh_n = g_t[:, :h_size], g_t[:, h_size:h2], g_t[:, h2:]
            n_t, h_prev, dg, da = news[t, ds], hs[t, ds], dgh[t, ds], da_n[t, ds]
            aten.sigmoid_backward.grad_input(dh * (h_prev - n_t), z, grad_input=dg[:, h_size:h2])
            dh_z = dh * z
            aten.tanh_backward.grad_input(dh - dh_z, n_t, grad_input=da)
            aten.sigmoid_backward.grad_input(da * gh_n, r, grad_input=dg[:, :h_size])
            torch.mul(da, r, out=dg[:, h2:])
            dh = torch.baddbmm(dh_z, w_t, dg)
    # weight gradients as products over all steps, direction-major (2, features, T*N)
    tn = t_len * n
    dg_all = dgh.permute(1, 2, 0, 3).reshape(2, g3, tn)
    h_all = hs[:-1].permute(1, 2, 0, 3).reshape(2, h_size, tn)
    d_w_hh = torch.bmm(dg_all, h_all.transpose(1, 2))               # (2, 3H, H)
    d_b_hh = dg_all.sum(2)
    dg_all[:, h2:] = da_n.permute(1, 2, 0, 3).reshape(2, h_size, tn)  # now the grads of gi: dr, dz, da_n
    x2 = x.reshape(tn, i_size)
    grads = []
    d_x = None
    for d in range(2):
        dgi = dg_all[d]
        grads += [dgi.mm(x2), d_w_hh[d], dgi.sum(1), d_b_hh[d]]
        d_x = dgi.t().mm(w_ih[d]) if d_x is None else d_x.addmm_(dgi.t(), w_ih[d])
    return (d_x.view(t_len, n, i_size), *grads)


class PairGRUFunction(torch.autograd.Function):
    """One released BiGRU layer: x (T, N, I) -> (T, N, 2H), [forward-weights GRU, reverse-weights GRU].

    Arguments after x: w_ih, w_hh, b_ih, b_hh of the `_l{k}` direction, then of `_l{k}_reverse`.
    """

    @staticmethod
    def forward(ctx, x, *weights):
        x = x.contiguous()
        out, saved = _pair_forward(x, weights, keep=True)
        ctx.save_for_backward(x, *weights, *saved)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, *rest = ctx.saved_tensors
        weights, saved = rest[:8], rest[8:]
        with torch.autocast(x.device.type, enabled=False):
            return _pair_backward(grad_out.float().contiguous(), x, weights, saved)


def layer_weights(gru: nn.GRU, layer: int) -> list:
    """The 8 tensors of one layer: w_ih, w_hh, b_ih, b_hh of `_l{layer}`, then of `_l{layer}_reverse`."""
    return [getattr(gru, f"{name}_l{layer}{suffix}") for suffix in ("", "_reverse")
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def custom_pair_gru(gru: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """All layers of `gru` with the released semantics, x (T, N, I) time-major -> (T, N, 2H).

    Runs in float32 also under autocast (the recurrence accumulates over all time steps)."""
    if torch.is_autocast_enabled(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            return custom_pair_gru(gru, x.float())
    for layer in range(gru.num_layers):
        weights = layer_weights(gru, layer)
        if torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w in weights)):
            x = PairGRUFunction.apply(x, *weights)
        else:  # no graph: skip keeping the gates
            x = _pair_forward(x.contiguous(), weights, keep=False)[0]
    return x


# ----------------------------------------------------------------------------------------------- cuDNN
_CUDNN_GRU_MODE = 3  # torch.backends.cudnn.rnn.get_cudnn_mode('GRU')
_WEIGHT_COPY_WARNING = "not part of single contiguous chunk"


def in_one_flat_buffer(gru: nn.GRU) -> bool:
    """True when all parameters of `gru` share one storage (nn.GRU's own cuDNN layout)."""
    pointers = {w.untyped_storage().data_ptr() for w in gru._flat_weights}
    return len(pointers) == 1


def _pointers(gru: nn.GRU) -> tuple:
    return tuple(w.data_ptr() for w in gru._flat_weights)


@torch.no_grad()
def relayout_for_cudnn(gru: nn.GRU) -> None:
    """Give every layer-direction of `gru` its own flat cuDNN weight buffer (parameters become views of
    it; the Parameter objects and their names stay). Done once; again only when the parameters moved
    (`.to()` / `_apply` re-flattens the whole nn.GRU into one buffer, and 'loop' mode asks for that)."""
    if getattr(gru, "_pair_layout", None) == _pointers(gru):
        return
    first = gru._flat_weights[0]
    if not (first.is_cuda and torch._use_cudnn_rnn_flatten_weight()
            and torch.backends.cudnn.is_acceptable(first)):
        return
    with torch.cuda.device_of(first):
        for layer in range(gru.num_layers):
            weights = layer_weights(gru, layer)
            for d in range(2):
                w = weights[4 * d:4 * d + 4]
                # sets each tensor in `w` to a view of a new buffer of its own
                # (ATen's copy_weights_to_flat_buf_views)
                torch._cudnn_rnn_flatten_weight(w, 4, w[0].shape[1], _CUDNN_GRU_MODE, gru.hidden_size, 0, 1,
                                                True, False)
    gru._pair_layout = _pointers(gru)


def cudnn_pair_gru(gru: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """All layers with the released semantics through cuDNN, batch-first x (N, T, I) -> (N, T, 2H)."""
    relayout_for_cudnn(gru)
    h0 = x.new_zeros(1, x.shape[0], gru.hidden_size)
    autocast = torch.is_autocast_enabled(x.device.type)
    for layer in range(gru.num_layers):
        weights = layer_weights(gru, layer)
        outputs = []
        for d in range(2):
            w = weights[4 * d:4 * d + 4]
            if autocast:  # autocast casts each weight on its own, so cuDNN copies them: expected here
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*" + _WEIGHT_COPY_WARNING)
                    out, _ = torch._VF.gru(x, h0, w, True, 1, 0.0, gru.training, False, True)
            else:
                # args: input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first
                out, _ = torch._VF.gru(x, h0, w, True, 1, 0.0, gru.training, False, True)
            outputs.append(out)
        x = torch.cat(outputs, dim=2)
    return x


# ------------------------------------------------------------------------------------------ self-check
# Device types on which a run checks its BiGRU implementation at start-up (`check_model`): the CUDA path
# (cuDNN per direction, weights re-laid through private torch calls, autocast around them) is trusted only
# after it agreed with the reference there; the CPU path is covered by the test suite (tests add "cpu").
SELF_CHECK_DEVICES = ("cuda",)
# The largest error allowed, relative to the largest magnitude of each compared tensor (output, input
# gradient, every weight gradient): float32 without TF32 1e-4 (measured agreement is ~1e-6), float32 where
# cuDNN may use TF32 1e-2, under autocast 1e-2 (float16) and 5e-2 (bfloat16). A wrong weight layout,
# direction or gradient gives errors of order 1.
SELF_CHECK_TOLERANCE = {"float32": 1e-4, "tf32": 1e-2, "float16": 1e-2, "bfloat16": 5e-2}
FALLBACK = "loop"                  # the plain implementation a run falls back to: the released loop


def _compare(fast, ref, tolerance: float) -> tuple[float, str, float]:
    """(largest relative error, the tensor's name, its tolerance) over the named pairs."""
    worst = (0.0, "", tolerance)
    for (name, a), (_, b) in zip(fast, ref):
        if a is None or b is None:
            raise RuntimeError(f"no {name}")
        if a.shape != b.shape:
            raise RuntimeError(f"{name} has shape {tuple(a.shape)}, expected {tuple(b.shape)}")
        err = float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))
        if not err <= worst[0]:                 # NaN counts as the worst
            worst = (err, name, tolerance)
    return worst


def _pass(module: nn.Module, x: torch.Tensor, weight: torch.Tensor, autocast_dtype=None) -> list:
    """[(name, tensor)]: the outputs, the input gradient and every weight gradient of one pass."""
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    with torch.autocast(x.device.type, dtype=autocast_dtype or torch.float32,
                        enabled=autocast_dtype is not None):
        out = module(x)
        loss = (out.float() * weight).sum()
    loss.backward()
    return ([("output", out.detach()), ("input gradient", x.grad)]
            + [(f"gradient of {n}", p.grad) for n, p in module.gru.named_parameters()])


def self_check(gru_module: nn.Module, device, amp_dtype=None, batch: int = 4, frames: int = 8,
               implementation: str | None = None) -> dict:
    """Run the implementation that `gru_module` (a cmd_model.StepwiseGRU) uses on `device` on a small
    random batch (forward, input and weight gradients; again under autocast to `amp_dtype` when given)
    against the plain reference semantics ('loop') on the same device, with copies of its weights.

    Returns the record: implementation, device, autocast, passed, largest relative error, reason (None
    when passed) and seconds. Any error of the implementation is a failure, with its message as reason."""
    import copy  # noqa: PLC0415
    import time  # noqa: PLC0415
    device = torch.device(device)
    started = time.perf_counter()
    fast = copy.deepcopy(gru_module).to(device)
    fast.fallback = None
    how = implementation or fast.implementation(device)
    fast.mode = how
    ref = copy.deepcopy(fast)
    ref.mode = FALLBACK
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, frames, fast.gru.input_size, generator=g).to(device)
    weight = torch.randn(batch, frames, 2 * fast.hidden_size, generator=g).to(device)
    record = {"implementation": how, "device": str(device),
              "autocast": None if amp_dtype is None else str(amp_dtype).replace("torch.", ""),
              "passed": True, "largest_error": 0.0, "reason": None}
    tf32 = device.type == "cuda" and torch.backends.cudnn.allow_tf32
    try:
        expected = _pass(ref, x, weight)
        checks = [(None, SELF_CHECK_TOLERANCE["tf32" if tf32 else "float32"])]
        if amp_dtype is not None:
            checks.append((amp_dtype, SELF_CHECK_TOLERANCE[record["autocast"]]))
        for dtype, tolerance in checks:
            err, name, limit = _compare(_pass(fast, x, weight, dtype), expected, tolerance)
            record["largest_error"] = max(record["largest_error"], err) if err == err else err
            if not err <= limit:
                where = "" if dtype is None else f" under {record['autocast']} autocast"
                record.update(passed=False, reason=f"differs from the reference{where}: {name} off by "
                                                   f"{err:.3g} of its magnitude (limit {limit:g})")
                break
    except Exception as exc:  # noqa: BLE001  (any error of the implementation: the run must not use it)
        record.update(passed=False, reason=f"raised {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def check_model(model: nn.Module, device, amp_dtype=None, log=print, force: bool = False) -> dict | None:
    """The start-up self-check of a run on `device` (SELF_CHECK_DEVICES, or `force`): the BiGRU
    implementation of `model`'s StepwiseGRU modules is checked once (`self_check`); when it fails, every
    one of them switches to the plain FALLBACK for this run. One line says which and why; the returned
    record (None: nothing to check) goes into the run's config or results."""
    device = torch.device(device)
    modules = [m for m in model.modules() if hasattr(m, "implementation") and hasattr(m, "gru")]
    if not modules or not (force or device.type in SELF_CHECK_DEVICES):
        return None
    how = modules[0].implementation(device)
    if how in (FALLBACK, "bidirectional"):           # the plain computations themselves
        return None
    record = self_check(modules[0], device, amp_dtype)
    amp = "" if amp_dtype is None else f" (also under {record['autocast']} autocast)"
    if record["passed"]:
        log(f"=> BiGRU self-check on {device}: '{how}' agrees with the reference{amp}, largest relative "
            f"error {record['largest_error']:.2g}, {record['seconds']:.1f} s")
        record["used"] = how
        return record
    for module in modules:
        module.fallback = FALLBACK
    record["used"] = FALLBACK
    log(f"warning: BiGRU self-check on {device}: '{how}' {record['reason']}; this run uses the plain "
        f"'{FALLBACK}' implementation instead (the same model, slower)")
    return record

"""Fast exact implementations of the released BiGRU layer (SPEC.md section 2).

One layer of the released encoder is two independent forward-in-time GRUs over the same input, one
with the `_l{k}` weights and one with the `_l{k}_reverse` weights, outputs concatenated (2H). Two
implementations live here; `cmd_model.StepwiseGRU` picks one per device.

`PairGRUFunction` (custom autograd, fastest on CPU): the input projections of all time steps and both
directions are one matrix product; per step only the two hidden-to-hidden products run, batched over
the direction pair (`torch.baddbmm`); the gates are kept from the forward pass; the backward pass runs
the recurrence once in reverse for the hidden-state gradient and then forms every weight gradient and
the input gradient as a few large products over all time steps. PyTorch's GRU equations exactly:

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h          (computed as lerp(n, h, z) = n + z * (h - n))

`cudnn_pair_gru` (CUDA): cuDNN's fused GRU, one call per direction, with the weights of each
layer-direction laid out once in a flat buffer of its own (`relayout_for_cudnn`), so that cuDNN uses
them in place (no per-call weight copy, no "not part of single contiguous chunk" warning).

Tensors are time-major inside a stack of layers, `(T, N, features)`, so a layer's output feeds the next
layer without a transpose.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn

aten = torch.ops.aten


def _pair_weights(w_ih, w_hh, b_ih, b_hh):
    """Concatenate the two directions: W_ih (6H, I), W_hh (2, 3H, H), b_ih (6H,), b_hh (2, 1, 3H)."""
    return (torch.cat(w_ih, 0), torch.stack(w_hh, 0), torch.cat(b_ih, 0), torch.stack(b_hh, 0).unsqueeze(1))


def _pair_forward(x, w_ih, w_hh, b_ih, b_hh, keep: bool):
    """x (T, N, I) -> outputs (T, N, 2H); with `keep`, also what the backward pass needs."""
    t_len, n, i_size = x.shape
    h_size = w_hh.shape[-1]
    g3 = 3 * h_size
    # input projections, all steps and both directions: (T, N, 2, 3H) -> per step (2, N, 3H) views
    gi = torch.addmm(b_ih, x.reshape(t_len * n, i_size), w_ih.t()).view(t_len, n, 2, g3).transpose(1, 2)
    w_hh_t = w_hh.transpose(1, 2)                                    # (2, H, 3H)
    hs = x.new_empty(t_len + 1, 2, n, h_size)                        # hidden states, hs[0] = 0
    hs[0].zero_()
    if keep:
        gh = x.new_empty(t_len, 2, n, g3)                            # W_h h + b_h per step
        rz = x.new_empty(t_len, 2, n, 2 * h_size)                    # r and z
        nn_ = x.new_empty(t_len, 2, n, h_size)                       # n
    else:
        gh_t = x.new_empty(2, n, g3)
        rz_t = x.new_empty(2, n, 2 * h_size)
        n_t = x.new_empty(2, n, h_size)
    for t in range(t_len):
        h = hs[t]
        if keep:
            gh_t, rz_t, n_t = gh[t], rz[t], nn_[t]
        torch.baddbmm(b_hh, h, w_hh_t, out=gh_t)
        gi_t = gi[t]
        torch.add(gi_t[..., :2 * h_size], gh_t[..., :2 * h_size], out=rz_t)
        rz_t.sigmoid_()
        torch.addcmul(gi_t[..., 2 * h_size:], rz_t[..., :h_size], gh_t[..., 2 * h_size:], out=n_t)
        n_t.tanh_()
        torch.lerp(n_t, h, rz_t[..., h_size:], out=hs[t + 1])
    out = hs[1:].permute(0, 2, 1, 3).reshape(t_len, n, 2 * h_size)
    if keep:
        return out, (hs, gh, rz, nn_)
    return out, None


def _pair_backward(grad_out, x, w_ih, w_hh, saved):
    """Gradients of (x, W_ih (6H, I), W_hh (2, 3H, H), b_ih (6H,), b_hh (2, 1, 3H))."""
    hs, gh, rz, nn_ = saved
    t_len, n, i_size = x.shape
    h_size = w_hh.shape[-1]
    g3 = 3 * h_size
    dy = grad_out.view(t_len, n, 2, h_size).transpose(1, 2)         # (T, 2, N, H) views
    dgh = x.new_empty(t_len, 2, n, g3)                               # grads of W_h h + b_h
    da_n = x.new_empty(t_len, 2, n, h_size)                          # grad of n's pre-activation
    dh = x.new_zeros(2, n, h_size)
    for t in range(t_len - 1, -1, -1):
        dh.add_(dy[t])
        r, z = rz[t, ..., :h_size], rz[t, ..., h_size:]
        n_t, h_prev = nn_[t], hs[t]
        dgh_t = dgh[t]
        # z: dL/dz = dh * (h - n)
        aten.sigmoid_backward.grad_input(dh * (h_prev - n_t), z, grad_input=dgh_t[..., h_size:2 * h_size])
        # n: dL/dn = dh * (1 - z)
        aten.tanh_backward.grad_input(torch.addcmul(dh, dh, z, value=-1.0), n_t, grad_input=da_n[t])
        # r: dL/dr = da_n * (W_hn h + b_hn)
        aten.sigmoid_backward.grad_input(da_n[t] * gh[t, ..., 2 * h_size:], r,
                                         grad_input=dgh_t[..., :h_size])
        torch.mul(da_n[t], r, out=dgh_t[..., 2 * h_size:])
        dh = torch.baddbmm(dh * z, dgh_t, w_hh)
    # weight gradients as products over all steps
    dgh_d = dgh.transpose(0, 1).reshape(2, t_len * n, g3)
    h_d = hs[:-1].transpose(0, 1).reshape(2, t_len * n, h_size)
    d_w_hh = torch.bmm(dgh_d.transpose(1, 2), h_d)                   # (2, 3H, H)
    d_b_hh = dgh_d.sum(1).unsqueeze(1)                               # (2, 1, 3H)
    dgi = x.new_empty(t_len, n, 2, g3)                               # = [dr, dz, da_n] in gi's layout
    dgi[..., :2 * h_size].copy_(dgh[..., :2 * h_size].transpose(1, 2))
    dgi[..., 2 * h_size:].copy_(da_n.transpose(1, 2))
    dgi = dgi.view(t_len * n, 2 * g3)
    x2 = x.reshape(t_len * n, i_size)
    d_w_ih = dgi.t().mm(x2)                                          # (6H, I)
    d_b_ih = dgi.sum(0)
    d_x = dgi.mm(w_ih).view(t_len, n, i_size)
    return d_x, d_w_ih, d_w_hh, d_b_ih, d_b_hh


class PairGRUFunction(torch.autograd.Function):
    """One released BiGRU layer: x (T, N, I) -> (T, N, 2H), [forward-weights GRU, reverse-weights GRU].

    Arguments after x: w_ih, w_hh, b_ih, b_hh of the `_l{k}` direction, then of `_l{k}_reverse`.
    """

    @staticmethod
    def forward(ctx, x, w_ih_f, w_hh_f, b_ih_f, b_hh_f, w_ih_r, w_hh_r, b_ih_r, b_hh_r):
        w_ih, w_hh, b_ih, b_hh = _pair_weights((w_ih_f, w_ih_r), (w_hh_f, w_hh_r), (b_ih_f, b_ih_r),
                                               (b_hh_f, b_hh_r))
        x = x.contiguous()
        out, saved = _pair_forward(x, w_ih, w_hh, b_ih, b_hh, keep=True)
        ctx.save_for_backward(x, w_ih, w_hh, *saved)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, w_ih, w_hh, *saved = ctx.saved_tensors
        with torch.autocast(x.device.type, enabled=False):
            return PairGRUFunction._backward(grad_out.float(), x, w_ih, w_hh, saved)

    @staticmethod
    def _backward(grad_out, x, w_ih, w_hh, saved):
        d_x, d_w_ih, d_w_hh, d_b_ih, d_b_hh = _pair_backward(grad_out.contiguous(), x, w_ih, w_hh, saved)
        g3 = w_hh.shape[1]
        return (d_x, d_w_ih[:g3], d_w_hh[0], d_b_ih[:g3], d_b_hh[0, 0],
                d_w_ih[g3:], d_w_hh[1], d_b_ih[g3:], d_b_hh[1, 0])


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
            w = _pair_weights(weights[0::4], weights[1::4], weights[2::4], weights[3::4])
            x = _pair_forward(x.contiguous(), *w, keep=False)[0]
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

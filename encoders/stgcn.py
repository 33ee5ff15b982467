"""ST-GCN (Yan et al., AAAI 2018) as a CMD encoder, in the form the contrastive skeleton methods pretrain
(CrosSCLR, AimCLR, ActCLR, HiCLR, PSTL: a base width of 16 and a last width of 256).

Layers and state-dict names follow the original `net/st_gcn.py` (mmskeleton, copied by those methods):
`data_bn`, `st_gcn_networks.{0..9}.{gcn.conv, tcn.*, residual.*}`, `edge_importance.{0..9}`, the
adjacency buffer `A`, and `fc`. Differences from that file: the adjacency is graph.py's spatial
partition of the 2s-AGCN family (self, inward, outward; each column-normalised) instead of the original
hop-distance partition, as DESIGN.md asks; dropout is left out (the contrastive methods pretrain
without it).

    x (N, C, T, V, M) -> data_bn: BatchNorm1d(V*C) over (N*M, V*C, T), i.e. per joint and coordinate,
    statistics shared by the M persons (the original's input normalisation)
    -> 10 blocks, widths base x4, 2base x3, 4base x2, hidden_size; stride 2 at blocks 5 and 8;
       block 1 has no residual, blocks that change width or stride have a 1x1 conv + BN residual
    -> mean over time and joints -> mean over persons -> (N, hidden_size) features -> fc
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import encoders
import graph

NUM_BLOCKS = 10
# 'contrastive': the contrastive methods' weights_init (convolutions N(0, 0.02)); 'pytorch': PyTorch's
# defaults (convolutions uniform with std 1/sqrt(3 fan_in): 0.096 at base 4, 0.048 at base 16). Every
# convolution is followed by BatchNorm, so a convolution's step size relative to its weights goes as
# lr / |w|^2: N(0, 0.02) makes it 6 (base 16) to 23 (base 4) times larger than PyTorch's defaults do.
# docs/model.md ("ST-GCN on NW-UCLA") shows what that does to a short pretraining.
INITS = ("contrastive", "pytorch")
STRIDE_TWO_BLOCKS = (5, 8)        # 1-based, as in the papers' tables


@dataclass
class STGCNConfig:
    """Sizes of ST-GCN. base_channels=64, hidden_size=256 is the classic model; 16 and 256 the one the
    contrastive methods pretrain."""
    base_channels: int = 64
    hidden_size: int = 256
    temporal_kernel: int = 9
    edge_importance: bool = True
    layout: str | dict = "ntu"      # a built-in layout's name, or a layout's record (graph.layout_key)
    strategy: str = "spatial"
    in_channels: int = 3
    num_person: int = 2
    init: str = "contrastive"       # INITS: the contrastive methods' N(0, 0.02), or PyTorch's layer defaults

    def __post_init__(self):
        encoders.check_positive(self, "base_channels", "hidden_size", "temporal_kernel", "in_channels",
                                "num_person")
        if self.temporal_kernel % 2 == 0:
            raise ValueError(f"STGCNConfig.temporal_kernel must be odd (same-length padding), "
                             f"got {self.temporal_kernel}")
        self.layout = graph.layout_key(graph.get_layout(self.layout))    # one form for one layout
        if self.strategy not in graph.Graph.STRATEGIES:
            raise ValueError(f"STGCNConfig.strategy {self.strategy!r}: expected one of "
                             f"{graph.Graph.STRATEGIES}")
        if self.init not in INITS:
            raise ValueError(f"STGCNConfig.init {self.init!r}: expected one of {INITS}")

    @staticmethod
    def layout_fields(layout: graph.Layout) -> dict:
        return {"layout": graph.layout_key(layout)}

    def block_channels(self) -> list[tuple[int, int, int]]:
        """(in, out, stride) of the ten blocks."""
        b = self.base_channels
        widths = [b] * 4 + [2 * b] * 3 + [4 * b] * 2 + [self.hidden_size]
        ins = [self.in_channels] + widths[:-1]
        return [(i, o, 2 if k + 1 in STRIDE_TWO_BLOCKS else 1) for k, (i, o) in enumerate(zip(ins, widths))]


class GraphConv(nn.Module):
    """The original `ConvTemporalGraphical` with a temporal kernel of 1: a 1x1 conv to K*C_out channels,
    then for each partition k, `out[:, :, :, w] += sum_v x_k[:, :, :, v] * A[k, v, w]`."""

    def __init__(self, in_channels: int, out_channels: int, num_partitions: int):
        super().__init__()
        self.num_partitions = num_partitions
        self.conv = nn.Conv2d(in_channels, out_channels * num_partitions, kernel_size=1)

    def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        n, kc, t, v = x.shape
        x = x.view(n, self.num_partitions, kc // self.num_partitions, t, v)
        return torch.einsum("nkctv,kvw->nctw", x, a).contiguous()


class STGCNBlock(nn.Module):
    """The original `st_gcn` block: graph conv, then BN-ReLU-temporal conv (stride)-BN, residual, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, num_partitions: int, temporal_kernel: int,
                 stride: int = 1, residual: bool = True):
        super().__init__()
        self.stride = stride
        self.gcn = GraphConv(in_channels, out_channels, num_partitions)
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, (temporal_kernel, 1), (stride, 1),
                      ((temporal_kernel - 1) // 2, 0)),
            nn.BatchNorm2d(out_channels),
        )
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=(stride, 1)),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        res = 0 if self.residual is None else self.residual(x)
        return F.relu(self.tcn(self.gcn(x, a)) + res)


def _contrastive_init(module: nn.Module) -> None:
    """The init the ST-GCN contrastive methods apply (their `weights_init`): convs N(0, 0.02) with zero
    bias, BatchNorm weights N(1, 0.02) with zero bias; Linear layers keep PyTorch's default."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class STGCNEncoder(encoders.Encoder):
    """ST-GCN encoder: clips (N, C, T, V, M) -> (N, hidden_size) features -> fc."""

    Config = STGCNConfig
    FLAGS = (encoders.EncoderFlag("hidden_size", "--hidden-size", "width of the last block (= features)"),
             encoders.EncoderFlag("base_channels", "--stgcn-base-channels",
                                  "width of blocks 1-4 (2x for 5-7, 4x for 8-9)"),
             encoders.EncoderFlag("temporal_kernel", "--stgcn-temporal-kernel", "temporal kernel size"),
             encoders.EncoderFlag("edge_importance", "--stgcn-edge-importance",
                                  "learnable edge-importance weights"),
             encoders.EncoderFlag("init", "--stgcn-init",
                                  "initialisation: contrastive (the ST-GCN contrastive methods' N(0, 0.02) "
                                  "convolutions) or pytorch (PyTorch's layer defaults)", choices=INITS))

    def __init__(self, num_class: int, config: STGCNConfig | dict | None = None, mlp: bool = False,
                 **overrides):
        super().__init__(config, **overrides)
        c = self.config
        g = graph.Graph(c.layout, c.strategy)
        self.in_channels, self.num_joints, self.num_person = c.in_channels, g.num_node, c.num_person
        self.register_buffer("A", torch.tensor(g.A, dtype=torch.float32))
        self.data_bn = nn.BatchNorm1d(c.in_channels * g.num_node)
        num_partitions = g.A.shape[0]
        self.st_gcn_networks = nn.ModuleList(
            STGCNBlock(i, o, num_partitions, c.temporal_kernel, stride, residual=k > 0)
            for k, (i, o, stride) in enumerate(c.block_channels()))
        if c.edge_importance:
            self.edge_importance = nn.ParameterList(nn.Parameter(torch.ones_like(self.A))
                                                    for _ in self.st_gcn_networks)
        else:
            self.edge_importance = None
        if c.init == "contrastive":
            self.apply(_contrastive_init)
        self.feature_dim = c.hidden_size
        self.add_head(num_class, mlp)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, V, M) -> (N, hidden_size): pooled over time and joints, then averaged over persons."""
        encoders.check_clip(x, self.in_channels, self.num_joints, self.num_person)
        n, c, t, v, m = x.shape
        x = x.permute(0, 4, 3, 1, 2).reshape(n * m, v * c, t)        # per person: (V*C, T)
        x = self.data_bn(x)
        x = x.view(n, m, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)
        for k, block in enumerate(self.st_gcn_networks):
            a = self.A if self.edge_importance is None else self.A * self.edge_importance[k]
            x = block(x, a)
        return x.mean(dim=(2, 3)).view(n, m, -1).mean(dim=1)

"""The CMD model: modality transforms, the released BiGRU encoder and the encoder registry (ST-GCN lives in
stgcn.py, the encoder contract in encoders.py), the pretraining model and its loss, and the downstream
classifier (SPEC.md sections 1-3).

Every model takes float32 clips `(N, 3, T, V, M=2)`, V the joints of its skeleton layout (NTU: 25).
State-dict key names are those of the released CMD code, so its checkpoints load unchanged (after
`checkpoints.strip_module_prefix`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

import encoders
import graph
import moco
from encoders import add_mlp_head  # noqa: F401  (part of cmd_model's interface)
from encoders import bigru, stgcn
from storage import checkpoints

MODALITIES = ("joint", "motion", "bone")


# ----------------------------------------------------------------------------- modalities
def joint_to_motion(x: torch.Tensor) -> torch.Tensor:
    """`m[:, :, t] = x[:, :, t+1] - x[:, :, t]`; the last frame is zero."""
    motion = torch.zeros_like(x)
    motion[:, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
    return motion


def joint_to_bone(x: torch.Tensor, pairs=graph.NTU_BONE_PAIRS) -> torch.Tensor:
    """`bone[..., child, :] = x[..., child, :] - x[..., parent, :]` for every (child, parent) pair.

    Joints that are nobody's child stay zero; a joint paired with itself gets a zero bone.
    """
    child = torch.tensor([c for c, _ in pairs], dtype=torch.long, device=x.device)
    parent = torch.tensor([p for _, p in pairs], dtype=torch.long, device=x.device)
    bone = torch.zeros_like(x)
    bone[:, :, :, child] = x[:, :, :, child] - x[:, :, :, parent]
    return bone


_MODALITY_TRANSFORMS = {"joint": lambda x, layout: x, "motion": lambda x, layout: joint_to_motion(x),
                        "bone": lambda x, layout: joint_to_bone(x, layout.bone_pairs)}


def to_modality(x: torch.Tensor, name: str, layout: graph.Layout | None = None) -> torch.Tensor:
    """Clips of the joint modality as modality `name`; bones follow `layout` (default NTU's)."""
    if name not in _MODALITY_TRANSFORMS:
        raise ValueError(f"unknown modality {name!r}; expected one of {MODALITIES}")
    return _MODALITY_TRANSFORMS[name](x, layout or graph.get_layout())


# ----------------------------------------------------------------------------- BiGRU encoder
class StepwiseGRU(nn.Module):
    """The released `EncoderRNN`: holds `gru`, a bidirectional `nn.GRU`, and runs it in one of these ways.

    'stepwise' (default): the released semantics without a Python loop over time. The released code
      feeds one time step at a time and carries the hidden state of all layers and directions, so
      the `_reverse` weights also run forward in time: per layer, two independent forward GRUs over
      the whole sequence, outputs concatenated (2H) as the next layer's input. Computed by the
      fastest exact implementation for the device (`IMPLEMENTATION`), with the parameters of `gru`
      (key names unchanged). The same semantics with the implementation forced:
      'custom': `bigru.PairGRUFunction`, both directions batched, weight gradients as whole-sequence
        products (fastest on CPU);
      'fused': one fused GRU call per layer and direction (cuDNN on CUDA, with the weights of each
        layer-direction in a flat buffer of its own; ATen's GRU on CPU).
    'loop': the released per-timestep loop (reference implementation, slow).
    'bidirectional': a true bidirectional pass (a different model; opt-in).
    """

    MODES = ("stepwise", "loop", "bidirectional", "custom", "fused")
    # what 'stepwise' runs, per device type: measured with `benchmark.py train --modes custom fused loop`
    # (flip an entry here when a measurement on that device says so; scripts/gpu_check.sh measures CUDA)
    IMPLEMENTATION = {"cpu": "custom", "cuda": "fused"}

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, mode: str = "stepwise"):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"unknown gru_mode {mode!r}; expected one of {self.MODES}")
        self.mode = mode
        self.fallback = None       # set by bigru.check_model when the implementation failed its self-check
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.gru = nn.GRU(input_size, hidden_size, num_layers=num_layers, batch_first=True,
                          bidirectional=True)

    def implementation(self, device: torch.device) -> str:
        """The computation `forward` uses on `device`: 'custom', 'fused', 'loop' or 'bidirectional'."""
        if getattr(self, "fallback", None):
            return self.fallback
        if self.mode == "stepwise":
            return self.IMPLEMENTATION.get(device.type, "fused")
        return self.mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, input_size) -> top layer's outputs (N, T, 2H)."""
        how = self.implementation(x.device)
        if how == "custom":
            return bigru.custom_pair_gru(self.gru, x.transpose(0, 1)).transpose(0, 1)
        if how == "fused":
            return bigru.cudnn_pair_gru(self.gru, x) if x.is_cuda else self._fused(x)
        if x.is_cuda and not bigru.in_one_flat_buffer(self.gru):
            self.gru.flatten_parameters()  # nn.GRU's own cuDNN layout (after 'fused' gave each direction one)
        if how == "loop":
            return self._loop(x)
        return self.gru(x)[0]

    def _fused(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        h0 = x.new_zeros(1, n, self.hidden_size)
        for layer in range(self.num_layers):
            outputs = []
            for suffix in ("", "_reverse"):
                weights = [getattr(self.gru, f"{name}_l{layer}{suffix}")
                           for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                # args: input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first
                out, _ = torch._VF.gru(x, h0, weights, True, 1, 0.0, self.training, False, True)
                outputs.append(out)
            x = torch.cat(outputs, dim=2)
        return x

    def _loop(self, x: torch.Tensor) -> torch.Tensor:
        outputs, hidden = [], None
        for t in range(x.shape[1]):
            out, hidden = self.gru(x[:, t:t + 1], hidden)
            outputs.append(out)
        return torch.cat(outputs, dim=1)


@dataclass
class BiGRUConfig:
    """Sizes of the released encoder. `gru_mode` picks how StepwiseGRU computes (not recorded), except
    that 'bidirectional' is a different model: `bidirectional` records that (None: from `gru_mode`), and
    a config rebuilt from a record with bidirectional=True runs gru_mode 'bidirectional'."""
    hidden_size: int = 1024
    num_layers: int = 3
    in_channels: int = 3
    num_joints: int = 25
    num_person: int = 2
    bidirectional: bool | None = None
    gru_mode: str = encoders.runtime_field("stepwise")

    def __post_init__(self):
        encoders.check_positive(self, "hidden_size", "num_layers", "in_channels", "num_joints", "num_person")
        if self.gru_mode not in StepwiseGRU.MODES:
            raise ValueError(f"unknown gru_mode {self.gru_mode!r}; expected one of {StepwiseGRU.MODES}")
        true_bidirectional = self.gru_mode == "bidirectional"
        if self.bidirectional is None:
            self.bidirectional = true_bidirectional
        elif self.bidirectional and self.gru_mode == "stepwise":
            self.gru_mode = "bidirectional"
        elif self.bidirectional != true_bidirectional:
            model = "a true bidirectional GRU" if self.bidirectional else "the released stepwise BiGRU"
            raise ValueError(f"--gru-mode {self.gru_mode} does not compute the recorded model, {model} "
                             f"(encoder config bidirectional={self.bidirectional})")

    @staticmethod
    def layout_fields(layout: graph.Layout) -> dict:
        return {"num_joints": layout.num_joints}


class BiGRUEncoder(encoders.Encoder):
    """The released CMD encoder ('BIGRU'): input_norm -> encoder.gru -> last step's 2H output -> fc.

    Input clips (N, C, T, V, M) become sequences (N, T, V*C*M) with feature index v*C*M + c*M + m.
    """

    Config = BiGRUConfig
    FLAGS = (encoders.EncoderFlag("hidden_size", "--hidden-size", "GRU hidden size H (features are 2H)"),
             encoders.EncoderFlag("num_layers", "--gru-layers", "GRU layers"),
             encoders.EncoderFlag("gru_mode", "--gru-mode", "how StepwiseGRU computes; a run-time choice, "
                                  "except 'bidirectional', a different model, which checkpoints record",
                                  choices=StepwiseGRU.MODES))

    def __init__(self, num_class: int, config: BiGRUConfig | dict | None = None, mlp: bool = False,
                 **overrides):
        super().__init__(config, **overrides)
        c = self.config
        self.in_channels, self.num_joints, self.num_person = c.in_channels, c.num_joints, c.num_person
        input_size = c.in_channels * c.num_joints * c.num_person
        self.feature_dim = 2 * c.hidden_size
        self.encoder = StepwiseGRU(input_size, c.hidden_size, c.num_layers, mode=c.gru_mode)
        self.fc = nn.Linear(self.feature_dim, num_class)
        self.input_norm = nn.BatchNorm1d(input_size)
        for module in (self.encoder, self.fc, self.input_norm):  # SPEC s.2 point 5
            for param in module.parameters():
                if param.dim() == 2:
                    nn.init.xavier_uniform_(param)
        if mlp:
            add_mlp_head(self)

    @classmethod
    def tensor_count(cls, config, num_class: int, mlp: bool = False) -> int:
        """The formula (building 10^9 layers on the meta device would never finish)."""
        c = encoders.make_config(cls.Config, config)
        inputs, h = c.in_channels * c.num_joints * c.num_person, c.hidden_size

        def direction(in_size: int) -> int:       # weight_ih, weight_hh, bias_ih, bias_hh of one direction
            return 3 * h * in_size + 3 * h * h + 6 * h
        gru = 2 * direction(inputs) + 2 * (c.num_layers - 1) * direction(2 * h)
        head = (2 * h * 2 * h + 2 * h if mlp else 0) + 2 * h * num_class + num_class
        return gru + head + 4 * inputs + 1      # input_norm: weight, bias, running mean and var, a counter

    @property
    def gru_mode(self) -> str:
        return self.encoder.mode

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, V, M) -> (N, 2H): the top layer's output at the last time step (pre-head)."""
        encoders.check_clip(x, self.in_channels, self.num_joints, self.num_person)
        n, _, t, _, _ = x.shape
        seq = x.permute(0, 2, 3, 1, 4).reshape(n, t, -1)
        seq = self.input_norm(seq.transpose(1, 2)).transpose(1, 2).contiguous()
        return self.encoder(seq)[:, -1]


# ----------------------------------------------------------------------------- the encoder registry
# name -> Encoder subclass (encoders.py states the contract); a new encoder is one class and one line here
ENCODERS = {"bigru": BiGRUEncoder, "stgcn": stgcn.STGCNEncoder}
DEFAULT_ENCODER = "bigru"


def encoder_class(name: str) -> type:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; valid names: {sorted(ENCODERS)}")
    return ENCODERS[name]


def make_encoder_config(name: str, config=None, source: str | None = None, **overrides):
    """The config of encoder `name` from a config / a recorded dict / nothing, plus overrides."""
    cls = encoder_class(name)
    return encoders.make_config(cls.Config, config, source=source or f"encoder {name!r}", **overrides)


def layout_overrides(name: str, layout) -> dict:
    """The config fields through which encoder `name` takes the skeleton `layout` (a Layout or a built-in
    name; its Config's `layout_fields`, e.g. num_joints; none for an encoder without one)."""
    fields = getattr(encoder_class(name).Config, "layout_fields", None)
    return fields(graph.get_layout(layout)) if fields else {}


def check_layout(name: str, config, layout) -> None:
    """ValueError when the encoder config was made for another skeleton than `layout`."""
    layout = graph.get_layout(layout)
    for key, value in layout_overrides(name, layout).items():
        if getattr(config, key) != value:
            shown = value if isinstance(value, (int, str)) else f"layout {layout.name!r} as recorded"
            raise ValueError(f"encoder {name!r} has {key} = {_short(getattr(config, key))}, but the data's "
                             f"skeleton layout {layout.name!r} needs {shown!r}")


def _short(value) -> str:
    return repr(value) if not isinstance(value, dict) else f"layout {value.get('name')!r} (recorded)"


@dataclass(frozen=True)
class ModelSpec:
    """The model's configuration, resolved once (from the flags, the data's skeleton layout and a
    checkpoint's record) and handed on as it is: to the memory estimates, `CMD` / `CMDClassifier` and the
    checkpoint record. `origin` says where the encoder config came from."""
    encoder: str
    config: object
    layout: graph.Layout
    origin: str = "command line and defaults"

    def encoder_record(self) -> dict:
        return encoder_record(self.encoder, self.config)

    def record(self) -> dict:
        """What a pretraining checkpoint records of the model: the encoder record and the layout itself."""
        return {**self.encoder_record(), "layout": self.layout.record()}


def model_spec(encoder: str = DEFAULT_ENCODER, layout="ntu", config=None, overrides: dict | None = None,
               origin: str = "command line and defaults") -> ModelSpec:
    """The spec of a model for `layout` (a Layout, a built-in name or a record): the encoder's defaults
    for that skeleton when `config` is None, else `config` (a config or a recorded dict, which must fit
    it), with `overrides` (config fields) applied."""
    layout = graph.get_layout(layout)
    overrides = dict(overrides or {})
    if config is None:
        overrides = {**layout_overrides(encoder, layout), **overrides}
    config = make_encoder_config(encoder, config, source=f"encoder {encoder!r} ({origin})", **overrides)
    check_layout(encoder, config, layout)
    return ModelSpec(encoder, config, layout, origin)


def _spec_of(spec, encoder, encoder_config, layout, overrides) -> ModelSpec:
    """`spec` itself, or the spec the keyword arguments describe (the models' short form); not both."""
    if spec is None:
        return model_spec(encoder, layout, encoder_config, overrides)
    if encoder_config is not None or overrides:
        raise ValueError("give either a ModelSpec or the encoder config and overrides, not both")
    return spec


def build_encoder(name: str, num_class: int, mlp: bool = False, config=None, **overrides) -> nn.Module:
    """An encoder of the registry: `build_encoder('stgcn', 128, hidden_size=256)`."""
    return encoder_class(name)(num_class, config=make_encoder_config(name, config, **overrides), mlp=mlp)


def encoder_record(name: str, config) -> dict:
    """What every checkpoint we write records, and all that evaluation needs to rebuild the encoders."""
    return {"encoder": name, "encoder_config": encoders.config_record(config)}


def add_encoder_arguments(parser) -> None:
    """--encoder and every registered encoder's flags (defaults None; see encoders.add_encoder_arguments)."""
    encoders.add_encoder_arguments(parser, ENCODERS, DEFAULT_ENCODER)


def encoder_overrides(name: str, args) -> dict:
    """Config fields of encoder `name` given on the command line; a flag of another encoder is an error."""
    encoder_class(name)
    return encoders.overrides_from_args(ENCODERS, name, args)


def pretraining_bytes(spec: ModelSpec, dim: int, K: int, mlp: bool, batch: int) -> int:
    """Bytes that CMD pretraining holds at the least, in float32: six encoders' weights, the three query
    encoders' gradients and SGD momentum, three (dim, K) queues, and a step's (batch, K) similarity
    matrices (student, teacher, logits and their gradient per modality). Activations come on top."""
    per_encoder = encoder_class(spec.encoder).tensor_count(spec.config, dim, mlp)
    return 4 * (6 * per_encoder + 3 * 2 * per_encoder + 3 * dim * K + 3 * 4 * batch * K)


def classifier_bytes(spec: ModelSpec, num_class: int, trained_encoders: int) -> int:
    """Bytes that a CMDClassifier holds at the least, in float32: three encoders with their heads, plus
    gradients and SGD momentum of the `trained_encoders` that fine-tuning trains."""
    per_encoder = encoder_class(spec.encoder).tensor_count(spec.config, num_class)
    return 4 * (3 + 2 * trained_encoders) * per_encoder


# The released --skeleton-representation / --finetune-skeleton-representation (SPEC s.7): the feeder's
# output layout, never the encoder. 'graph-based' (every released script) is the clip layout this code
# always uses; 'seq-based' is refused with this explanation.
SKELETON_REPRESENTATIONS = ("graph-based", "seq-based")


def check_skeleton_representation(value: str | None, flag: str) -> None:
    if value == "seq-based":
        raise ValueError(f"{flag} seq-based is not supported: in the released code it makes the feeder "
                         f"return flattened (T, 150) sequences, from which CMD cannot compute the motion "
                         f"and bone modalities; pass graph-based (the released scripts' value) and choose"
                         f" the encoder with --encoder")
    if value not in (None, "graph-based"):
        raise ValueError(f"{flag} {value!r}: expected one of {SKELETON_REPRESENTATIONS}")


# ----------------------------------------------------------------------------- CMD loss
def kl_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """The released `loss_kld`: KL(softmax(teacher) || softmax(student)), batch mean."""
    return F.kl_div(F.log_softmax(student_logits, dim=1), F.softmax(teacher_logits, dim=1),
                    reduction="batchmean")


def cmd_distillation(teacher_sims: dict, student_sims: dict, topk: int, teacher_T: float,
                     student_T: float) -> dict:
    """The six ordered KL terms of SPEC s.3 step 5, keyed 'teacher->student' (unweighted).

    teacher_sims[a] = k_a . queue_a (N, K), detached here; student_sims[b] = q_b . queue_b (N, K).
    Each teacher's top-k neighbours are chosen once and index the students' similarities.
    """
    terms = {}
    for a in MODALITIES:
        top_values, top_index = torch.topk(teacher_sims[a].detach(), topk, dim=-1)
        for b in MODALITIES:
            if b != a:
                student = torch.gather(student_sims[b], -1, top_index)
                terms[f"{a}->{b}"] = kl_distillation(student / student_T, top_values / teacher_T)
    return terms


@dataclass
class CMDOutput:
    """What one CMD step computed. `loss_cmd` is already multiplied by `cmd_weight`."""
    logits: dict
    targets: torch.Tensor
    loss_cmd: torch.Tensor
    distill_terms: dict = field(default_factory=dict)  # 'teacher->student' -> unweighted KL

    _contrastive: dict | None = field(default=None, repr=False)  # computed once, by contrastive_losses

    def contrastive_losses(self) -> dict:
        if self._contrastive is None:
            self._contrastive = {m: F.cross_entropy(self.logits[m], self.targets) for m in MODALITIES}
        return self._contrastive

    @property
    def loss(self) -> torch.Tensor:
        """The training loss: the three InfoNCE cross-entropies plus the weighted distillation loss."""
        ce = self._contrastive if self._contrastive is not None else self.contrastive_losses()
        return sum(ce.values()) + self.loss_cmd


# ----------------------------------------------------------------------------- pretraining model
def encode_in_groups(encoder: nn.Module, x: torch.Tensor, groups: int,
                     order: torch.Tensor | None = None) -> torch.Tensor:
    """`encoder(x)` computed on `groups` consecutive slices of the batch (of `x[order]` when an order is
    given, returned in the original order), so that BatchNorm's batch statistics come from each slice.

    With the keys in a random order, a clip's query and its key are normalised with statistics of
    different clips: MoCo's shuffling BN (He et al. 2020, section 3.3) on one device, as in MoCo's
    single-GPU demo (its SplitBatchNorm). Without it, the positive shares its batch's statistics with the
    query while the queued negatives do not, a signature the encoder can learn instead of the content.
    """
    if groups <= 1:
        return encoder(x)
    if order is not None:
        x = x[order]
    out = torch.cat([encoder(part) for part in x.tensor_split(groups)])
    if order is not None:
        out = torch.empty_like(out).index_copy_(0, order, out)
    return out


class CMD(nn.Module):
    """Three MoCo branches (joint, motion, bone) plus cross-modal mutual distillation.

    Attribute and buffer names are the released ones: encoder_q / encoder_k, encoder_q_motion /
    encoder_k_motion, encoder_q_bone / encoder_k_bone, queue{,_motion,_bone}, queue_ptr{,_motion,_bone}.
    """

    QUERY = {"joint": "encoder_q", "motion": "encoder_q_motion", "bone": "encoder_q_bone"}
    KEY = {"joint": "encoder_k", "motion": "encoder_k_motion", "bone": "encoder_k_bone"}
    QUEUE = {"joint": "queue", "motion": "queue_motion", "bone": "queue_bone"}
    POINTER = {"joint": "queue_ptr", "motion": "queue_ptr_motion", "bone": "queue_ptr_bone"}

    def __init__(self, encoder: str = DEFAULT_ENCODER, encoder_config=None, dim: int = 128, K: int = 16384,
                 m: float = 0.999, T: float = 0.07, teacher_T: float = 0.05, student_T: float = 0.1,
                 cmd_weight: float = 1.0, topk: int = 1024, mlp: bool = False, layout="ntu",
                 shuffle_bn: int = 1, spec: ModelSpec | None = None, **encoder_overrides):
        """The six encoders of `spec` (the commands' way in), or the short form: `encoder_config` (a config
        or a recorded dict; default: the encoder's defaults for `layout`) with `encoder_overrides` (config
        fields, e.g. hidden_size=16) applied.
        `shuffle_bn` > 1 encodes each batch in that many groups, the keys in a random order (see
        `encode_in_groups`); 1 is the released single-batch forward."""
        super().__init__()
        if not 1 <= topk <= K:
            raise ValueError(f"topk={topk} must be between 1 and the queue size K={K}")
        if shuffle_bn < 1:
            raise ValueError(f"shuffle_bn={shuffle_bn} must be at least 1 (1: off)")
        self.shuffle_bn = shuffle_bn
        self.spec = _spec_of(spec, encoder, encoder_config, layout, encoder_overrides)
        self.encoder_name, self.encoder_config = self.spec.encoder, self.spec.config
        self.layout = self.spec.layout
        encoder = self.encoder_name
        self.K, self.m, self.T = K, m, T
        self.teacher_T, self.student_T = teacher_T, student_T
        self.cmd_weight, self.topk = cmd_weight, topk
        # Construction order as released: q, k per modality, then MLP heads, then copies.
        for mod in MODALITIES:
            for names in (self.QUERY, self.KEY):
                setattr(self, names[mod], build_encoder(encoder, dim, config=self.encoder_config))
        if mlp:
            for mod in MODALITIES:
                add_mlp_head(self.query_encoder(mod))
                add_mlp_head(self.key_encoder(mod))
        for mod in MODALITIES:
            moco.copy_parameters(self.key_encoder(mod), self.query_encoder(mod))
        self.queues = moco.AlignedQueues(self, [self.QUEUE[m_] for m_ in MODALITIES],
                                         [self.POINTER[m_] for m_ in MODALITIES], dim, K)

    def encoder_record(self) -> dict:
        return self.spec.encoder_record()

    def query_encoder(self, modality: str) -> nn.Module:
        return getattr(self, self.QUERY[modality])

    def key_encoder(self, modality: str) -> nn.Module:
        return getattr(self, self.KEY[modality])

    def forward(self, x_q: torch.Tensor, x_k: torch.Tensor) -> CMDOutput:
        groups = self.shuffle_bn if self.training else 1
        q = {mod: F.normalize(encode_in_groups(self.query_encoder(mod), to_modality(x_q, mod, self.layout),
                                               groups), dim=1)
             for mod in MODALITIES}
        with torch.no_grad():
            for mod in MODALITIES:
                moco.momentum_update(self.key_encoder(mod), self.query_encoder(mod), self.m)
            order = torch.randperm(len(x_k), device=x_k.device) if groups > 1 else None
            k = {mod: F.normalize(encode_in_groups(self.key_encoder(mod), to_modality(x_k, mod, self.layout),
                                                   groups, order), dim=1)
                 for mod in MODALITIES}

        queues = self.queues.queues(self)
        logits, student_sims, teacher_sims = {}, {}, {}
        targets = None
        for mod in MODALITIES:
            queue = queues[self.QUEUE[mod]]
            student_sims[mod] = moco.negative_similarities(q[mod], queue)
            logits[mod], targets = moco.infonce_logits(q[mod], k[mod], queue, self.T, l_neg=student_sims[mod])
            teacher_sims[mod] = moco.negative_similarities(k[mod], queue)
        terms = cmd_distillation(teacher_sims, student_sims, self.topk, self.teacher_T, self.student_T)
        loss_cmd = self.cmd_weight * sum(terms.values())

        self.queues.enqueue(self, {self.QUEUE[mod]: k[mod] for mod in MODALITIES})
        return CMDOutput(logits=logits, targets=targets, loss_cmd=loss_cmd, distill_terms=terms)


# ----------------------------------------------------------------------------- downstream model
class CMDClassifier(nn.Module):
    """The three query encoders with `num_class` heads (as released); `view` picks what is used.

    view 'joint' / 'motion' / 'bone': that encoder on that modality; 'all': mean of the three heads'
    logits (the paper's 3-stream fusion), features concatenated.
    """

    ENCODER_NAMES = {"joint": "encoder_q", "motion": "encoder_q_motion", "bone": "encoder_q_bone"}
    VIEWS = MODALITIES + ("all",)

    def __init__(self, num_class: int, encoder: str = DEFAULT_ENCODER, view: str = "joint",
                 encoder_config=None, layout="ntu", spec: ModelSpec | None = None, **encoder_overrides):
        """The encoders of `spec`, or of the short form (as CMD's)."""
        super().__init__()
        if view not in self.VIEWS:
            raise ValueError(f"unknown view {view!r}; expected one of {self.VIEWS}")
        self.view = view
        self.spec = _spec_of(spec, encoder, encoder_config, layout, encoder_overrides)
        self.encoder_name, self.encoder_config = self.spec.encoder, self.spec.config
        self.layout = self.spec.layout
        for mod in MODALITIES:
            setattr(self, self.ENCODER_NAMES[mod],
                    build_encoder(self.encoder_name, num_class, config=self.encoder_config))

    def encoder_record(self) -> dict:
        return self.spec.encoder_record()

    def _modalities(self) -> tuple[str, ...]:
        return MODALITIES if self.view == "all" else (self.view,)

    def view_encoders(self) -> list:
        return [getattr(self, self.ENCODER_NAMES[mod]) for mod in self._modalities()]

    def heads(self) -> list:
        return [enc.fc for enc in self.view_encoders()]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        feats = [getattr(self, self.ENCODER_NAMES[mod]).features(to_modality(x, mod, self.layout))
                 for mod in self._modalities()]
        return torch.cat(feats, dim=1)

    def stream_logits(self, x: torch.Tensor) -> dict:
        """Logits of every stream the view uses, by modality; `fuse_logits` of them is `forward(x)`."""
        return {mod: getattr(self, self.ENCODER_NAMES[mod])(to_modality(x, mod, self.layout))
                for mod in self._modalities()}

    @staticmethod
    def fuse_logits(streams: dict) -> torch.Tensor:
        """The 3-stream fusion: the mean of the streams' logits (one stream: its logits)."""
        logits = list(streams.values())
        return logits[0] if len(logits) == 1 else torch.stack(logits).mean(dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse_logits(self.stream_logits(x))

    def load_pretrained(self, state_dict: dict, source: str = "checkpoint") -> None:
        """Released rule: keep `encoder_q*` weights, drop their `fc`; KeyError listing mismatches."""
        checkpoints.load_query_encoders(self, state_dict, list(self.ENCODER_NAMES.values()), source=source)

"""Settings of one pre-training or fine-tuning run, as plain dataclasses.

They live apart from the training code so the CLI can build its flags without importing
torch. Each field is one config key; the CLI has one required flag per field.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PretrainSettings:
    """Science settings of one pre-training run (the config's pretrain and model keys)."""

    strategy: str  # one of fem.registry.STRATEGIES
    seed: int
    mask_ratio: float  # p
    segments: int | str  # K, or "auto" = round(1/p)
    replacement: dict[str, float]  # {"mask", "random", "keep"} shares, summing to 1
    span: dict[str, float]  # {"geometric_p", "max_length"} of span / fe_span lengths
    steps: int  # optimizer steps
    rows_per_step: int  # rows per step (match "rows") or distinct sequences per step (match "sequences")
    learning_rate: float
    schedule: str  # "linear" | "cosine" decay after warm-up
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    validation_blocks: int
    validate_every: int  # steps between validation losses (0: only at the start and end)
    save_steps: list[int]  # steps after which an intermediate checkpoint is kept
    log_every: int
    hidden_size: int | None  # model shape when trained from scratch; None with init_from
    num_hidden_layers: int | None
    num_attention_heads: int | None
    intermediate_size: int | None
    dropout: float | None  # hidden and attention dropout of a model from scratch; None with init_from
    # None: a BERT from scratch. Else the pretrained encoder to continue (hub id, folder or
    # "pip:<package>"), for continual (task-adaptive) pre-training, Table 1.
    init_from: str | None = None
    # What every strategy gets equal per step (fem.collation.MATCHES): "rows" (compute; K-copy
    # strategies take rows_per_step / K sequences) or "sequences" (data; K-copy strategies do K x the rows).
    match: str = "rows"
    # What a row predicts from what (fem.registry.OBJECTIVES; fem/augmented.py): "mlm" is BERT's.
    objective: str = "mlm"
    # None: p is mask_ratio throughout. {"start": p0, "end": p1}: p decays linearly from p0 at the
    # first step to p1 at the last (Ankner et al. 2024; fem.collation.mask_ratio_at).
    mask_ratio_schedule: dict[str, float] | None = None
    # Block lengths of the `block` strategy (UniLMv2): a block is a span of length
    # U{min_length..max_length} with probability span_probability, else one token.
    block: dict[str, float] = field(default_factory=lambda: {"span_probability": 0.4, "min_length": 2, "max_length": 6})
    # MASS (fem/mass.py): the fragment strategy's share of a row's maskable tokens, the decoder's layers.
    mass: dict[str, float] = field(default_factory=lambda: {"fragment_ratio": 0.5, "decoder_layers": 1})
    # LICHEE (fem/lichee.py): coarse vocabulary size, fusion of fine and coarse embeddings, longest word.
    lichee: dict = field(default_factory=lambda: {"coarse_vocab_size": 2048, "fusion": "sum", "max_pieces": 8})
    # KgPLM (fem/kgplm.py): the discriminator's loss weight and the generator's sampling temperature.
    kgplm: dict = field(default_factory=lambda: {"disc_weight": 50.0, "temperature": 1.0})
    # objective lichee: the coarse vocabulary file (`fem coarse-vocab`; fem/coarse_vocab.py)
    coarse_vocab: str | None = None
    # strategy salient_span: the folder of the entity spans (`fem entities`; fem/entities.py)
    entities: str | None = None


@dataclass(frozen=True)
class PretrainImplementation:
    """Speed and robustness settings of a pre-training run: they must not change the
    science. (Gradient accumulation gives the same gradient up to floating-point rounding,
    but dropout then draws its random numbers in another order.)"""

    threads: int = 1  # CPU threads
    accumulation_steps: int = 1  # micro-batches per optimizer step (per process under torchrun)
    resume_every: int = 100  # steps between resumable training states (0: never)
    live_metrics: bool = True  # DVCLive appends to curves/ while the run trains (fem/live_metrics.py)
    # The GPU fast path; each switch changes results by floating-point rounding only.
    bf16: bool = False  # bfloat16 autocast of the forward pass (weights, optimizer stay float32)
    compile: bool = False  # torch.compile the encoder
    attention: str = "sdpa"  # "sdpa": PyTorch's fused scaled_dot_product_attention; "eager": plain matmuls
    fused_adamw: bool = False  # AdamW as one fused kernel over all parameters
    pin_memory: bool = False  # page-locked host memory for the step's rows, copied asynchronously (CUDA)
    peak_tflops: float | None = None  # per-device peak for MFU; None: known GPUs by name (CPU: no MFU)


@dataclass(frozen=True)
class FinetuneSettings:
    """Settings of one fine-tuning run (the config's finetune keys plus the seed)."""

    seed: int
    max_train_examples: int | None
    max_eval_examples: int | None
    max_length: int
    epochs: int
    batch_size: int
    learning_rate: float
    warmup_ratio: float
    weight_decay: float


@dataclass(frozen=True)
class SquadSettings:
    """Settings of one extractive-QA (SQuAD) fine-tuning run (the config's finetune.squad
    keys plus the seed and the learning rate of this run)."""

    seed: int
    max_train_examples: int | None  # seeded subsample of the training questions; None = all
    max_eval_examples: int | None  # first N dev questions; None = all
    max_length: int  # tokens per feature (question + context window), e.g. 384
    doc_stride: int  # tokens shared by consecutive windows of a long context, e.g. 128
    max_answer_length: int  # longest predicted answer, in tokens, e.g. 30
    n_best: int  # start and end candidates kept per feature, e.g. 20
    no_answer_threshold: float  # v2: predict "" when null score - best span score > this
    epochs: int
    batch_size: int
    learning_rate: float
    warmup_ratio: float
    weight_decay: float


@dataclass(frozen=True)
class VarianceSettings:
    """Settings of one gradient-variance analysis (the config's variance keys, plus the
    checkpoint's mask_ratio and segments)."""

    mask_ratio: float  # p; the random_kseq estimator masks round(p * n) positions
    segments: int | str  # K, or "auto" = round(1/p)
    sequences: int  # held-out blocks the replicates draw from (the first N of validation.npy)
    hamming_sequences: int  # sequences of the covariance-vs-Hamming analysis (the first ones)
    pairs_per_intersection: int  # mask pairs per sequence and intersection size, >= 2
    replicates: int  # simulations of each K-copy estimator
    bootstrap: int  # bootstrap resamples for the 95% intervals
    parameters: str  # "without_word_embeddings" | "all"
    projection_dim: int | None  # count-sketch dimension; None = full gradient of `parameters`
    seed: int  # of the analysis: which sequences and masks are drawn

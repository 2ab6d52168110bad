"""The names and sizes that several parts of shogitrain must agree on, in one place.

CLI choices, config validation, the models, the feature encoder, the loss, evaluation and export
read them from here. No torch import: the CLI and the config load it cheaply.
"""

ARCHS = ("bn", "nf", "nf-blog")
# build_model's options per arch (``model.options``) and their defaults, which reproduce the 2021 runs.
ARCH_OPTIONS = {
    "bn": {},
    "nf": {"alpha": 0.2, "skip_init": "zero", "eps": 1e-4},
    "nf-blog": {"alpha": 0.2, "blog_eps": 1e-4, "blog_skip_gain": True},
}
# Activations with a published NF gain γ (models/layers.py holds the gains); the BN net accepts them too.
ACTIVATIONS = (
    "relu", "silu", "gelu", "leaky_relu", "elu", "celu", "selu",
    "tanh", "sigmoid", "softplus", "relu6", "identity",
)
# Parameter groups every model declares (``model.parameter_groups()``, docs/internals.md);
# ``clip.agc_exclude``, ``optim.no_decay`` and GradInit select parameters by these names.
PARAMETER_GROUPS = (
    "stem", "blocks", "policy_head", "value_head", "policy_final", "value_final",
    "gains", "biases", "norm",
)
# Moves kept at most per game when its record states no limit ('Max_Moves:N): the game ends there, a
# draw. Real games are far shorter (floodgate plays to 256 or 512 moves, tournaments to 320).
DEFAULT_MAX_MOVES = 1000
AMP_MODES = ("off", "bf16", "fp16")  # 'auto' (config and CLI) resolves to fp16 on CUDA, off on CPU
OPTIMIZERS = ("sgd", "adam", "adamw", "radam", "nlcg")
SCHEDULES = ("constant", "step", "cosine")
# an epoch's order: a keyed permutation computed batch by batch (no memory per position), or numpy's
# permutation of the whole split (8 bytes a position; the order of runs made before the keyed one)
DATA_ORDERS = ("keyed", "permutation")
CLIP_MODES = ("none", "norm", "agc")

# dlshogi's input and output sizes: features1 planes, features2 planes, policy = 27 directions × 81 squares.
FEATURES1_PLANES = 62
FEATURES2_PLANES = 57
# dlshogi's NYUGYOKU_FEATURES build adds 2 × 31 entering-king planes to features2 (model.input2_planes).
NYUGYOKU_PLANES = 62
INPUT2_PLANES = (FEATURES2_PLANES, FEATURES2_PLANES + NYUGYOKU_PLANES)   # 57, 119
MOVE_DIRECTIONS = 27
SQUARES = 81
POLICY_SIZE = MOVE_DIRECTIONS * SQUARES  # 2187

# dlshogi: the engine eval as a win probability, value = sigmoid(eval / EVAL_SCALE).
EVAL_SCALE = 756.0864962951762
# dlshogi's weight of the eval target in the value loss: (1 − λ)·BCE(result) + λ·BCE(eval value).
VALUE_LAMBDA = 0.333

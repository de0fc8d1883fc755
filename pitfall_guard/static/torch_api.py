"""What the static side knows about the PyTorch API, by qualified name (torch is never imported)."""

from __future__ import annotations

import enum
import re

from pitfall_guard.static.names import last_part


class Kind(enum.Enum):
    """What a name holds, as far as training code is concerned."""

    MODEL = "model"
    OPTIMIZER = "optimizer"
    SCHEDULER = "scheduler"
    SCALER = "scaler"
    LOSS = "loss"
    LOADER = "loader"
    DATASET = "dataset"
    SAMPLER = "sampler"
    DEVICE = "device"


OPTIMIZER_CLASSES = frozenset(
    {
        "SGD",
        "Adam",
        "AdamW",
        "Adamax",
        "Adagrad",
        "Adadelta",
        "Adafactor",
        "ASGD",
        "LBFGS",
        "NAdam",
        "RAdam",
        "RMSprop",
        "Rprop",
        "SparseAdam",
        "Muon",
        "Optimizer",
    }
)
SCALER_CLASSES = frozenset({"GradScaler", "ShardedGradScaler"})
# Layers whose behaviour differs between train() and eval().
MODE_DEPENDENT_LAYERS = frozenset(
    {
        "Dropout",
        "Dropout1d",
        "Dropout2d",
        "Dropout3d",
        "AlphaDropout",
        "FeatureAlphaDropout",
        "BatchNorm1d",
        "BatchNorm2d",
        "BatchNorm3d",
        "SyncBatchNorm",
        "LazyBatchNorm1d",
        "LazyBatchNorm2d",
        "LazyBatchNorm3d",
        "Transformer",
        "TransformerEncoder",
        "TransformerDecoder",
        "TransformerEncoderLayer",
        "TransformerDecoderLayer",
    }
)
# Layers that differ between the modes only with an argument: recurrent layers and attention
# with `dropout` > 0 (their default is 0), instance norms with `track_running_stats=True`.
MODE_DEPENDENT_WITH = {
    "RNN": "dropout",
    "LSTM": "dropout",
    "GRU": "dropout",
    "MultiheadAttention": "dropout",
    "InstanceNorm1d": "track_running_stats",
    "InstanceNorm2d": "track_running_stats",
    "InstanceNorm3d": "track_running_stats",
}
NOT_MODELS = frozenset({"Parameter", "ParameterList", "ParameterDict", "Module"})
DTYPES = frozenset(
    {
        "float",
        "float32",
        "float64",
        "double",
        "half",
        "float16",
        "bfloat16",
        "int",
        "int8",
        "int16",
        "int32",
        "int64",
        "long",
        "short",
        "uint8",
        "bool",
        "complex64",
        "complex128",
        "float8_e4m3fn",
        "float8_e5m2",
        "cfloat",
        "cdouble",
    }
)
CREATION_FUNCTIONS = frozenset(
    {
        "zeros",
        "ones",
        "empty",
        "full",
        "rand",
        "randn",
        "randint",
        "arange",
        "linspace",
        "logspace",
        "eye",
        "tensor",
        "as_tensor",
        "randperm",
    }
)
NO_GRAD_CONTEXTS = frozenset(
    {
        "torch.no_grad",
        "torch.inference_mode",
        "torch.autograd.no_grad",
        "torch.autograd.grad_mode.no_grad",
        "torch.autograd.grad_mode.inference_mode",
        "torch.autograd.inference_mode",
    }
)
DATASET_INPUT_SHAPES = {
    "MNIST": (1, 28, 28),
    "FashionMNIST": (1, 28, 28),
    "KMNIST": (1, 28, 28),
    "EMNIST": (1, 28, 28),
    "QMNIST": (1, 28, 28),
    "CIFAR10": (3, 32, 32),
    "CIFAR100": (3, 32, 32),
    "SVHN": (3, 32, 32),
}

_OPTIMIZER_NAME = re.compile(r"optim|(^|_)opt(_|\d|$)|^opt[A-Z]", re.IGNORECASE)
_SCHEDULER_NAME = re.compile(r"sched", re.IGNORECASE)
_SCALER_NAME = re.compile(r"scaler", re.IGNORECASE)
_LOADER_NAME = re.compile(r"loader|dataloader|_dl$|^dl(_|$)", re.IGNORECASE)
_MODEL_NAME = re.compile(r"^(model|net|network|classifier|cnn|mlp)(_\w+|\d+)?$", re.IGNORECASE)


_TORCHTEXT_ITERATORS = frozenset({"BucketIterator", "Iterator", "BPTTIterator"})


def kind_of_constructor(qualified_name: str) -> Kind | None:
    """The kind of object that calling `qualified_name` builds, for the torch API."""
    name = last_part(qualified_name)
    if qualified_name.startswith("torch.optim.lr_scheduler."):
        return Kind.SCHEDULER
    if name in SCALER_CLASSES and qualified_name.startswith("torch."):
        return Kind.SCALER
    if qualified_name.startswith("torch.optim.") and name in OPTIMIZER_CLASSES:
        return Kind.OPTIMIZER
    if qualified_name.startswith("torch.utils.data") and name == "DataLoader":
        return Kind.LOADER
    if name == "splits" and qualified_name.startswith("torchtext."):
        name = last_part(qualified_name[: -len(".splits")])  # `BucketIterator.splits(...)`
    if qualified_name.startswith("torchtext.") and name in _TORCHTEXT_ITERATORS:
        return Kind.LOADER  # the legacy torchtext batches: `val_iter = BucketIterator(...)`
    if name == "DistributedSampler" and qualified_name.startswith("torch."):
        return Kind.SAMPLER
    if qualified_name == "torch.device":
        return Kind.DEVICE
    if qualified_name.startswith("torchvision.datasets."):
        return Kind.DATASET
    if qualified_name.startswith("torchvision.models.") and name[:1].islower():
        return Kind.MODEL
    if qualified_name.startswith("torch.nn.") and name[:1].isupper():
        if name.endswith("Loss"):
            return Kind.LOSS
        if name not in NOT_MODELS:
            return Kind.MODEL
    return None


def kind_from_name(name: str) -> Kind | None:
    """A guess from the variable name alone, used only when no constructor was seen."""
    leaf = last_part(name)
    if _SCALER_NAME.search(leaf):
        return Kind.SCALER
    if _SCHEDULER_NAME.search(leaf):
        return Kind.SCHEDULER
    if _OPTIMIZER_NAME.search(leaf):
        return Kind.OPTIMIZER
    if _LOADER_NAME.search(leaf):
        return Kind.LOADER
    # `model` or `self.model`, not `solver.model`: an attribute of something else is a guess
    # too far.
    if _MODEL_NAME.match(leaf) and name.count(".") <= 1 and name.split(".")[0] in (leaf, "self"):
        return Kind.MODEL
    return None


def is_no_grad_context(qualified_name: str | None) -> bool:
    return qualified_name in NO_GRAD_CONTEXTS


def is_creation_function(qualified_name: str) -> bool:
    module, _, name = qualified_name.rpartition(".")
    return module == "torch" and name in CREATION_FUNCTIONS


def is_cross_entropy(qualified_name: str | None) -> bool:
    return qualified_name in (
        "torch.nn.CrossEntropyLoss",
        "torch.nn.functional.cross_entropy",
        "torch.nn.modules.loss.CrossEntropyLoss",
    )


def is_softmax(qualified_name: str | None) -> bool:
    return qualified_name in (
        "torch.softmax",
        "torch.nn.functional.softmax",
        "torch.nn.Softmax",
        "torch.special.softmax",
    )

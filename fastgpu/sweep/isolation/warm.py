"""What the fork server may import ahead of a point: the packages every point needs, never the user's.

A point reports the modules it imported; the server imports those of the allow-list before the next fork, so later
points start with torch, FastGPU, Hydra and W&B already imported (seconds saved a point), and with none of the
user's code, whose import may touch CUDA (`DEVICE = "cuda" if torch.cuda.is_available() else "cpu"`) or hold state.
"""

import importlib
import sys
import warnings

ALLOWED = (
    "torch",
    "torchvision",
    "torchao",
    "numpy",
    "fastgpu",
    "hydra",
    "omegaconf",
    "wandb",
    "tqdm",
    "psutil",
    "PIL",
)


def allowed(name: str, packages=ALLOWED) -> bool:
    top = name.split(".", 1)[0]
    return top in packages or (top in sys.stdlib_module_names and not name.startswith("__"))


def import_warm(names, packages=ALLOWED) -> None:
    """Import the allowed ones of `names`, in their order; one that will not import here is left to the points."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            if name in sys.modules or not allowed(name, packages):
                continue
            try:
                importlib.import_module(name)
            except BaseException:  # noqa: BLE001 - ImportError, or a module with import-time conditions
                pass

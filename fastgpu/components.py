"""FastGPU's one way to build a component (model, dataset, parallel wrapper, compression method, optimizer,
scheduler): Hydra's `_target_` + `hydra.utils.instantiate`, so a user's own class fits the same slot."""

from fastgpu.errors import FastGPUError, described


def build(node, group: str, own_keys=(), **kwargs):
    """`instantiate` a config node, less the keys FastGPU reads itself (`own_keys`): every other key is the target's
    keyword argument, interpolations resolved (`${data.num_classes}`). A target that does not import, or fails while
    it builds, is one FastGPUError naming the key, the target and the cause."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    spec = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    target = spec.get("_target_")
    if not target:
        raise FastGPUError(f"{group}._target_ is not set; name the class or function that builds it")
    for key in own_keys:
        spec.pop(key, None)
    try:
        return instantiate(spec, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, FastGPUError):
            raise cause from None
        if str(exc).startswith("Error locating target"):
            raise _not_importable(group, target, cause) from None
        raise FastGPUError(
            f"{group}._target_={target} failed to build ({described(cause, 200)}); check the {group} keys against "
            "its arguments"
        ) from None


TARGETS = ("model", "data", "parallel.wrap", "compression.method", "optimizer", "scheduler")  # the nodes built so


def check_targets(cfg, keys=TARGETS) -> None:
    """Every `_target_` imports: checked before a run writes anything, so a misspelt target leaves no run dir."""
    from hydra._internal.utils import _locate  # hydra.utils.get_object, less its multi-line log of the failure
    from omegaconf import OmegaConf

    for key in keys:
        target = OmegaConf.select(cfg, f"{key}._target_", default=None)
        if target is None:
            continue
        try:
            _locate(target)
        except Exception as exc:
            raise _not_importable(key, target, exc) from None


def _not_importable(group: str, target: str, cause: BaseException) -> FastGPUError:
    while cause.__cause__ is not None:  # Hydra's ImportError wraps the one that names the missing module
        cause = cause.__cause__
    return FastGPUError(
        f"{group}._target_={target} cannot be imported ({described(cause, 160)}); check the dotted name and that its "
        "package is installed or on PYTHONPATH"
    )

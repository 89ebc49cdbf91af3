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


# the nodes built so
TARGETS = ("model", "data", "task", "parallel.wrap", "compression.method", "optimizer", "scheduler")


def component_name(node) -> str:
    """A component's name: its `name` key, or the last part of its `_target_` (a user's file may have no name)."""
    name = node.get("name") if node is not None else None
    return name or str(node.get("_target_") or "none").rpartition(".")[2]


def check_targets(cfg, keys=TARGETS) -> None:
    """Every `_target_` is set and imports, and every key its node interpolates exists: checked before a run writes
    anything, so a misspelt target or a model that does not fit the data leaves no run dir."""
    from hydra._internal.utils import _locate  # hydra.utils.get_object, less its multi-line log of the failure
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationKeyError, MissingMandatoryValue

    for key in keys:
        node = OmegaConf.select(cfg, key, default=None)
        if not OmegaConf.is_config(node) or "_target_" not in node.keys():  # `in` is False for a ??? value
            continue
        if OmegaConf.is_missing(node, "_target_"):
            raise FastGPUError(
                f"{key}._target_ is not set; name the class or function that builds it, e.g. "
                f"{key}._target_=mypkg.module.Name"
            )
        try:
            OmegaConf.to_container(node, resolve=True)
        except InterpolationKeyError as exc:
            missing = str(exc).split("'")[1] if "'" in str(exc) else str(exc)
            chosen = f"{key}={node.get('name')}" if node.get("name") else key
            raise FastGPUError(
                f"{chosen} reads {missing}, which the chosen data does not have: choose a model and a task that fit "
                "the data (for text: model=gpt task=language_model)"
            ) from None
        except MissingMandatoryValue as exc:
            raise FastGPUError(f"{key}: {str(exc).splitlines()[0]}; set it on the command line") from None
        try:
            _locate(node._target_)
        except Exception as exc:
            raise _not_importable(key, node._target_, exc) from None


def _not_importable(group: str, target: str, cause: BaseException) -> FastGPUError:
    module_name, _, attribute = target.rpartition(".")
    try:  # the module imports, but has no such name: say so (Python's own error blames the package)
        import importlib

        module = importlib.import_module(module_name)
    except Exception:
        module = None
    if module is not None and not hasattr(module, attribute):
        from difflib import get_close_matches

        near = get_close_matches(attribute, [n for n in dir(module) if not n.startswith("_")], n=1)
        hint = f"did you mean {module_name}.{near[0]}?" if near else "check the name"
        return FastGPUError(f"{group}._target_={target} cannot be imported ({module_name} has no {attribute}); {hint}")
    while cause.__cause__ is not None:  # Hydra's ImportError wraps the one that names the missing module
        cause = cause.__cause__
    return FastGPUError(
        f"{group}._target_={target} cannot be imported ({described(cause, 160)}); check the dotted name and that its "
        "package is installed or on PYTHONPATH"
    )

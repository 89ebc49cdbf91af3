"""Datasets and loaders. A data config's `_target_` builds the (train, val) datasets: digits (shipped), synthetic,
CIFAR-10 and ImageFolder from local paths, or a user's own; FastGPU's loaders batch, shard and order them."""

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    Sampler,
    SequentialSampler,
    TensorDataset,
    default_collate,
)
from torch.utils.data.distributed import DistributedSampler

from fastgpu.components import build, component_name
from fastgpu.config import DATA_LOADER_DEFAULTS
from fastgpu.errors import FastGPUError, described

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DataBundle:
    train: DataLoader
    val: DataLoader
    train_sampler: "ResumableSampler"  # set_epoch(epoch, skip) before each epoch
    skipped: object = None  # a shared counter of unreadable samples skipped (data.on_corrupt=skip), or None
    pairs: bool = False  # every batch is (input, target) already: no task split needed

    def skipped_samples(self):
        return None if self.skipped is None else self.skipped.value


class EpochShuffle(Sampler):
    """A shuffle that depends only on (seed, epoch), so a restarted run sees the same order."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class ReadyBatches:
    """A user's ready loader (or an iterable dataset's): its own order and sharding. A resumed epoch skips the
    batches already trained; its `set_epoch` is called where it has one (a DistributedSampler inside)."""

    def __init__(self, loader, batch_size: int):
        self.loader, self.batch_size, self.skip = loader, batch_size, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        self.skip = skip // self.batch_size

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.skip, None)

    def __len__(self) -> int:
        return len(self.loader)  # a TypeError for a stream without a length: the run then needs trainer.max_steps


class ResumableSampler(Sampler):
    """The training order of an epoch, less its first `skip` samples (those a resumed run already saw)."""

    def __init__(self, base: Sampler):
        self.base, self.skip = base, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return itertools.islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


# what FastGPU reads itself from the data node (its loaders); every other key is the dataset target's argument
LOADER_KEYS = ("name", "epochs", *DATA_LOADER_DEFAULTS)  # epochs: the trainer's default for this data


def build_data(cfg, seed: int, rank: int = 0, world_size: int = 1, device=None) -> DataBundle:
    """The data node's `_target_` builds (train, val) datasets; FastGPU's loaders batch, shard and order them."""
    if cfg.loader == "dali":
        return _dali(cfg, seed, rank, world_size, device)
    built = build(cfg, "data", own_keys=LOADER_KEYS)
    if not (isinstance(built, (tuple, list)) and len(built) == 2):
        raise FastGPUError(
            f"data._target_={cfg._target_} returned a {type(built).__name__}; return (train, val): two datasets "
            "(map-style or iterable) or two ready loaders"
        )
    train_set, val_set = built
    if isinstance(train_set, DataLoader) or not hasattr(train_set, "__getitem__"):  # ready loaders: used as they are
        train = ReadyBatches(train_set, cfg.batch_size)
        return DataBundle(train, val_set, train)
    if isinstance(train_set, IterableDataset):  # batched as it streams; sharding across ranks is the dataset's job
        kwargs = _loader_kwargs(cfg, device)
        train = ReadyBatches(DataLoader(train_set, cfg.batch_size, drop_last=cfg.drop_last, **kwargs), cfg.batch_size)
        return DataBundle(train, DataLoader(val_set, cfg.eval_batch_size, **kwargs), train)
    if isinstance(train_set, TensorDataset):
        if cfg.device_resident and device is not None:
            if cfg.num_workers or cfg.pin_memory:
                raise FastGPUError("data.device_resident=true needs data.num_workers=0 and data.pin_memory=false")
            train_set, val_set = (TensorDataset(*(t.to(device) for t in d.tensors)) for d in (train_set, val_set))
        return _tensor_loaders(cfg, train_set, val_set, seed, rank, world_size, device)
    if cfg.device_resident:
        raise FastGPUError(
            f"data.device_resident=true works for in-memory data (digits, synthetic), not data={component_name(cfg)}"
        )
    return _item_loaders(cfg, train_set, val_set, seed, rank, world_size, device)


def _dali(cfg, seed, rank, world_size, device) -> DataBundle:
    if cfg.get("name") != "imagefolder":
        raise FastGPUError(
            "data.loader=dali decodes image folders; use it with data=imagefolder "
            f"(data={component_name(cfg)} is loaded by torch), or set data.loader=torch"
        )
    build(cfg, "data", own_keys=LOADER_KEYS)  # the same checks of data.root and its classes
    from fastgpu.zoo.dali import dali_loaders

    return dali_loaders(cfg, Path(cfg.root), seed, rank, world_size, torch.device(device) if device else None)


DIGITS_FILE = Path(__file__).with_name("digits.npz")  # scikit-learn's 8x8 digits (1,797 images), shipped as an array


def digits(seed: int, val_fraction: float = 0.2, num_classes: int = 10, channels: int = 1, image_size: int = 8):
    """The 8x8 handwritten digits, split by class in proportion (val_fraction, fixed by the seed), standardised with
    the training split's mean and standard deviation."""
    if (channels, image_size, num_classes) != (1, 8, 10):
        raise FastGPUError(
            "data=digits is 1x8x8 with 10 classes; leave data.channels/image_size/num_classes as they are"
        )
    import numpy as np

    with np.load(DIGITS_FILE) as arrays:
        images, labels = arrays["images"].astype(np.float32), arrays["labels"].astype(np.int64)
    train, val = stratified_split(labels, val_fraction, seed)
    mean, std = images[train].mean(), images[train].std()

    def to_tensors(index):
        x = torch.from_numpy((images[index] - mean) / std).reshape(-1, 1, 8, 8)
        return TensorDataset(x, torch.from_numpy(labels[index]))

    return to_tensors(train), to_tensors(val)


def stratified_split(labels, val_fraction: float, seed: int) -> tuple:
    """(train, val) indices: every class split in proportion, ceil(val_fraction * n) samples in val in all."""
    import numpy as np

    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    ideal = counts * val_fraction
    take = np.floor(ideal).astype(int)
    short = math.ceil(val_fraction * len(labels)) - int(take.sum())
    take[np.lexsort((rng.random(len(classes)), take - ideal))[:short]] += 1  # largest remainders first
    val = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]))
    return np.setdiff1d(np.arange(len(labels)), val), val


def synthetic(seed: int, train_samples: int, val_samples: int, num_classes: int, channels: int, image_size: int):
    """Random images and labels: for speed and memory, never accuracy."""
    generator = torch.Generator().manual_seed(seed)
    shape = (channels, image_size, image_size)

    def make(n):
        if n <= 0:
            raise FastGPUError("data=synthetic needs data.train_samples and data.val_samples > 0")
        x = torch.randn((n, *shape), generator=generator)
        y = torch.randint(0, num_classes, (n,), generator=generator)
        return TensorDataset(x, y)

    return make(train_samples), make(val_samples)


# data that lives under data.root: (what must be there, what it is)
ROOTS = {
    "cifar10": ("cifar-10-batches-py", "the extracted CIFAR-10 python archive"),
    "imagefolder": ("train", "an ImageNet-style folder with train/<class>/ and val/<class>/"),
}
DIGITS_SAMPLES = 1797


def _require_root(name: str, given, expected: str, hint: str) -> Path:
    if given in (None, "", "???"):
        raise FastGPUError(f"data={name} needs data.root=/path/to/dataset ({hint}); FastGPU never downloads data")
    root = Path(given).expanduser()
    if root.exists() and not root.is_dir():
        raise FastGPUError(f"data.root={given} is a file; point it at the dataset's folder ({hint})")
    if not (root / expected).exists():
        raise FastGPUError(
            f"data.root={given}: expected {root / expected} ({hint}); "
            "FastGPU never downloads data, point data.root at a local copy"
        )
    if name == "imagefolder" and not (root / "val").exists():
        raise FastGPUError(f"data.root={given}: expected {root / 'val'} beside {root / 'train'}")
    return root


def known_train_samples(cfg):
    """The training set's size where it is known without loading it (digits, synthetic), else None."""
    if cfg.get("name") == "digits":
        return DIGITS_SAMPLES - math.ceil(cfg.val_fraction * DIGITS_SAMPLES)  # stratified_split's rounding
    if cfg.get("name") == "synthetic":
        return cfg.train_samples
    return None


def check_data_source(cfg, ranks: int = 1, accumulate: int = 1) -> None:
    """Before a run writes anything: the dataset's folder, and a batch that fits the training set on each rank."""
    if cfg.get("name") in ROOTS:
        from omegaconf import OmegaConf

        _require_root(cfg.name, None if OmegaConf.is_missing(cfg, "root") else cfg.root, *ROOTS[cfg.name])
    train = known_train_samples(cfg)
    if train and cfg.drop_last and cfg.batch_size * accumulate > train // ranks:
        raise FastGPUError(
            f"data.batch_size={cfg.batch_size} x trainer.accumulate_grad_batches={accumulate} is larger than the "
            f"training set on each rank ({train // ranks} of {train} samples over {ranks} rank(s)); lower either"
        )


def cifar10(root: str, num_classes: int = 10, channels: int = 3, image_size: int = 32):
    """CIFAR-10's python archive from a local folder: random crop and flip for training, normalised."""
    if (channels, image_size, num_classes) != (3, 32, 10):
        raise FastGPUError(
            "data=cifar10 is 3x32x32 with 10 classes; leave data.channels/image_size/num_classes as they are"
        )
    from torchvision import datasets
    from torchvision import transforms as T

    root = _require_root("cifar10", root, *ROOTS["cifar10"])
    normalize = T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    val_tf = T.Compose([T.ToTensor(), normalize])
    return (
        datasets.CIFAR10(str(root), train=True, transform=train_tf, download=False),
        datasets.CIFAR10(str(root), train=False, transform=val_tf, download=False),
    )


def imagefolder_transforms(image_size: int):
    from torchvision import transforms as T

    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    resize = round(image_size * 256 / 224)  # 256 for the standard 224 crop
    train_tf = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    val_tf = T.Compose([T.Resize(resize), T.CenterCrop(image_size), T.ToTensor(), normalize])
    return train_tf, val_tf


def imagefolder(root: str, num_classes: int, image_size: int = 224, channels: int = 3, on_corrupt: str = "fail"):
    """root/train/<class>/ and root/val/<class>/ images, with an unreadable file named or skipped (on_corrupt)."""
    given, root = root, _require_root("imagefolder", root, *ROOTS["imagefolder"])
    train_tf, val_tf = imagefolder_transforms(image_size)
    train_set, val_set = _image_folder(root / "train", train_tf), _image_folder(root / "val", val_tf)
    if len(train_set.classes) != num_classes:
        raise FastGPUError(
            f"data.root={given} has {len(train_set.classes)} classes but data.num_classes={num_classes}; "
            f"set data.num_classes={len(train_set.classes)}"
        )
    skipped = torch.multiprocessing.Value("q", 0)  # shared with the loader's worker processes
    return CheckedImages(train_set, on_corrupt, skipped), CheckedImages(val_set, on_corrupt, skipped)


def _image_folder(folder: Path, transform):
    from torchvision import datasets

    try:
        return datasets.ImageFolder(str(folder), transform=transform)
    except FileNotFoundError as exc:  # no class folders, or classes without a single image
        raise FastGPUError(
            f"{folder}: {described(exc, 160)}; put images in {folder}/<class>/*.jpg, one folder per class"
        ) from None


class CheckedImages(Dataset):
    """An ImageFolder whose unreadable files (corrupt, truncated) are named: the run fails on the first one
    (data.on_corrupt=fail), or skips it and counts it (skip: the batch is one sample short)."""

    def __init__(self, folder, on_corrupt: str, skipped):
        self.folder, self.on_corrupt, self.skipped = folder, on_corrupt, skipped

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index):
        try:
            return self.folder[index]
        except (OSError, SyntaxError, ValueError) as exc:  # what PIL raises for a damaged or truncated image
            path = self.folder.samples[index][0]
            if self.on_corrupt != "skip":
                raise FastGPUError(
                    f"cannot read image {path} ({described(exc, 120)}); replace or remove it, "
                    "or set data.on_corrupt=skip to skip unreadable files"
                ) from None
            with self.skipped.get_lock():
                self.skipped.value += 1
            return None


def collate_readable(batch):
    """default_collate over the samples that could be read (CheckedImages gives None for a skipped one)."""
    return default_collate([sample for sample in batch if sample is not None])


class RankShard(Sampler):
    """Evaluation's share of one rank: every `world_size`-th sample from `rank`, without DistributedSampler's padding,
    which repeats samples so that every rank gets as many, and so counts them twice in the summed metrics."""

    def __init__(self, size: int, rank: int, world_size: int):
        self.indices = range(rank, size, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _val_sampler(dataset, rank, world_size):
    return RankShard(len(dataset), rank, world_size) if world_size > 1 else SequentialSampler(dataset)


def _sampler(dataset, shuffle, seed, rank, world_size, drop_last=False):
    if world_size > 1:
        sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
    elif shuffle:
        sampler = EpochShuffle(len(dataset), seed)
    else:
        return SequentialSampler(dataset)
    return ResumableSampler(sampler)


def _loader_kwargs(cfg, device):
    # pinned host memory only helps copies to a GPU
    pin = cfg.pin_memory and device is not None and torch.device(device).type == "cuda"
    kwargs = dict(num_workers=cfg.num_workers, pin_memory=pin)
    if cfg.num_workers > 0:
        kwargs["persistent_workers"] = cfg.persistent_workers
        if cfg.prefetch_factor is not None:
            kwargs["prefetch_factor"] = cfg.prefetch_factor
    return kwargs


def _tensor_loaders(cfg, train_set, val_set, seed, rank, world_size, device):
    # In-memory tensors are indexed a whole batch at a time (one gather instead of
    # batch_size __getitem__ calls and a collate), as a hand-tuned plain loop would.
    train_sampler = _sampler(train_set, True, seed, rank, world_size)
    val_sampler = _val_sampler(val_set, rank, world_size)
    if train_set.tensors[0].device.type == "cuda":
        return DataBundle(
            DeviceBatches(train_set, train_sampler, cfg.batch_size, cfg.drop_last),
            DeviceBatches(val_set, val_sampler, cfg.eval_batch_size, False),
            train_sampler,
            pairs=len(train_set.tensors) == 2,
        )
    kwargs = _loader_kwargs(cfg, device)
    train = DataLoader(
        train_set, sampler=BatchSampler(train_sampler, cfg.batch_size, cfg.drop_last), batch_size=None, **kwargs
    )
    val = DataLoader(val_set, sampler=BatchSampler(val_sampler, cfg.eval_batch_size, False), batch_size=None, **kwargs)
    return DataBundle(train, val, train_sampler, pairs=len(train_set.tensors) == 2)


class DeviceBatches:
    """Batches of a dataset that lives on the GPU, gathered on the GPU.

    Indexing a CUDA tensor with a Python list copies the index to the device and waits for it, every
    batch. Here the epoch's order goes to the device once, from pinned memory without waiting, and each
    batch is an `index_select` with a slice of it: the host never waits for the device.
    """

    def __init__(self, dataset: TensorDataset, sampler, batch_size: int, drop_last: bool):
        self.tensors, self.sampler, self.batch_size, self.drop_last = dataset.tensors, sampler, batch_size, drop_last

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        device = self.tensors[0].device
        order = torch.tensor(list(self.sampler), dtype=torch.long)
        order = order.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else order
        for i in range(len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield tuple(t.index_select(0, index) for t in self.tensors)


def _item_loaders(cfg, train_set: Dataset, val_set: Dataset, seed, rank, world_size, device):
    train_sampler = _sampler(train_set, True, seed, rank, world_size, drop_last=cfg.drop_last)
    val_sampler = _val_sampler(val_set, rank, world_size)
    kwargs = _loader_kwargs(cfg, device)
    if isinstance(train_set, CheckedImages):
        kwargs["collate_fn"] = collate_readable
    train = DataLoader(train_set, batch_size=cfg.batch_size, sampler=train_sampler, drop_last=cfg.drop_last, **kwargs)
    val = DataLoader(val_set, batch_size=cfg.eval_batch_size, sampler=val_sampler, **kwargs)
    return DataBundle(train, val, train_sampler, getattr(train_set, "skipped", None))

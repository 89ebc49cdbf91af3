"""`data.loader=dali`: ImageFolder data decoded and augmented by an NVIDIA DALI pipeline instead of DataLoader
workers (`pip install -e '.[dali]'`). On a GPU the JPEGs are decoded there (`mixed` decoder: nvJPEG) and cropped,
flipped and normalised on the device, so the CPU stops being what limits real ImageNet speed; on a CPU the same
pipeline runs on CPU operators (what the tests run).

The same transforms as the DataLoader path: RandomResizedCrop + flip for training, resize to 256/224 of the
size + centre crop for validation, ImageNet normalisation. Each rank reads its own shard. DALI shuffles with its
own seeded buffer: a run resumed mid-epoch starts that epoch's order again rather than skipping what it saw.
An epoch left early is read to its end (DALI cannot reset mid-epoch), outside the timed steps.
"""

from pathlib import Path

from fastgpu.errors import FastGPUError
from fastgpu.zoo.data import IMAGENET_MEAN, IMAGENET_STD, DataBundle


class DaliBatches:
    """(images, labels) per batch from a DALI iterator: exactly `len()` batches per epoch. DALI cannot reset an
    iterator mid-epoch, so an epoch the loop leaves early (max_steps, an incomplete last accumulation) is read to its
    end when the loop lets go of it: the next epoch starts at its own start, not among the leftover batches."""

    def __init__(self, iterator, batches: int):
        self.iterator, self.batches = iterator, batches

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        produced, ended = 0, False
        try:
            while produced < self.batches:
                try:
                    out = next(self.iterator)
                except StopIteration:
                    ended = True
                    return
                produced += 1
                yield out[0]["x"], out[0]["y"].squeeze(-1).long()
        finally:
            while not ended:  # left early: read the rest of DALI's epoch (auto_reset restarts it at its end)
                try:
                    next(self.iterator)
                except StopIteration:
                    ended = True


class DaliEpochs:
    """The DataBundle's `train_sampler`: DALI keeps its own order, so set_epoch only records the call."""

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip


def dali_loaders(cfg, root: Path, seed: int, rank: int, world_size: int, device) -> DataBundle:
    try:
        from nvidia.dali import fn, pipeline_def, types
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
    except ImportError:
        raise FastGPUError("data.loader=dali needs NVIDIA DALI: pip install -e '.[dali]'") from None

    gpu = device is not None and device.type == "cuda"
    size = cfg.image_size
    mean, std = [255 * m for m in IMAGENET_MEAN], [255 * s for s in IMAGENET_STD]

    @pipeline_def
    def images(folder: str, training: bool):
        jpegs, labels = fn.readers.file(
            file_root=folder,
            random_shuffle=training,
            shard_id=rank,
            num_shards=world_size,
            pad_last_batch=not training,
            name="Reader",
        )
        decoded = fn.decoders.image(jpegs, device="mixed" if gpu else "cpu", output_type=types.RGB)
        if training:
            decoded = fn.random_resized_crop(decoded, size=size)
            mirror = fn.random.coin_flip()
        else:
            decoded = fn.resize(decoded, resize_shorter=round(size * 256 / 224))
            mirror = 0
        out = fn.crop_mirror_normalize(
            decoded, dtype=types.FLOAT, output_layout="CHW", crop=(size, size), mean=mean, std=std, mirror=mirror
        )
        return out, labels

    def loader(split: str, batch: int, training: bool) -> DaliBatches:
        pipe = images(
            folder=str(root / split),
            training=training,
            batch_size=batch,
            num_threads=max(1, cfg.num_workers),
            device_id=(device.index or 0) if gpu else None,
            seed=seed + rank,
            prefetch_queue_depth=cfg.prefetch_factor or 2,
        )
        pipe.build()
        policy = LastBatchPolicy.DROP if training and cfg.drop_last else LastBatchPolicy.PARTIAL
        iterator = DALIGenericIterator(
            [pipe], ["x", "y"], reader_name="Reader", last_batch_policy=policy, auto_reset=True
        )
        shard = pipe.reader_meta("Reader")["epoch_size_padded"] // world_size
        batches = shard // batch if policy == LastBatchPolicy.DROP else -(-shard // batch)
        return DaliBatches(iterator, batches)

    return DataBundle(loader("train", cfg.batch_size, True), loader("val", cfg.eval_batch_size, False), DaliEpochs())

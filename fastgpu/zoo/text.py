"""Real English text that ships with every Python: the documentation topics of `pydoc_data.topics` (~465k
characters, the text behind `help('if')`), byte-level (vocabulary 256: any text, no tokenizer to ship), split by
position into a training part and a validation part that follows it."""

import torch
from torch.utils.data import TensorDataset

from fastgpu.errors import FastGPUError

VOCAB_SIZE = 256  # bytes


def topics_text() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def text(block_size: int = 128, val_fraction: float = 0.1, vocab_size: int = VOCAB_SIZE, path=None):
    """(train, val) of (input_ids, labels) windows of `block_size` bytes, labels shifted by one; windows do not overlap
    (each byte is a target once per epoch). `path`: a UTF-8 text file of your own instead of the topics."""
    if vocab_size != VOCAB_SIZE:
        raise FastGPUError(f"data=text is byte-level (vocab_size {VOCAB_SIZE}); leave data.vocab_size as it is")
    if path is None:
        raw = topics_text().encode("utf-8")
    else:
        from pathlib import Path

        if not Path(path).is_file():
            raise FastGPUError(f"data.path={path} is not a file; point it at a UTF-8 text file, or leave it null")
        raw = Path(path).read_bytes()
    ids = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
    split = int(len(ids) * (1 - val_fraction))
    parts = ids[:split], ids[split:]
    if min(len(p) for p in parts) <= block_size + 1:
        raise FastGPUError(f"data.block_size={block_size} is longer than the validation text; lower it")
    return tuple(_windows(part, block_size) for part in parts)


def _windows(ids: torch.Tensor, block_size: int) -> TensorDataset:
    count = (len(ids) - 1) // block_size
    x = ids[: count * block_size].view(count, block_size)
    y = ids[1 : count * block_size + 1].view(count, block_size)
    return TensorDataset(x, y)

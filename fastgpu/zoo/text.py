"""Real English text that ships with every Python: the documentation topics of `pydoc_data.topics` (~465k
characters, the text behind `help('if')`), byte-level (vocabulary 256: any text, no tokenizer to ship), split by
position into a training part and a validation part that follows it."""

import math

import torch
from torch.utils.data import TensorDataset

from fastgpu.errors import FastGPUError

VOCAB_SIZE = 256  # bytes


def topics_text() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def text(block_size: int = 128, val_fraction: float = 0.1, vocab_size: int = VOCAB_SIZE, path=None, encoding="utf-8"):
    """(train, val) of (input_ids, labels) windows of `block_size` bytes, labels shifted by one; windows do not overlap
    (each byte is a target once per epoch). `path`: a text file of your own instead of the topics, in `encoding`
    (trained on as UTF-8 bytes)."""
    if vocab_size != VOCAB_SIZE:
        raise FastGPUError(f"data=text is byte-level (vocab_size {VOCAB_SIZE}); leave data.vocab_size as it is")
    raw = topics_text().encode("utf-8") if path is None else read_text_file(path, encoding)
    needed = math.ceil((block_size + 2) / val_fraction)  # the validation part must hold one window and its target
    if len(raw) < needed:
        source = f"data.path={path} holds {len(raw):,} bytes" if path is not None else f"the text holds {len(raw):,}"
        raise FastGPUError(
            f"{source}; windows of data.block_size={block_size} with data.val_fraction={val_fraction} need at least "
            f"{needed:,}: use a longer file or lower data.block_size"
        )
    ids = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
    split = int(len(ids) * (1 - val_fraction))
    return tuple(_windows(part, block_size) for part in (ids[:split], ids[split:]))


def read_text_file(path, encoding: str) -> bytes:
    """The file's text as UTF-8 bytes; a file that is not text in `encoding` (or is binary) is one line."""
    from pathlib import Path

    if not Path(path).is_file():
        raise FastGPUError(f"data.path={path} is not a file; point it at a text file, or leave it null")
    raw = Path(path).read_bytes()
    if b"\0" in raw[:65536]:
        raise FastGPUError(f"data.path={path} is a binary file (it holds NUL bytes), not text; point it at a text file")
    try:
        decoded = raw.decode(encoding)
    except LookupError:
        raise FastGPUError(f"data.encoding={encoding} is not an encoding Python knows; e.g. utf-8, latin-1") from None
    except UnicodeDecodeError as exc:
        raise FastGPUError(
            f"data.path={path} is not {encoding} text (byte {exc.start}: {exc.reason}); convert it, or set "
            "data.encoding to its encoding (e.g. data.encoding=latin-1)"
        ) from None
    return decoded.encode("utf-8")


def _windows(ids: torch.Tensor, block_size: int) -> TensorDataset:
    count = (len(ids) - 1) // block_size
    x = ids[: count * block_size].view(count, block_size)
    y = ids[1 : count * block_size + 1].view(count, block_size)
    return TensorDataset(x, y)

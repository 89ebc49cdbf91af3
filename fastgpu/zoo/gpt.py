"""A nanoGPT-shaped decoder: token + position embeddings, pre-LayerNorm blocks of causal self-attention
(`scaled_dot_product_attention`, kernel chosen by `attention`) and a GELU MLP, a final LayerNorm, and an output
layer tied to the token embedding. Initialised as nanoGPT does (normal 0.02; residual projections 0.02/sqrt(2L))."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from fastgpu.errors import FastGPUError

# model.attention -> torch.nn.attention.SDPBackend name; auto lets torch pick
ATTENTION_BACKENDS = {
    "auto": None,
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
    "math": "MATH",
}


def attention_context(attention: str):
    """A context that restricts scaled_dot_product_attention to the named kernel (or a null context for auto)."""
    import contextlib

    if attention not in ATTENTION_BACKENDS:
        raise FastGPUError(f"model.attention={attention!r} is not known; use one of {', '.join(ATTENTION_BACKENDS)}")
    backend = ATTENTION_BACKENDS[attention]
    if backend is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(getattr(SDPBackend, backend))


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, attention: str):
        super().__init__()
        if n_embd % n_head:
            raise FastGPUError(f"model.n_embd={n_embd} is not divisible by model.n_head={n_head}; change either")
        self.n_head, self.dropout, self.attention = n_head, dropout, attention
        attention_context(attention)  # an unknown name fails at build, not at the first step
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        with attention_context(self.attention):
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
            )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float, bias: bool):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, attention: str):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias, attention)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token ids (batch, time <= block_size) -> logits (batch, time, vocab_size)."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.0,
        bias: bool = False,
        attention: str = "auto",
    ):
        super().__init__()
        self.block_size, self.n_layer, self.n_head, self.n_embd = block_size, n_layer, n_head, n_embd
        self.attention = attention
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias, attention) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied (https://paperswithcode.com/method/weight-tying)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx):
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def check_device(self, device: torch.device, dtype) -> None:
        """One line where the chosen attention kernel cannot run on `device` in `dtype` (the autocast one)."""
        attention = self.attention
        head = self.n_embd // self.n_head
        q = torch.zeros(1, self.n_head, 2, head, device=device, dtype=dtype or torch.float32)
        try:
            with attention_context(attention):
                F.scaled_dot_product_attention(q, q, q, is_causal=True)
        except RuntimeError as exc:
            raise FastGPUError(
                f"model.attention={attention} has no kernel for {device.type} in {q.dtype} "
                f"({str(exc).splitlines()[0][:100]}); use model.attention=auto or math"
            ) from None

    def block_stack(self) -> nn.ModuleList:
        """The transformer layers: what activation checkpointing and FSDP's per-block units wrap (the embeddings and
        the tied output layer stay with the root, one unit)."""
        return self.blocks

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters, less the position embedding (nanoGPT's count; the tied token embedding stays: it is the output
        layer's weight)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding else n

    def estimated_flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token by the PaLM appendix B estimate nanoGPT's estimate_mfu uses: 6N + 12 L d T."""
        return 6 * self.num_params() + 12 * self.n_layer * self.n_embd * seq_len

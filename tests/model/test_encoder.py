"""Parity of XLMRForMaskedLM with transformers' XLMRobertaForMaskedLM, and its own contracts."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from transformers import XLMRobertaForMaskedLM

from megameta import kernels
from megameta.errors import ConfigError
from megameta.model import (
    MaskedLMOutput,
    ModelConfig,
    XLMRForMaskedLM,
    flops_per_token,
    from_hf_config,
    to_hf_config,
)

VOCAB = 1000
TINY = ModelConfig(
    preset="custom",
    vocab_size=VOCAB,
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    intermediate_size=128,
    hidden_dropout=0.0,
    attention_dropout=0.0,
)


def build_pair(cfg: ModelConfig = TINY, attn: str = "sdpa") -> tuple[XLMRForMaskedLM, XLMRobertaForMaskedLM]:
    torch.manual_seed(0)
    ours = XLMRForMaskedLM(cfg)
    hf_cfg = to_hf_config(cfg)
    hf_cfg._attn_implementation = attn
    hf = XLMRobertaForMaskedLM(hf_cfg)
    hf.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), hf.eval()


def make_batch(padded: bool, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, labels) [3, 24]; padded: rows 1 and 2 right-padded."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (3, 24), generator=g)
    mask = torch.ones_like(ids)
    if padded:
        mask[1, 17:] = 0
        mask[2, 9:] = 0
    ids[mask == 0] = TINY.pad_token_id
    chosen = (torch.rand(ids.shape, generator=g) < 0.3) & mask.bool()
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    return ids, mask, labels


@pytest.mark.parametrize("padded", [False, True])
def test_logits_and_loss_match_hf(padded: bool) -> None:
    ours, hf = build_pair()
    ids, mask, labels = make_batch(padded)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, labels=labels)
        full = ours(ids, mask)
        masked = ours(ids, mask, labels)
        rows = ours.lm_head(ours.encode(ids, mask)[labels.ne(-100)])
    sel = labels.ne(-100)
    assert full.loss is None and full.logits.shape == (3, 24, VOCAB)
    torch.testing.assert_close(full.logits[sel], ref.logits[sel], atol=1e-5, rtol=0)
    torch.testing.assert_close(rows, ref.logits[sel], atol=1e-5, rtol=0)
    assert masked.logits is None and masked.loss.dtype == torch.float32
    assert abs(masked.loss.item() - ref.loss.item()) < 1e-6


def test_chunked_masked_loss_equals_full_vocabulary_ce() -> None:
    ours, _ = build_pair(dataclasses.replace(TINY, loss_chunk_size=7))
    ids, mask, labels = make_batch(padded=True)
    out = ours(ids, mask, labels)
    with torch.no_grad():
        logits = ours(ids, mask).logits
    per_token = F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), reduction="none")
    where = labels.ne(-100).nonzero()
    assert out.token_losses.numel() == len(where) > 7 * 2  # several chunks
    torch.testing.assert_close(out.token_losses, per_token[labels.reshape(-1).ne(-100)], atol=1e-6, rtol=0)
    assert torch.equal(out.masked_rows, where[:, 0])
    assert abs(out.loss.item() - F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1)).item()) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("chunk", [5, 64])
def test_head_keeps_only_the_weights_dtype_gradient_until_backward(dtype: torch.dtype, chunk: int) -> None:
    """What the masked head saves for backward: the [V, H] weight gradient in the weight's own dtype
    (fp32 only for fp16, whose unscaled gradient would underflow), scaled in place in backward (the
    returned gradient is the saved buffer for fp32 and bf16) and equal to autograd's within the dtype's
    precision, with one chunk (bf16 multiplies straight into bf16) or several (fp32 sum, rounded once)."""
    from megameta.model.encoder import _ChunkedLinearCrossEntropy

    torch.manual_seed(0)
    n, v, h = 40, 300, 16
    x = torch.randn(n, h, dtype=dtype, requires_grad=True)
    w = (0.1 * torch.randn(v, h)).to(dtype).requires_grad_()
    b = torch.zeros(v, dtype=dtype, requires_grad=True)
    t = torch.randint(0, v, (n,))
    saved: list[torch.Tensor] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss, _ = _ChunkedLinearCrossEntropy.apply(x, w, b, t, chunk)
    big = [(s.dtype, s.data_ptr()) for s in saved if s.shape == w.shape]
    assert len(big) == 1 and big[0][0] == (torch.float32 if dtype == torch.float16 else dtype)
    saved.clear()  # only the graph holds the buffer now, as in training
    (2.0 * loss).backward()  # a non-unit upstream gradient, as under loss scaling or accumulation
    if dtype != torch.float16:
        assert w.grad.data_ptr() == big[0][1]  # handed on to .grad, not copied
    ref_x, ref_w = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    (2.0 * F.cross_entropy(ref_x @ ref_w.t() + b.detach().double(), t)).backward()
    tol = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
    for got, ref in ((w.grad, ref_w.grad), (x.grad, ref_x.grad)):
        assert got.dtype == dtype
        assert ((got.double() - ref).norm() / ref.norm()).item() < tol
    with pytest.raises(RuntimeError, match="one backward per forward"):
        loss2, _ = _ChunkedLinearCrossEntropy.apply(x, w, b, t, chunk)
        loss2.backward(retain_graph=True)
        loss2.backward()


@pytest.mark.parametrize("padded", [False, True])
def test_host_given_masked_index_and_sdpa_mask_give_identical_loss_and_grads(padded: bool) -> None:
    """The trainer's sync-free call (masked positions and padding known on the host) is bit-identical."""
    ours, _ = build_pair()
    ours.train()
    ids, mask, labels = make_batch(padded)
    index = torch.from_numpy((labels.reshape(-1).numpy() != -100).nonzero()[0])
    sdpa_mask = mask.bool()[:, None, None, :] if padded else None
    outs, grads = [], []
    for args in ((ids, mask, labels), (ids, sdpa_mask, labels, index)):
        torch.manual_seed(3)
        ours.zero_grad()
        outs.append(ours(*args))
        outs[-1].loss.backward()
        grads.append([p.grad.clone() for p in ours.parameters()])
    assert torch.equal(outs[0].loss, outs[1].loss)
    assert torch.equal(outs[0].token_losses, outs[1].token_losses)
    assert torch.equal(outs[0].masked_rows, outs[1].masked_rows)
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


@pytest.mark.parametrize("chunk", [7, 4096])
def test_gradients_match_hf(chunk: int) -> None:
    ours, hf = build_pair(dataclasses.replace(TINY, loss_chunk_size=chunk))
    ids, mask, labels = make_batch(padded=True)
    ours(ids, mask, labels).loss.backward()
    hf(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    names = [n for n, _ in ours.named_parameters()]
    assert len(names) == len(list(hf.parameters()))
    for name, p in ours.named_parameters():
        ref = hf.get_parameter(name).grad
        assert p.grad is not None and ref is not None, name
        torch.testing.assert_close(p.grad, ref, atol=1e-5, rtol=1e-4, msg=name)


def test_training_mode_with_torch_dropout_matches_hf_eager_under_same_seed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dropout sits where Hugging Face's does: with torch's dropout (ours draws its CPU masks
    differently, see ``kernels.dropout``) both models drop the same elements under one seed."""
    monkeypatch.setattr(kernels, "dropout", lambda x, p, training=True: F.dropout(x, p, training))
    ours, hf = build_pair(dataclasses.replace(TINY, hidden_dropout=0.1, attention_dropout=0.1), attn="eager")
    ours.train(), hf.train()
    ids, mask, labels = make_batch(padded=True)
    torch.manual_seed(7)
    loss = ours(ids, mask, labels).loss
    torch.manual_seed(7)
    ref = hf(input_ids=ids, attention_mask=mask, labels=labels).loss
    torch.manual_seed(8)
    other = ours(ids, mask, labels).loss
    assert abs(loss.item() - ref.item()) < 1e-6
    assert other.item() != loss.item()  # dropout is really active


def test_activation_checkpointing_gives_same_loss_and_grads() -> None:
    cfg = dataclasses.replace(TINY, hidden_dropout=0.1, attention_dropout=0.1)
    plain, _ = build_pair(cfg)
    ckpt = XLMRForMaskedLM(dataclasses.replace(cfg, activation_checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    ids, mask, labels = make_batch(padded=True)
    losses = []
    for model in (plain.train(), ckpt.train()):
        torch.manual_seed(3)
        loss = model(ids, mask, labels).loss
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_compiled_layers_give_same_loss() -> None:
    plain, _ = build_pair()
    compiled = XLMRForMaskedLM(dataclasses.replace(TINY, compile=True))
    compiled.load_state_dict(plain.state_dict())
    compiled.eval()
    ids, mask, labels = make_batch(padded=True)
    ref = plain(ids, mask, labels).loss
    loss = compiled(ids, mask, labels).loss
    loss.backward()
    assert abs(loss.item() - ref.item()) < 1e-5
    assert compiled.roberta.encoder.layer[0].output.dense.weight.grad is not None
    # Regional compilation must not change parameter names.
    assert list(compiled.state_dict()) == list(plain.state_dict())


def test_state_dict_round_trip_with_hf_is_lossless_and_keeps_ties() -> None:
    ours, hf = build_pair()
    torch.manual_seed(11)
    hf2 = XLMRobertaForMaskedLM(to_hf_config(TINY))  # different random weights
    ours.load_state_dict(hf2.state_dict(), strict=True)
    back = XLMRobertaForMaskedLM(to_hf_config(TINY))
    back.load_state_dict(ours.state_dict(), strict=True)
    assert set(ours.state_dict()) == set(hf2.state_dict())
    for name, tensor in hf2.state_dict().items():
        assert torch.equal(ours.state_dict()[name], tensor), name
        assert torch.equal(back.state_dict()[name], tensor), name
    emb = ours.roberta.embeddings.word_embeddings.weight
    assert ours.lm_head.decoder.weight is emb
    assert ours.lm_head.bias is ours.lm_head.decoder.bias
    assert ours.num_parameters() == hf.num_parameters()


def test_no_masked_tokens_gives_zero_loss_connected_to_graph() -> None:
    ours, _ = build_pair()
    ids, mask, _ = make_batch(padded=False)
    out = ours(ids, mask, torch.full_like(ids, -100))
    assert isinstance(out, MaskedLMOutput)
    assert out.loss.item() == 0.0 and out.loss.requires_grad
    out.loss.backward()
    assert out.token_losses.numel() == 0 and out.masked_rows.numel() == 0


def test_encode_returns_hidden_states_of_the_requested_layer() -> None:
    ours, hf = build_pair()
    ids, mask, _ = make_batch(padded=True)
    with torch.no_grad():
        ref = hf.roberta(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        first, last = ours.encode(ids, mask, layer=0), ours.encode(ids, mask)
    torch.testing.assert_close(first, ref[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(last, ref[-1], atol=1e-5, rtol=0)
    assert last.shape == (3, 24, TINY.hidden_size)


def test_presets_resolve_and_explicit_sizes_override() -> None:
    demo = ModelConfig().resolved()
    assert (demo.num_layers, demo.hidden_size, demo.num_heads, demo.intermediate_size) == (2, 128, 4, 512)
    base = ModelConfig(preset="base").resolved()
    assert (base.num_layers, base.hidden_size, base.num_heads, base.intermediate_size) == (12, 768, 12, 3072)
    large = ModelConfig(preset="large", num_layers=6).resolved()
    assert (large.num_layers, large.hidden_size, large.num_heads) == (6, 1024, 16)
    assert ModelConfig().hidden_size is None  # resolved() returns a copy


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_size": 256, "num_heads": 3}, "model.num_heads: must divide hidden_size (256), got 3"),
        ({"preset": "huge"}, "model.preset: must be one of"),
        ({"num_layers": 0}, "model.num_layers: must be a positive integer"),
        ({"hidden_dropout": 1.0}, "model.hidden_dropout: must be in [0, 1)"),
        ({"attention_dropout": -0.1}, "model.attention_dropout: must be in [0, 1)"),
        ({"vocab_size": -5}, "model.vocab_size: must be >= 0"),
        ({"loss_chunk_size": 0}, "model.loss_chunk_size: must be a positive integer"),
        ({"preset": "custom", "hidden_size": 64}, "model.num_layers: required when preset is 'custom'"),
    ],
)
def test_validation_errors_start_with_the_field_path(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        ModelConfig(**overrides).validate()
    assert str(err.value).startswith(message)
    ModelConfig().validate()  # the defaults are valid


def test_validation_uses_the_given_path() -> None:
    with pytest.raises(ConfigError, match=r"^phases\[0\]\.model\.num_heads: "):
        ModelConfig(hidden_size=100, num_heads=3).validate("phases[0].model")


def test_hf_config_round_trip_is_lossless() -> None:
    cfg = dataclasses.replace(TINY, layer_norm_eps=1e-6, hidden_dropout=0.05, max_position_embeddings=130)
    hf_cfg = to_hf_config(cfg)
    assert hf_cfg.type_vocab_size == 1 and hf_cfg.tie_word_embeddings and hf_cfg.hidden_act == "gelu"
    assert (hf_cfg.num_hidden_layers, hf_cfg.layer_norm_eps, hf_cfg.max_position_embeddings) == (2, 1e-6, 130)
    assert from_hf_config(hf_cfg) == cfg
    with pytest.raises(ConfigError, match=r"^model\.vocab_size: "):
        to_hf_config(ModelConfig())


def test_flops_per_token_follows_the_documented_formula() -> None:
    cfg = dataclasses.replace(TINY, vocab_size=1000)
    layers, h, f, v, t = 2, 64, 128, 1000, 32
    expected = 6 * layers * (4 * h * h + 2 * h * f) + 12 * layers * h * t + 6 * 0.15 * (h * h + h * v)
    assert flops_per_token(cfg, t) == pytest.approx(expected)
    assert flops_per_token(cfg, t, mask_fraction=1.0) > flops_per_token(cfg, t)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_flash_attention_and_fp16_forward() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    ours, hf = build_pair()
    ids, mask, labels = (t.cuda() for t in make_batch(padded=False))
    ref = hf.cuda()(input_ids=ids, labels=labels).loss.item()
    model = ours.cuda().to(torch.bfloat16)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # raises if flash cannot run this call
        loss = model(ids, None, labels).loss
    assert loss.dtype == torch.float32 and abs(loss.item() - ref) < 5e-2
    half = ours.to(torch.float16)
    with torch.no_grad():
        logits = half(ids, mask).logits
    assert torch.isfinite(logits).all() and abs(half(ids, mask, labels).loss.item() - ref) < 5e-2

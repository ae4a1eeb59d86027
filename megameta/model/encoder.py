"""XLM-R encoder with a masked-LM head, parameter-for-parameter identical to Hugging Face.

The module tree and ``state_dict()`` keys match ``transformers.XLMRobertaForMaskedLM``
(``roberta.embeddings.*``, ``roberta.encoder.layer.{i}.*``, ``lm_head.*``) so that weights load
strictly both ways. Three things differ from the Hugging Face implementation, none visible in
the weights:

* attention goes through ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels
  on GPU), and the padding mask is dropped when nothing is padded so that flash applies (CPU
  training with attention dropout uses four plain ops instead, ~50x faster there);
* with labels, the output layer runs only on the masked positions, in chunks whose gradients
  are formed in forward, so a (tokens x vocabulary) logits tensor is never materialised.
  With a 250k vocabulary and 15% masking this removes ~85% of the model's FLOPs;
* on CPU, dropout masks come from ``kernels.dropout`` (16 random bits per element, several times
  faster than torch's per-element draws), so under one seed they are not Hugging Face's masks.
  With torch's dropout in its place the two models agree exactly in training mode (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from megameta import kernels
from megameta.data.masking import IGNORE_INDEX
from megameta.errors import ConfigError
from megameta.kernels import Dropout, layer_norm_class
from megameta.model.config import ModelConfig


@dataclass
class MaskedLMOutput:
    """What ``XLMRForMaskedLM.forward`` returns.

    With labels: ``loss`` is the mean fp32 cross-entropy over masked tokens (a graph-connected 0.0
    when nothing is masked), ``token_losses`` the per-token fp32 losses (detached) and
    ``masked_rows`` the batch row of each masked token, both in the order of
    ``labels.ne(-100).nonzero()``; ``logits`` is None. Without labels: ``logits`` is [B, T, V]
    and the other fields are None.
    """

    loss: Tensor | None = None
    token_losses: Tensor | None = None
    masked_rows: Tensor | None = None
    logits: Tensor | None = None


class _Group(nn.Module):
    """A plain container that only exists to reproduce Hugging Face's parameter names."""

    def __init__(*args: nn.Module, **children: nn.Module) -> None:
        # ``self`` is taken positionally because "self" is one of Hugging Face's child names.
        (group,) = args
        nn.Module.__init__(group)
        for name, child in children.items():
            group.add_module(name, child)


class Embeddings(nn.Module):
    """Word + learned position (RoBERTa offset) + single token-type embedding, LayerNorm, dropout."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        norm = layer_norm_class()
        self.padding_idx = cfg.pad_token_id
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(
            cfg.max_position_embeddings, cfg.hidden_size, padding_idx=cfg.pad_token_id
        )
        self.token_type_embeddings = nn.Embedding(1, cfg.hidden_size)
        self.LayerNorm = norm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.hidden_dropout)

    def forward(self, input_ids: Tensor) -> Tensor:
        """[B, T] token ids -> [B, T, H] embeddings."""
        # RoBERTa numbers real tokens from pad_token_id + 1; padding keeps position pad_token_id.
        not_pad = input_ids.ne(self.padding_idx).int()
        positions = torch.cumsum(not_pad, dim=1, dtype=torch.int32) * not_pad + self.padding_idx
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions.long())
        # Only one token type exists, so its lookup is a broadcast add of row 0.
        x = x + self.token_type_embeddings(input_ids.new_zeros(1))
        return self.dropout(self.LayerNorm(x))


class Layer(nn.Module):
    """Post-LayerNorm transformer layer: self-attention and a GELU feed-forward block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        h, norm = cfg.hidden_size, layer_norm_class()
        self.num_heads = cfg.num_heads
        self.attention_dropout = cfg.attention_dropout
        self.attention = _Group(
            self=_Group(query=nn.Linear(h, h), key=nn.Linear(h, h), value=nn.Linear(h, h)),
            output=_Group(dense=nn.Linear(h, h), LayerNorm=norm(h, eps=cfg.layer_norm_eps)),
        )
        self.intermediate = _Group(dense=nn.Linear(h, cfg.intermediate_size))
        self.output = _Group(
            dense=nn.Linear(cfg.intermediate_size, h), LayerNorm=norm(h, eps=cfg.layer_norm_eps)
        )
        self.dropout = Dropout(cfg.hidden_dropout)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x: [B, T, H]; mask: bool [B, 1, 1, T], True = attend, or None for no padding."""
        b, t, h = x.shape
        attn = self.attention.self
        # One GEMM for q, k and v is ~2x faster than three on CPU; the weights stay separate
        # parameters so that the names match Hugging Face, and the concatenation is cheap.
        weight = torch.cat((attn.query.weight, attn.key.weight, attn.value.weight))
        bias = torch.cat((attn.query.bias, attn.key.bias, attn.value.bias))
        q, k, v = F.linear(x, weight, bias).view(b, t, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        p = self.attention_dropout if self.training else 0.0
        if p > 0.0 and x.device.type == "cpu":
            a = _attention_with_dropout(q, k, v, mask, p)
        else:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        a = a.transpose(1, 2).reshape(b, t, h)
        out = self.attention.output
        x = out.LayerNorm(x + self.dropout(out.dense(a)))
        y = self.output.dense(F.gelu(self.intermediate.dense(x)))
        return self.output.LayerNorm(x + self.dropout(y))


def _attention_with_dropout(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, p: float) -> Tensor:
    """softmax(q k^T / sqrt(d)) with dropout, then @ v; [B, heads, T, d] in and out.

    On CPU, SDPA with dropout_p > 0 is ~50x slower than these four ops (measured, torch 2.13);
    without dropout, or on GPU, SDPA is used.
    """
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return kernels.dropout(scores.softmax(-1), p) @ v


class LMHead(nn.Module):
    """dense -> GELU -> LayerNorm -> decoder (weight tied to the word embeddings) + bias."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.layer_norm = layer_norm_class()(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size)
        # Same Parameter object as decoder.bias, as in Hugging Face: both keys are saved.
        self.bias = self.decoder.bias

    def forward(self, x: Tensor) -> Tensor:
        """[..., H] hidden states -> [..., V] logits."""
        return self.decoder(self.layer_norm(F.gelu(self.dense(x))))


class XLMRForMaskedLM(nn.Module):
    """XLM-R masked language model; ``state_dict()`` equals ``XLMRobertaForMaskedLM``'s.

    ``cfg`` is resolved and validated here; ``cfg.vocab_size`` must be set (> 0).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg = cfg.resolved()
        cfg.validate()
        if cfg.vocab_size <= 0:
            raise ConfigError("model.vocab_size: must be set (> 0) before building the model, got 0")
        self.cfg = cfg
        layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers))
        self.roberta = _Group(embeddings=Embeddings(cfg), encoder=_Group(layer=layers))
        self.lm_head = LMHead(cfg)
        self.lm_head.decoder.weight = self.roberta.embeddings.word_embeddings.weight
        self.apply(self._init_weights)
        _register_zero3_external_params(self)
        if cfg.compile:
            for layer in layers:
                layer.compile()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.cfg.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, (nn.LayerNorm, layer_norm_class())):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        """Number of distinct parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters())

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None, layer: int = -1) -> Tensor:
        """Hidden states [B, T, H] after encoder layer ``layer`` (Python indexing over layers)."""
        layers = self.roberta.encoder.layer
        last = range(len(layers))[layer]
        x = self.roberta.embeddings(input_ids)
        mask = _padding_mask(attention_mask)
        recompute = self.cfg.activation_checkpointing and self.training and torch.is_grad_enabled()
        every = self.cfg.checkpoint_every
        for i, block in enumerate(layers[: last + 1]):
            if recompute and i % every == 0:
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        return x

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        masked_index: Tensor | None = None,
    ) -> MaskedLMOutput:
        """input_ids, attention_mask (1 = token, 0 = padding), labels: [B, T]; -100 = not masked.

        ``attention_mask`` may also be a bool [B, 1, 1, T] SDPA mask (True = attend), used as given.
        ``masked_index`` (optional, int64 [M]) are the flat positions ``labels.reshape(-1) != -100`` in
        ascending order, when the caller knows them (the loader computes them on the host): the head
        then gathers without ``nonzero()``, whose output size forces a device->host synchronization.
        """
        hidden = self.encode(input_ids, attention_mask)
        if labels is None:
            return MaskedLMOutput(logits=self.lm_head(hidden))
        return self._masked_loss(hidden, labels, masked_index)

    def _masked_loss(self, hidden: Tensor, labels: Tensor, index: Tensor | None) -> MaskedLMOutput:
        b, t, h = hidden.shape
        flat = labels.reshape(-1)
        if index is None:
            index = flat.ne(IGNORE_INDEX).nonzero().squeeze(1)
        masked_rows = torch.div(index, t, rounding_mode="floor")
        if index.numel() == 0:
            zero = hidden.sum().float() * 0.0
            return MaskedLMOutput(zero, zero.new_zeros(0).detach(), masked_rows)
        head = self.lm_head
        rows = hidden.reshape(b * t, h).index_select(0, index)
        rows = head.layer_norm(F.gelu(head.dense(rows)))
        tensors = (rows, head.decoder.weight, head.bias)
        if not torch.is_grad_enabled():  # else the Function would still form the gradients
            tensors = tuple(x.detach() for x in tensors)
        loss, token_losses = _ChunkedLinearCrossEntropy.apply(
            *tensors, flat.index_select(0, index), self.cfg.loss_chunk_size
        )
        return MaskedLMOutput(loss, token_losses, masked_rows)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``x @ weight.T + bias`` against targets, one row chunk at a time.

    The gradients are computed in forward, chunk by chunk, while each chunk's logits are alive:
    only a [chunk, V] block ever exists, and nothing is recomputed in backward (which would cost
    another pass over the vocabulary, the model's largest matmul). Backward scales them in place
    and hands them on, so the [V, H] weight gradient is never copied.

    What lives from forward to backward is that gradient in the weight's own dtype: fp32 weights
    keep it in fp32; bf16 weights fold the mean's 1/n into the softmax gradient and keep it in
    bf16 (a single chunk multiplies straight into the gradient; several are summed in fp32 while
    the chunks run, and bf16 rounds once at the end). fp16 keeps an fp32 buffer: an unscaled
    gradient would underflow in fp16 before backward applies the loss scale.
    Returns ``(mean loss, per-token losses)``, both fp32; the second is not differentiable.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, targets: Tensor, chunk: int):
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        n = x.shape[0]
        fold = weight.dtype == torch.bfloat16
        acc = torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype
        grad_x = torch.empty_like(x) if need_x else None
        # One chunk in fp32 or bf16: its product is the gradient, no zero-filled [V, H] buffer first.
        grad_w = None
        if need_w and (n > chunk or not (fold or acc == weight.dtype)):
            grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device)
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        losses = torch.empty(n, dtype=torch.float32, device=x.device)
        for start in range(0, n, chunk):
            xs, ts = x[start : start + chunk], targets[start : start + chunk]
            logits = torch.addmm(bias, xs, weight.t()).float()
            target_logits = logits.gather(1, ts[:, None]).squeeze(1)
            # log-sum-exp = max + log(sum(exp(logits - max))) computed in the logits buffer, which
            # then holds softmax: two passes over the [chunk, V] block fewer than torch.logsumexp
            # followed by exp(logits - lse), and no second [chunk, V] temporary.
            top = logits.amax(1, keepdim=True)
            exps = logits.sub_(top).exp_()
            total = exps.sum(1, keepdim=True)
            losses[start : start + chunk] = (top + total.log()).squeeze(1) - target_logits
            if need_x or need_w or need_b:
                # d(loss_i)/d(logits_i) = softmax_i - onehot(target_i), in the same buffer.
                probs = exps.div_(total)
                probs[torch.arange(len(ts), device=ts.device), ts] -= 1.0
                if fold:
                    probs.mul_(1.0 / n)
                if need_b:
                    grad_b += probs.sum(0)
                probs = probs.to(weight.dtype)
                if need_x:
                    grad_x[start : start + chunk] = probs @ weight
                if need_w:
                    if grad_w is None:  # one chunk: in the weight's dtype (bf16: no fp32 [V, H] at all)
                        grad_w = probs.t() @ xs
                    else:
                        _accumulate(grad_w, probs.t(), xs)
        if fold and grad_w is not None and grad_w.dtype != weight.dtype:
            grad_w = grad_w.to(weight.dtype)  # several chunks' fp32 sum, rounded once; the fp32 copy is freed
        ctx.save_for_backward(grad_x, grad_w, grad_b)
        ctx.n, ctx.fold, ctx.dtypes, ctx.done = n, fold, (weight.dtype, bias.dtype), False
        ctx.mark_non_differentiable(losses)
        return losses.mean(), losses

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_losses: Tensor):
        if ctx.done:  # the saved gradients were scaled in place by the first backward
            raise RuntimeError("the masked-LM head supports one backward per forward (no retain_graph)")
        ctx.done = True
        grad_x, grad_w, grad_b = ctx.saved_tensors
        scale = grad_loss if ctx.fold else grad_loss / ctx.n
        w_dtype, b_dtype = ctx.dtypes
        return (
            None if grad_x is None else grad_x * scale.to(grad_x.dtype),
            None if grad_w is None else grad_w.mul_(scale).to(w_dtype),
            None if grad_b is None else (grad_b * scale).to(b_dtype),
            None,
            None,
        )


def _accumulate(out: Tensor, a: Tensor, b: Tensor) -> None:
    """``out += a @ b`` with ``out`` in fp32 and ``a``, ``b`` possibly bf16/fp16.

    On CUDA the low-precision inputs go to the tensor cores and the product is written in fp32
    (``addmm`` with ``out_dtype``): upcasting them first would run the vocabulary-sized matmul as
    an fp32 SIMT GEMM, measured on an H200 as a fifth of a bf16 XLM-R-base step. Elsewhere (CPU,
    or a torch without that overload) the inputs are upcast, which is exact.
    """
    if a.dtype == out.dtype:
        out.addmm_(a, b)
        return
    if out.is_cuda:
        try:
            torch.addmm(out, a, b, out_dtype=out.dtype, out=out)
            return
        except (RuntimeError, TypeError):  # torch without addmm.dtype_out for this dtype pair
            pass
    out.addmm_(a.to(out.dtype), b.to(out.dtype))


def _register_zero3_external_params(model: XLMRForMaskedLM) -> None:
    """Tell DeepSpeed ZeRO-3 which parameters are read outside their owner's ``forward``.

    The fused q/k/v projection and the masked-only output layer use weights directly, so
    ZeRO-3's per-module gather hooks would not fetch them. A no-op without DeepSpeed.
    """
    try:
        from deepspeed.zero import register_external_parameter
    except ImportError:
        return
    for layer in model.roberta.encoder.layer:
        for proj in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
            register_external_parameter(layer, proj.weight)
            register_external_parameter(layer, proj.bias)
    register_external_parameter(model, model.lm_head.decoder.weight)
    register_external_parameter(model, model.lm_head.bias)


def _padding_mask(attention_mask: Tensor | None) -> Tensor | None:
    """[B, T] 0/1 mask -> bool [B, 1, 1, T] for SDPA, or None when nothing is padded.

    Dropping an all-ones mask costs one host sync but lets SDPA pick the flash kernel, which
    takes no mask; packed pre-training batches are almost never padded. A caller that knows on
    the host whether the batch is padded (the trainer) passes None or the bool [B, 1, 1, T] mask
    itself, which is used as given: no sync.
    """
    if attention_mask is None or attention_mask.dim() == 4:
        return attention_mask
    if bool(attention_mask.bool().all()):
        return None
    return attention_mask.bool()[:, None, None, :]


def flops_per_token(cfg: ModelConfig, seq_len: int, mask_fraction: float = 0.15) -> float:
    """Training FLOPs (forward + backward) per input token for this model's masked-LM step.

    ``6 * N_enc + 12 * L * H * T + 6 * mask_fraction * (H^2 + H * V)`` where
    ``N_enc = L * (4 H^2 + 2 H F)`` are the encoder's matmul weights (2 FLOPs per multiply-add,
    x3 for forward + backward), ``12 L H T`` is attention's QK^T and AV, and the LM head (dense +
    decoder) runs only on the masked fraction. Embedding lookups, norms and the activation
    checkpointing recomputation are not counted (model FLOPs, as used for MFU).
    """
    c = cfg.resolved()
    layers, h, f, v = c.num_layers, c.hidden_size, c.intermediate_size, c.vocab_size
    encoder = 6 * layers * (4 * h * h + 2 * h * f) + 12 * layers * h * seq_len
    return float(encoder + 6 * mask_fraction * (h * h + h * v))


def meta_model(cfg: ModelConfig) -> XLMRForMaskedLM:
    """The model on the meta device: shapes and parameter counts without memory or init time.

    Random init is skipped (pointless on meta tensors, and ``trunc_normal_`` & co. import
    ``torch._dynamo``, seconds); ``compile`` is switched off for the same reason.
    """
    import dataclasses
    from unittest import mock

    def skip(tensor, *args, **kwargs):
        return tensor

    inits = ("normal_", "uniform_", "zeros_", "ones_", "kaiming_uniform_", "trunc_normal_")
    with torch.device("meta"), mock.patch.multiple(torch.nn.init, **dict.fromkeys(inits, skip)):
        return XLMRForMaskedLM(dataclasses.replace(cfg, compile=False))

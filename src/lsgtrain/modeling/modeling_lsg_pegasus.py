"""LSG-Pegasus for transformers 5: Pegasus whose encoder self-attention is Local + Sparse + Global.

Only the encoder changes (reference `LSGPegasusEncoder`): global tokens are prepended, long inputs are padded to a
multiple of `block_size` and attend through `LSGBlockAttention`. The decoder, its cross-attention and the LM head are
transformers' own Pegasus modules, so they run on its attention backends (eager, SDPA, flash).

This file and the ones it imports relatively (configuration, attention, layout, kernels, CPU function) are copied
next to the weights by `save_pretrained`, so a saved folder loads with `trust_remote_code=True` where lsgtrain is
not installed.

Notation used for tensor shapes: n batch, t tokens given, t_pad after adaptive padding, g global tokens,
D d_model, m decoder tokens, c labels.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import Cache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqModelOutput, SequenceClassifierOutput
from transformers.models.pegasus.modeling_pegasus import (
    PegasusDecoder,
    PegasusEncoderLayer,
    PegasusForConditionalGeneration,
    PegasusPreTrainedModel,
    PegasusSinusoidalPositionalEmbedding,
)
from transformers.utils import can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_lsg_pegasus import CLASSIFIER_POOLINGS, MAX_GLOBAL_TOKENS, LSGPegasusConfig
from .lsg_attention import LSGPegasusEncoderSelfAttention

AUTO_MAP = {
    "AutoConfig": "configuration_lsg_pegasus.LSGPegasusConfig",
    "AutoModel": "modeling_lsg_pegasus.LSGPegasusModel",
    "AutoModelForSeq2SeqLM": "modeling_lsg_pegasus.LSGPegasusForConditionalGeneration",
    "AutoModelForSequenceClassification": "modeling_lsg_pegasus.LSGPegasusForSequenceClassification",
}


class LSGPegasusSinusoidalPositionalEmbedding(PegasusSinusoidalPositionalEmbedding):
    """Pegasus' sinusoidal table (sin in the first half of the features, cos in the second), built vectorised.

    Bit-identical to the parent's `create_weight`, whose Python double loop takes about 20 s at 16,384 x 1,024.
    Being a `PegasusSinusoidalPositionalEmbedding`, it is filled by Pegasus' `_init_weights` and never
    re-randomised (the reference's own class was, when built from a config).
    """

    def create_weight(self) -> torch.Tensor:
        n_pos, dim = self.weight.shape
        angles = np.arange(n_pos)[:, None] / np.power(10000, 2 * (np.arange(dim) // 2) / dim)  # [n_pos, dim]
        out = torch.empty(n_pos, dim, dtype=self.weight.dtype)
        sentinel = dim // 2 + dim % 2
        out[:, :sentinel] = torch.from_numpy(np.sin(angles[:, 0::2])).to(out.dtype)
        out[:, sentinel:] = torch.from_numpy(np.cos(angles[:, 1::2])).to(out.dtype)
        return out


def _sinusoidal_table(num_positions: int, dim: int, device: torch.device) -> LSGPegasusSinusoidalPositionalEmbedding:
    table = LSGPegasusSinusoidalPositionalEmbedding(num_positions, dim)
    with torch.no_grad():
        table.weight.copy_(table.create_weight())
    return table.to(device)


class LSGPegasusEncoderLayer(PegasusEncoderLayer):
    """Pegasus pre-LN encoder layer whose self-attention is LSG; its mask is a `[n, g + t_pad]` bool tensor."""

    def __init__(self, config: LSGPegasusConfig):
        super().__init__(config)
        self.self_attn = LSGPegasusEncoderSelfAttention(config)


class LSGPegasusPreTrainedModel(PegasusPreTrainedModel):
    """Weights init and capability flags shared by the LSG-Pegasus classes.

    Initialisation needs no branch of its own: `global_embeddings` is an `nn.Embedding` (normal, `init_std`) and
    the encoder position table is a `PegasusSinusoidalPositionalEmbedding`, which the parent fills with sinusoids
    (the reference re-randomises it when building from a config). Both go through `transformers.initialization`,
    which skips tensors a checkpoint already loaded (`_is_hf_initialized`).
    """

    config: LSGPegasusConfig
    config_class = LSGPegasusConfig
    base_model_prefix = "model"
    _no_split_modules = ["LSGPegasusEncoderLayer", "PegasusDecoderLayer"]
    _can_compile_fullgraph = True  # tested: a forward under torch.compile(fullgraph=True) gives the eager outputs
    # One `attn_implementation` for every attention (lsg_kernels.py): the decoder's is Pegasus' own, the encoder's
    # the LSG kernel of that name; flash-attn has no LSG layout, so with it the encoder runs its `sdpa` kernel.
    _supports_flex_attn = True

    def __init__(self, config: LSGPegasusConfig, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        # Saved folders must name our classes, whatever auto_map a reference config.json carried.
        self.config.auto_map = dict(AUTO_MAP)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, with the sinusoidal position tables frozen again: transformers 5.24's
        loading hands them back as trainable parameters (plain Pegasus' too), so an optimizer would update and
        weight-decay tables that must stay the computed sinusoids."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # `output_loading_info=True` adds the info
        for owner in model._position_tables_owners():
            owner.embed_positions.weight.requires_grad_(False)
        return loaded

    def _position_tables_owners(self) -> list[nn.Module]:
        """The encoder and, where this model has one, the decoder: each owns a sinusoidal `embed_positions`."""
        return [module for module in self.modules() if isinstance(module, (LSGPegasusEncoder, PegasusDecoder))]

    def get_position_embeddings(self) -> nn.Embedding | tuple[nn.Embedding, nn.Embedding]:
        """The encoder's position table, or `(encoder table, decoder table)` for the encoder-decoder classes."""
        tables = tuple(owner.embed_positions for owner in self._position_tables_owners())
        return tables[0] if len(tables) == 1 else tables

    def resize_position_embeddings(self, new_num_position_embeddings: int) -> None:
        """Regenerate every sinusoidal position table (encoder and decoder) for `new_num_position_embeddings`.

        Computed, not copied or tiled: the first rows equal the old ones (reference M:768-788).
        """
        self.config.max_position_embeddings = new_num_position_embeddings
        for owner in self._position_tables_owners():
            owner.config.max_position_embeddings = new_num_position_embeddings
            owner.embed_positions = _sinusoidal_table(new_num_position_embeddings, self.config.d_model, self.device)


class LSGPegasusEncoder(LSGPegasusPreTrainedModel):
    """Pegasus encoder with global tokens, adaptive padding and LSG self-attention (reference M:705-957)."""

    def __init__(self, config: LSGPegasusConfig):
        super().__init__(config)
        self.dropout = config.dropout
        self.layerdrop = config.encoder_layerdrop
        self.padding_idx = config.pad_token_id
        self.embed_scale = config.d_model**0.5 if config.scale_embedding else 1.0
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model, self.padding_idx)
        self.embed_positions = LSGPegasusSinusoidalPositionalEmbedding(config.max_position_embeddings, config.d_model)
        # Always 512 rows, as in every reference checkpoint; only the first num_global_tokens are used.
        self.global_embeddings = nn.Embedding(MAX_GLOBAL_TOKENS, config.d_model)
        self.layers = nn.ModuleList([LSGPegasusEncoderLayer(config) for _ in range(config.encoder_layers)])
        self.layer_norm = nn.LayerNorm(config.d_model)
        self.gradient_checkpointing = False
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> BaseModelOutput:
        """Encode `input_ids` `[n, t]` (or `inputs_embeds` `[n, t, D]`, not rescaled).

        Returns `last_hidden_state` `[n, g + t, D]` (`[n, t, D]` when `pass_global_tokens_to_decoder=False`); if
        asked, `hidden_states` per layer (embeddings first, final norm last) trimmed exactly as `last_hidden_state`,
        and `attentions` per layer: the attention probabilities, a row per position of `hidden_states` (r rows)
        over the keys `[globals | tokens]`: `[n, h, r, g + t]` (square with the globals kept), or with
        `config.attention_maps="blocks"` and inputs longer than 2 blocks `[n, h, r, k_len + g]`; see docs/model.md.
        """
        config = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        g, blk = config.num_global_tokens, config.block_size
        n, t = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        config.check_sequence_length(t)

        keep = (
            torch.ones(n, t, dtype=torch.bool, device=self.device) if attention_mask is None else attention_mask.bool()
        )
        if config.mask_first_token:
            keep = keep.clone()  # the reference writes into the caller's mask; we never do
            keep[:, 0] = False
        # Adaptive padding (reference M:808-818): inputs longer than 2 blocks grow to a multiple of block_size.
        pad = (-t) % blk if config.adaptive and t > 2 * blk else 0
        if pad:
            keep = F.pad(keep, (0, pad), value=False)  # [n, t_pad]
            if input_ids is not None:
                input_ids = F.pad(input_ids, (0, pad), value=config.pad_token_id)  # [n, t_pad]
            else:
                inputs_embeds = F.pad(inputs_embeds, (0, 0, 0, pad))  # [n, t_pad, D]
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids) * self.embed_scale  # [n, t_pad, D]
        hidden_states = inputs_embeds + self.embed_positions(inputs_embeds.shape[:2])  # [n, t_pad, D]

        # Global tokens: learned vectors, no position and no embed_scale, prepended (reference M:889-891).
        global_tokens = self.global_embeddings.weight[:g].unsqueeze(0).expand(n, -1, -1)  # [n, g, D]
        hidden_states = torch.cat([global_tokens.to(hidden_states.dtype), hidden_states], dim=1)  # [n, g + t_pad, D]
        hidden_states = F.dropout(hidden_states, p=self.dropout, training=self.training)
        keep = F.pad(keep, (g, 0), value=True)  # [n, g + t_pad], globals always visible

        all_hidden_states, all_attentions = [], []
        rows = self._kept_positions(t)
        for layer in self.layers:
            if output_hidden_states:
                reported, hidden_states = self._report(hidden_states, rows)
                all_hidden_states.append(reported)
            if self.training and self.layerdrop > 0.0 and torch.rand([]) < self.layerdrop:
                continue  # LayerDrop (arXiv 1909.11556)
            if output_attentions:
                hidden_states, weights = self._layer_with_attentions(layer, hidden_states, keep, rows)
                all_attentions.append(weights)  # a row per position of hidden_states, adaptive padding dropped
            else:
                hidden_states = layer(hidden_states, keep)
        hidden_states = self.layer_norm(hidden_states)  # [n, g + t_pad, D]

        if not config.pass_global_tokens_to_decoder and config.pool_with_global:
            # Reference M:838-839: the first token's output becomes global token 0's output.
            hidden_states = hidden_states.clone()
            hidden_states[:, g] = hidden_states[:, 0]
        last_hidden_state = self._trim(hidden_states, t)
        if output_hidden_states:
            all_hidden_states.append(last_hidden_state)
        return BaseModelOutput(
            last_hidden_state=last_hidden_state,
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )

    def _kept_positions(self, length: int) -> tuple[int, int]:
        """`[first, last)` of `[globals | tokens | adaptive padding]` that the encoder outputs: the `length` tokens
        given, after the globals when `pass_global_tokens_to_decoder`."""
        g = self.config.num_global_tokens
        return 0 if self.config.pass_global_tokens_to_decoder else g, g + length

    def _trim(self, hidden_states: torch.Tensor, length: int) -> torch.Tensor:
        """`[n, g + t_pad, D]` -> the encoder's output positions: `[n, g + t, D]`, or `[n, t, D]` without globals."""
        first, last = self._kept_positions(length)
        return hidden_states[:, first:last]

    @staticmethod
    def _report(hidden_states: torch.Tensor, rows: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The positions `rows` of a layer's input `[n, g + t_pad, D]`, and the input rebuilt from them, so that the
        reported tensor is the one the next layer computes from (gradients reach it: `retain_grad`)."""
        first, last = rows
        if first == 0 and last == hidden_states.shape[1]:
            return hidden_states, hidden_states
        kept = hidden_states[:, first:last]
        return kept, torch.cat([hidden_states[:, :first], kept, hidden_states[:, last:]], dim=1)

    @staticmethod
    def _layer_with_attentions(layer, hidden_states, keep, rows) -> tuple[torch.Tensor, torch.Tensor]:
        """Run `layer` on the eager attention path, returning its output and the self-attention probabilities of
        the positions `rows` (which Pegasus' layer forward drops): the tensor the layer's output is computed from."""
        recorded = []
        hook = layer.self_attn.register_forward_hook(lambda module, args, output: recorded.append(output[1]))
        try:
            hidden_states = layer(hidden_states, keep, output_attentions=True, attention_rows=rows)
        finally:
            hook.remove()
        return hidden_states, recorded[-1]


class LSGPegasusModel(LSGPegasusPreTrainedModel):
    """Bare LSG-Pegasus encoder-decoder (reference `LSGPegasusModel`)."""

    _tied_weights_keys = {
        "decoder.embed_tokens.weight": "shared.weight",
        "encoder.embed_tokens.weight": "shared.weight",
    }

    def __init__(self, config: LSGPegasusConfig):
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.encoder = LSGPegasusEncoder(config)
        self.decoder = PegasusDecoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.shared = value
        self.encoder.embed_tokens = value
        self.decoder.embed_tokens = value

    def cross_attention_mask(self, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """The encoder padding mask `[n, t]` as the decoder sees it: `[n, g + t]` when the globals are passed.

        With `mask_first_token` token 0 is hidden from cross-attention too, as in the reference (which gets
        there by mutating the caller's mask; here the caller's tensor is left alone).
        """
        if attention_mask is None:
            return None
        if self.config.mask_first_token:
            attention_mask = attention_mask.clone()
            attention_mask[:, 0] = 0
        if self.config.pass_global_tokens_to_decoder:
            attention_mask = F.pad(attention_mask, (self.config.num_global_tokens, 0), value=1)  # [n, g + t]
        return attention_mask

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> Seq2SeqModelOutput:
        """Encode `input_ids` `[n, t]` (unless `encoder_outputs` are given) and decode `decoder_input_ids` `[n, m]`."""
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                inputs_embeds=inputs_embeds,
                output_hidden_states=kwargs.get("output_hidden_states"),
                output_attentions=kwargs.get("output_attentions"),
                return_dict=True,
            )
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(
                last_hidden_state=encoder_outputs[0],
                hidden_states=encoder_outputs[1] if len(encoder_outputs) > 1 else None,
                attentions=encoder_outputs[2] if len(encoder_outputs) > 2 else None,
            )
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_attention_mask=self.cross_attention_mask(attention_mask),
            cache=cache,
            inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        return Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            cache=decoder_outputs.cache,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )


class LSGPegasusForConditionalGeneration(LSGPegasusPreTrainedModel, PegasusForConditionalGeneration):
    """LSG-Pegasus with its LM head, for summarization; `forward`, loss and `generate` are Pegasus' own."""

    _tied_weights_keys = {"lm_head.weight": "model.shared.weight"}

    def __init__(self, config: LSGPegasusConfig):
        # Skip PegasusForConditionalGeneration.__init__, which would build (and discard) a plain PegasusModel.
        PegasusPreTrainedModel.__init__(self, config)
        self.config.auto_map = dict(AUTO_MAP)
        self.model = LSGPegasusModel(config)
        self.final_logits_bias = nn.Buffer(torch.zeros((1, config.vocab_size)))
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def _reorder_cache(self, cache: Cache, beam_idx: torch.LongTensor) -> Cache:
        """Beam search: reorder the decoder's self-attention cache only. `beam_idx` moves beams within their
        document, and every beam of a document holds the same cross-attention keys and values (projected from the
        same encoder output), so reordering those is a copy that changes nothing: `[beams, heads, source tokens,
        head dim]` per layer and step (5.4 GB in bf16 at 16,384 source tokens, 5 beams, 16 layers), alive beside
        the original while it is made."""
        if isinstance(cache, EncoderDecoderCache):
            cache.self_attention_cache.reorder_cache(beam_idx)
        else:
            cache.reorder_cache(beam_idx)
        return cache


class LSGPegasusEncoderModel(LSGPegasusPreTrainedModel):
    """The encoder half (shared embeddings + LSG encoder), with the weight names of the full model."""

    _tied_weights_keys = {"encoder.embed_tokens.weight": "shared.weight"}

    def __init__(self, config: LSGPegasusConfig):
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.encoder = LSGPegasusEncoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.shared = value
        self.encoder.embed_tokens = value

    @can_return_tuple
    def forward(self, *args, **kwargs) -> BaseModelOutput:
        return self.encoder(*args, return_dict=True, **kwargs)


class LSGPegasusClassificationHead(nn.Module):
    """dense -> tanh -> out_proj over the pooled encoder output, as BART's sequence classification head."""

    def __init__(self, config: LSGPegasusConfig):
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.out_proj = nn.Linear(config.d_model, config.num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(self.dense(self.dropout(pooled)))  # [n, D]
        return self.out_proj(self.dropout(hidden))  # [n, c]


def _validate_classifier_pooling(config: LSGPegasusConfig) -> None:
    """`classifier_pooling` is read by the classifier only, so only the classifier checks it."""
    if config.classifier_pooling not in CLASSIFIER_POOLINGS:
        raise ValueError(
            f"classifier_pooling={config.classifier_pooling!r} is unknown; choose one of {CLASSIFIER_POOLINGS}"
        )
    if config.classifier_pooling == "global" and not (config.pass_global_tokens_to_decoder or config.pool_with_global):
        raise ValueError(
            "classifier_pooling='global' needs the global token in the encoder output: set "
            "pass_global_tokens_to_decoder=True or pool_with_global=True, or use classifier_pooling='mean'"
        )


class LSGPegasusForSequenceClassification(LSGPegasusPreTrainedModel):
    """Encoder-only classifier: the decoder is neither built nor run.

    `config.classifier_pooling` picks the pooled vector: `"global"` takes global token 0's output (position 0 of
    the encoder output), `"mean"` the mean over the visible tokens. `config.problem_type` selects the loss as in
    transformers: regression (MSE), single-label (cross-entropy) or multi-label (BCE with logits).
    A seq2seq checkpoint loads into it: its decoder and LM head weights are ignored.
    """

    _keys_to_ignore_on_load_unexpected = [r"model\.decoder\.", r"^lm_head\.", r"final_logits_bias"]

    def __init__(self, config: LSGPegasusConfig):
        _validate_classifier_pooling(config)
        super().__init__(config)
        self.model = LSGPegasusEncoderModel(config)
        self.classification_head = LSGPegasusClassificationHead(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.shared

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.set_input_embeddings(value)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        """Classify `input_ids` `[n, t]`; `labels` are `[n]` class ids, `[n, c]` multi-hot, or `[n]` floats."""
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        hidden = outputs.last_hidden_state  # [n, (g +) t, D]
        if self.config.classifier_pooling == "global":
            pooled = hidden[:, 0]  # [n, D]
        else:
            offset = self.config.num_global_tokens if self.config.pass_global_tokens_to_decoder else 0
            tokens = hidden[:, offset:]  # [n, t, D]
            if attention_mask is None:
                pooled = tokens.mean(dim=1)
            else:
                weight = attention_mask.to(tokens.dtype).unsqueeze(-1)  # [n, t, 1]
                pooled = (tokens * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)
        logits = self.classification_head(pooled)  # [n, c]
        loss = None
        if labels is not None:
            if self.config.problem_type == "multi_label_classification":
                labels = labels.to(logits.dtype)  # multi-hot labels often arrive as integers
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


LSGPegasusConfig.register_for_auto_class()
LSGPegasusModel.register_for_auto_class("AutoModel")
LSGPegasusForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")
LSGPegasusForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "LSGPegasusEncoder",
    "LSGPegasusForConditionalGeneration",
    "LSGPegasusForSequenceClassification",
    "LSGPegasusModel",
    "LSGPegasusPreTrainedModel",
]

"""How far a freshly converted LSG-Pegasus is from plain Pegasus on an input shorter than 2 x block_size.

Below 2 * block_size LSG runs full attention, but over [global tokens; tokens]: the globals are attended to (and,
by default, handed to the decoder), so outputs differ from plain Pegasus with the same weights. This prints by how
much on a tiny random Pegasus (d_model 64, 2+2 layers, 4 heads), for Pegasus' default init (std 0.02) and for a
sharper one (std 0.2, as the reference oracle uses).

    python experiments/short_input_vs_pegasus.py
"""

import tempfile

import torch
from transformers import PegasusConfig, PegasusForConditionalGeneration

from lsgtrain.modeling.convert import convert_checkpoint


def main() -> None:
    print("| init std | globals | passed to decoder | encoder max / mean abs diff | logits max / mean abs diff "
          "| same argmax |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for init_std in (0.02, 0.2):
        torch.manual_seed(0)
        config = PegasusConfig(
            vocab_size=4000, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=512,
            scale_embedding=True, init_std=init_std,
        )  # fmt: skip
        plain = PegasusForConditionalGeneration(config).eval()
        folder = tempfile.mkdtemp()
        plain.save_pretrained(folder)
        input_ids = torch.randint(5, 4000, (4, 100))  # 100 < 2 * block_size (64)
        decoder_input_ids = torch.randint(5, 4000, (4, 10))
        decoder_input_ids[:, 0] = 0
        for globals_ in (1, 4):
            for passed in (True, False):
                lsg, _ = convert_checkpoint(
                    folder, None, max_sequence_length=512, block_size=64, num_global_tokens=globals_,
                    pass_global_tokens_to_decoder=passed,
                )  # fmt: skip
                with torch.no_grad():
                    a = plain(input_ids=input_ids, decoder_input_ids=decoder_input_ids)
                    b = lsg.eval()(input_ids=input_ids, decoder_input_ids=decoder_input_ids)
                offset = globals_ if passed else 0
                enc = (a.encoder_last_hidden_state - b.encoder_last_hidden_state[:, offset:]).abs()
                logits = (a.logits - b.logits).abs()
                agree = (a.logits.argmax(-1) == b.logits.argmax(-1)).float().mean()
                print(f"| {init_std} | {globals_} | {passed} | {enc.max():.3f} / {enc.mean():.4f} "
                      f"| {logits.max():.3f} / {logits.mean():.4f} | {agree:.1%} |")  # fmt: skip


if __name__ == "__main__":
    main()

"""Writes a randomly initialised BERT encoder of a given shape with nothing but PyTorch.

The GPU machine has PyTorch but maybe not `transformers`; this writes what `span-marker train
--model DIR` (and `transformers.BertModel`) reads: `config.json`, `pytorch_model.bin` with the
parameter names of `BertModel`, and the tokenizer files of the directory given by --tokenizer
(only the vocabulary's size enters the weights). Initialisation as BERT's: normal(0, 0.02)
matrices, zero biases, unit layer norms.

    python3 random_encoder.py OUT --tokenizer tests/fixtures/encoders/tiny-bert \\
        --hidden 768 --layers 12 --heads 12 --intermediate 3072
"""

import argparse
import json
import shutil
from pathlib import Path

import torch

TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--tokenizer", required=True, help="a BERT encoder directory to take the tokenizer from")
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--intermediate", type=int, default=3072)
    parser.add_argument("--max-positions", type=int, default=512)
    args = parser.parse_args()

    source = Path(args.tokenizer)
    config = json.loads((source / "config.json").read_text())
    vocab = config["vocab_size"]
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, out / name)
    config.update(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.intermediate,
        max_position_embeddings=args.max_positions,
    )
    config.pop("_name_or_path", None)
    (out / "config.json").write_text(json.dumps(config, indent=2))

    torch.manual_seed(0)
    h, i = args.hidden, args.intermediate
    state = {}

    def linear(name, n_in, n_out):
        state[f"{name}.weight"] = torch.randn(n_out, n_in) * 0.02
        state[f"{name}.bias"] = torch.zeros(n_out)

    def norm(name):
        state[f"{name}.weight"] = torch.ones(h)
        state[f"{name}.bias"] = torch.zeros(h)

    state["embeddings.word_embeddings.weight"] = torch.randn(vocab, h) * 0.02
    state["embeddings.position_embeddings.weight"] = torch.randn(args.max_positions, h) * 0.02
    state["embeddings.token_type_embeddings.weight"] = torch.randn(config.get("type_vocab_size", 2), h) * 0.02
    norm("embeddings.LayerNorm")
    for layer in range(args.layers):
        p = f"encoder.layer.{layer}"
        for part in ["query", "key", "value"]:
            linear(f"{p}.attention.self.{part}", h, h)
        linear(f"{p}.attention.output.dense", h, h)
        norm(f"{p}.attention.output.LayerNorm")
        linear(f"{p}.intermediate.dense", h, i)
        linear(f"{p}.output.dense", i, h)
        norm(f"{p}.output.LayerNorm")
    linear("pooler.dense", h, h)
    torch.save(state, out / "pytorch_model.bin")
    params = sum(t.numel() for t in state.values())
    print(f"{out}: {args.layers} layers, {h} wide, {params / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main()

"""Makes a randomly initialised SpanMarker model of a given encoder shape for benchmarks.

The vocabulary is the tiny BERT fixture's (CoNLL-2003 WordPiece); only the encoder's shape
changes, e.g. BERT-base: --hidden 768 --layers 12 --heads 12 --intermediate 3072. Both the
encoder and the SpanMarker model are written under OUT (OUT/encoder, OUT/model), and the model
loads in Python and in Rust. Run from the repository root:

    .venv-python scripts/make_bench_model.py /tmp/bench-base --hidden 768 --layers 12 --heads 12 --intermediate 3072
"""

import argparse
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from span_marker import SpanMarkerModel
from transformers import BertConfig, BertModel, BertTokenizerFast

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--intermediate", type=int, default=3072)
    parser.add_argument("--model-max-length", type=int, default=256)
    parser.add_argument("--marker-max-length", type=int, default=128)
    parser.add_argument("--entity-max-length", type=int, default=8)
    args = parser.parse_args()

    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    encoder_dir = out / "encoder"
    tokenizer = BertTokenizerFast.from_pretrained("tests/fixtures/encoders/tiny-bert")
    tokenizer.save_pretrained(encoder_dir)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.intermediate,
    )
    BertModel(config).save_pretrained(encoder_dir, safe_serialization=True)
    model = SpanMarkerModel.from_pretrained(
        str(encoder_dir),
        labels=LABELS,
        model_max_length=args.model_max_length,
        marker_max_length=args.marker_max_length,
        entity_max_length=args.entity_max_length,
    )
    model.save_pretrained(out / "model", safe_serialization=True)
    print(out / "model")


if __name__ == "__main__":
    main()

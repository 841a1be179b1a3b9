"""Saves an untrained SpanMarker model around a pretrained encoder, made by Python `span_marker`
(its head and marker embeddings drawn after `torch.manual_seed(SEED)`), as the common starting
point of training runs compared side by side (`span-marker-bench --train-steps`):

    .venv-python scripts/init_from_encoder.py "$(bash scripts/fetch_encoder.sh minilm)" \
        /tmp/minilm-init --model-max-length 128 --marker-max-length 64 --entity-max-length 6

The labels are CoNLL-2003's IOB2 tags unless `--labels` names others.
"""

import argparse

import torch
from span_marker import SpanMarkerModel

CONLL_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("encoder", help="a Hugging Face encoder directory")
    parser.add_argument("output", help="where the SpanMarker model is saved")
    parser.add_argument("--labels", nargs="+", default=CONLL_LABELS)
    parser.add_argument("--model-max-length", type=int, default=128)
    parser.add_argument("--marker-max-length", type=int, default=64)
    parser.add_argument("--entity-max-length", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = SpanMarkerModel.from_pretrained(
        args.encoder,
        labels=args.labels,
        model_max_length=args.model_max_length,
        marker_max_length=args.marker_max_length,
        entity_max_length=args.entity_max_length,
    )
    model.save_pretrained(args.output)


if __name__ == "__main__":
    main()

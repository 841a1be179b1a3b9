"""How long the encoder inputs of training batches are, per batch order: the tokens a step
computes on. Python `span_marker` pads every sample to `model_max_length + 2 *
marker_max_length`; span-marker-rs trims each batch to its longest sample (rounded up to a
multiple of 8), so its cost follows the batch order:

    .venv-python scripts/batch_lengths.py /tmp/minilm-init sentences.txt --batch-size 16

`sentences.txt` holds one sentence per line, words separated by spaces. Samples are split as
the `span_marker` Trainer splits them (as many marker pairs as fit beside the text).
"""

import argparse
import random
import statistics

from datasets import Dataset
from span_marker import SpanMarkerModel


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a SpanMarker model directory (its tokenizer and settings)")
    parser.add_argument("sentences", help="one sentence per line, words separated by spaces")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = SpanMarkerModel.from_pretrained(args.model)
    config = model.config
    total = config.model_max_length + 2 * config.marker_max_length
    with open(args.sentences, encoding="utf8") as f:
        sentences = [line.split() for line in f]
    encoded = Dataset.from_dict({"tokens": sentences}).map(
        model.tokenizer, batched=True, remove_columns=["tokens"]
    )
    lengths = []
    for ids, spans in zip(encoded["input_ids"], encoded["num_spans"]):
        space = (total - len(ids)) // 2
        for start in range(0, max(spans, 1), space):
            lengths.append(len(ids) + len(ids) % 2 + 2 * min(space, spans - start))

    def mean_batch(order):
        size = args.batch_size
        return statistics.mean(
            -(-max(lengths[i] for i in order[j : j + size]) // 8) * 8
            for j in range(0, len(order), size)
        )

    order = list(range(len(lengths)))
    print(f"{len(sentences)} sentences, {len(lengths)} samples of {statistics.mean(lengths):.1f} tokens on average")
    print(f"Python span_marker, every batch:        {total} tokens per sample")
    print(f"span-marker-rs, dataset order:          {mean_batch(order):.1f}")
    random.Random(args.seed).shuffle(order)
    print(f"span-marker-rs, shuffled:               {mean_batch(order):.1f}")
    group = 50 * args.batch_size
    grouped = [
        i
        for g in range(0, len(order), group)
        for i in sorted(order[g : g + group], key=lambda i: -lengths[i])
    ]
    print(f"span-marker-rs, group_by_length:        {mean_batch(grouped):.1f}")


if __name__ == "__main__":
    main()

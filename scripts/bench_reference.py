"""Inference throughput of Python span_marker 1.8.1 on the sentences `span-marker bench` uses.

Called by `span-marker bench --python` with the same model directory, sentences (a JSON file of
word lists), batch size, thread count, warm-up and repetitions; prints one JSON object:
sentences per second (median over repetitions), peak resident memory and the entities, so that
the caller can check they are identical to its own.
"""

import argparse
import json
import os
import resource
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from span_marker import SpanMarkerModel


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--sentences", required=True, help="JSON file: a list of word lists")
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    with open(args.sentences, encoding="utf8") as f:
        sentences = json.load(f)
    model = SpanMarkerModel.from_pretrained(args.model)
    model.eval()
    for _ in range(args.warmup):
        model.predict(sentences, batch_size=args.batch_size)
    rates, entities = [], None
    for _ in range(args.repeat):
        start = time.perf_counter()
        entities = model.predict(sentences, batch_size=args.batch_size)
        rates.append(len(sentences) / (time.perf_counter() - start))
    print(
        json.dumps(
            {
                "sentences_per_second": statistics.median(rates),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "torch_threads": torch.get_num_threads(),
                "entities": [
                    [[e["word_start_index"], e["word_end_index"], e["label"]] for e in sentence]
                    for sentence in entities
                ],
            }
        )
    )


if __name__ == "__main__":
    main()

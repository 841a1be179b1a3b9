"""Throughput of Python span_marker 1.8.1 on the data `span-marker bench` uses.

Inference (default): called by `span-marker bench --python` with the same model directory,
sentences (a JSON file of word lists), batch size, thread count, warm-up and repetitions; prints
one JSON object: sentences per second (median over repetitions), peak resident memory and the
entities, so that the caller can check they are identical to its own.

Training (`--train-steps N`): the sentences file holds `{"tokens": [...], "ner_tags": [...]}`;
trains N steps with the span_marker Trainer and prints samples per second and peak memory.
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
    parser.add_argument("--train-steps", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    with open(args.sentences, encoding="utf8") as f:
        sentences = json.load(f)
    model = SpanMarkerModel.from_pretrained(args.model)
    if args.train_steps:
        return train(model, sentences, args)
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


def train(model, data, args):
    import tempfile

    from datasets import Dataset
    from span_marker import Trainer
    from transformers import TrainingArguments

    dataset = Dataset.from_dict(data)
    with tempfile.TemporaryDirectory() as tmp:
        training_args = TrainingArguments(
            output_dir=tmp,
            max_steps=args.train_steps,
            per_device_train_batch_size=args.batch_size,
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            report_to="none",
            use_cpu=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=training_args, train_dataset=dataset)
        result = trainer.train()
    print(
        json.dumps(
            {
                "samples_per_second": result.metrics["train_samples_per_second"],
                "runtime": result.metrics["train_runtime"],
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()

"""Throughput of Python span_marker 1.8.1 on the data `span-marker-bench` uses.

Inference (default): called by `span-marker-bench --python` with the same model directory,
sentences (a JSON file of word lists), batch size, thread count, warm-up and repetitions; prints
one JSON object: sentences per second (median over repetitions), peak resident memory and the
entities, so that the caller can check they are identical to its own.

Training (`--train-steps N`): the sentences file holds `{"train": {"tokens": [...], "ner_tags":
[...]}, "eval": null or the same}`; trains N steps with the span_marker Trainer at
`--learning-rate`, `--repeat` times from the same checkpoint with seeds 0, 1, ..., and prints
the median samples per second, peak memory and, with eval data, each trained model's entities
on it.
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
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--in-order",
        action="store_true",
        help="training: batches in dataset order (a sequential sampler instead of a random one)",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        help="training: fp32, bf16 (CUDA, or a CPU with bfloat16) or fp16 (CUDA); inference always runs float32",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    with open(args.sentences, encoding="utf8") as f:
        sentences = json.load(f)
    model = SpanMarkerModel.from_pretrained(args.model).to(args.device)
    if args.train_steps:
        return train(model, sentences, args)
    model.eval()
    for _ in range(args.warmup):
        model.predict(sentences, batch_size=args.batch_size)
    rates, entities = [], None
    for _ in range(args.repeat):
        synchronize(args.device)
        start = time.perf_counter()
        entities = model.predict(sentences, batch_size=args.batch_size)
        synchronize(args.device)
        rates.append(len(sentences) / (time.perf_counter() - start))
    print(
        json.dumps(
            {
                "sentences_per_second": statistics.median(rates),
                "peak_rss_mb": peak_rss_mb(),
                "torch_threads": torch.get_num_threads(),
                "entities": [
                    [[e["word_start_index"], e["word_end_index"], e["label"]] for e in sentence]
                    for sentence in entities
                ],
            }
        )
    )


def peak_rss_mb():
    """This process's peak resident memory. On Linux from `VmHWM`: `ru_maxrss` carries the peak
    of the parent (the Rust benchmark) over fork and exec, so it overstated this side whenever
    the Rust side had peaked higher before starting it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synchronize(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train(model, data, args):
    """Trains `args.repeat` times from the checkpoint, with seeds 0, 1, ..."""
    import tempfile

    from datasets import Dataset
    from span_marker import Trainer
    from torch.utils.data import SequentialSampler
    from transformers import TrainingArguments

    class InOrderTrainer(Trainer):
        def _get_train_sampler(self, *_args, **_kwargs):
            return SequentialSampler(self.train_dataset)

    dataset = Dataset.from_dict(data["train"])
    rates, eval_entities = [], []
    for seed in range(max(args.repeat, 1)):
        if seed:
            model = SpanMarkerModel.from_pretrained(args.model).to(args.device)
        with tempfile.TemporaryDirectory() as tmp:
            training_args = TrainingArguments(
                output_dir=tmp,
                max_steps=args.train_steps,
                per_device_train_batch_size=args.batch_size,
                learning_rate=args.learning_rate,
                seed=seed,
                save_strategy="no",
                eval_strategy="no",
                logging_strategy="no",
                report_to="none",
                use_cpu=args.device == "cpu",
                bf16=args.precision == "bf16",
                fp16=args.precision == "fp16",
                dataloader_num_workers=0,
                disable_tqdm=True,
            )
            trainer = (InOrderTrainer if args.in_order else Trainer)(
                model=model, args=training_args, train_dataset=dataset
            )
            result = trainer.train()
        rates.append(result.metrics["train_samples_per_second"])
        if data.get("eval"):
            # The caller scores these with the same scorer as its own (the Trainer's evaluation
            # would need the `seqeval` metric script from the Hugging Face Hub).
            model.eval()
            predicted = model.predict(data["eval"]["tokens"], batch_size=args.batch_size)
            eval_entities.append(
                [
                    [[e["word_start_index"], e["word_end_index"], e["label"]] for e in sentence]
                    for sentence in predicted
                ]
            )
    print(
        json.dumps(
            {
                "samples_per_second": statistics.median(rates),
                "peak_rss_mb": peak_rss_mb(),
                "torch_threads": torch.get_num_threads(),
                "eval_entities": eval_entities,
            }
        )
    )


if __name__ == "__main__":
    main()

"""CoNLL-2003 in the shapes the GPU run feeds its programs (standard library only, except
`parquet`, which needs pyarrow and runs at packing time).

    python3 data.py words CONLL OUT.txt        # one sentence per line, words joined by spaces
    python3 data.py json CONLL OUT.json        # a list of word lists (bench_reference.py)
    python3 data.py train-json MODEL CONLL OUT.json [--sentences N]
                                               # {"train": {"tokens", "ner_tags"}, "eval": null},
                                               # tag ids from MODEL's config.json
    python3 data.py parquet CONLL OUT.parquet  # columns `id` and `tokens` (List<Utf8>)
    python3 data.py head CONLL N OUT.txt       # the first N sentences, in CoNLL format
"""

import json
import sys
from pathlib import Path


def read_conll(path):
    """(words, tags) per sentence; `-DOCSTART-` lines and blank lines separate sentences."""
    sentences, words, tags = [], [], []
    for line in Path(path).read_text(encoding="utf8").splitlines() + [""]:
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                sentences.append((words, tags))
            words, tags = [], []
            continue
        words.append(fields[0])
        tags.append(fields[-1])
    return sentences


def main(argv):
    command, rest = argv[0], argv[1:]
    if command == "words":
        conll, out = rest
        lines = [" ".join(words) for words, _ in read_conll(conll)]
        Path(out).write_text("\n".join(lines) + "\n", encoding="utf8")
    elif command == "json":
        conll, out = rest
        Path(out).write_text(json.dumps([words for words, _ in read_conll(conll)]))
    elif command == "train-json":
        model, conll, out = rest[:3]
        limit = int(rest[rest.index("--sentences") + 1]) if "--sentences" in rest else None
        config = json.loads((Path(model) / "config.json").read_text())
        label2id = config["encoder"]["label2id"]  # the IOB tags; the top level has the reduced labels
        sentences = read_conll(conll)[:limit]
        data = {
            "tokens": [words for words, _ in sentences],
            "ner_tags": [[label2id[t] for t in tags] for _, tags in sentences],
        }
        Path(out).write_text(json.dumps({"train": data, "eval": None}))
    elif command == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        conll, out = rest
        sentences = read_conll(conll)
        table = pa.table(
            {
                "id": pa.array(range(len(sentences)), pa.int64()),
                "tokens": pa.array([words for words, _ in sentences], pa.list_(pa.string())),
            }
        )
        pq.write_table(table, out, row_group_size=512)
    elif command == "head":
        conll, count, out = rest
        blocks = ["\n".join(f"{w} {t}" for w, t in zip(*s)) for s in read_conll(conll)[: int(count)]]
        Path(out).write_text("\n\n".join(blocks) + "\n", encoding="utf8")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

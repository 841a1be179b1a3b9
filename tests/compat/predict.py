"""Loads a SpanMarker model directory with Python span_marker 1.8.1 and prints, as JSON, its
logits and entities on the fixture inputs of generate_models.py.

Used by tests/python_compat.rs to check that models saved by the Rust crate load in Python and
predict the same. Usage (from the repository root):

    .venv-python tests/compat/predict.py MODEL_DIR
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fixtures"))
from generate_models import TEXT_INPUTS, WORD_INPUTS, collated_logits  # noqa: E402
from span_marker import SpanMarkerModel  # noqa: E402


def main(model_dir):
    model = SpanMarkerModel.from_pretrained(model_dir)
    model.eval()
    cases = []
    for kind, inputs in (("words", WORD_INPUTS), ("text", TEXT_INPUTS)):
        logits = collated_logits(model, inputs)
        cases.append(
            {
                "kind": kind,
                "inputs": inputs,
                "logits_shape": list(logits.shape),
                "logits": logits.flatten().tolist(),
                "entities": model.predict(inputs, batch_size=4),
            }
        )
    json.dump({"vocab_size": model.config.vocab_size, "cases": cases}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])

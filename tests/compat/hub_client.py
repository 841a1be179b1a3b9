"""Checks that the stand-in Hub of the tests speaks the real protocol: the Python
`huggingface_hub` client (the one every Hugging Face tool uses) creates a private repository on
it, uploads a folder (an inline text file, a README and an LFS weights file) and downloads every
file back, and sees a missing file as `EntryNotFoundError`. With `--load ID`, it also loads
SpanMarker model ID (pushed by the Rust crate) with Python `span_marker` and prints its
entities and logits on the fixture sentences.

Used by tests/hub.rs, which starts the stand-in and passes its address in `HF_ENDPOINT`, a
token in `HF_TOKEN` and an empty cache in `HF_HOME`. Prints one JSON object.

    .venv-python tests/compat/hub_client.py WORK_DIR [--load ID]
"""

import argparse
import json
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "0"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from huggingface_hub import HfApi, hf_hub_download  # noqa: E402
from huggingface_hub.errors import EntryNotFoundError  # noqa: E402

REPO = "user/python-upload"


def upload_and_download(work):
    folder = work / "upload"
    folder.mkdir(parents=True)
    files = {
        "notes.txt": b"plain text, committed inline\n",
        "README.md": b"---\nlicense: apache-2.0\n---\n# A test repository\n",
        "weights/model.safetensors": bytes(range(256)) * 64,
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    api = HfApi()
    me = api.whoami()["name"]
    repo_url = api.create_repo(REPO, private=True, exist_ok=True)
    api.create_repo(REPO, private=True, exist_ok=True)  # again: exists, fine
    commit = api.upload_folder(repo_id=REPO, folder_path=str(folder), commit_message="from Python")
    downloaded = {}
    for name, data in files.items():
        path = hf_hub_download(REPO, name, cache_dir=str(work / "cache"))
        downloaded[name] = Path(path).read_bytes() == data
    try:
        hf_hub_download(REPO, "absent.json", cache_dir=str(work / "cache"))
        missing = "downloaded"
    except EntryNotFoundError:
        missing = "EntryNotFoundError"
    return {
        "user": me,
        "repo_url": str(repo_url),
        "commit_oid": commit.oid,
        "downloaded_equal": downloaded,
        "missing_file": missing,
    }


def load(model_id):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fixtures"))
    from generate_models import WORD_INPUTS, collated_logits  # noqa: E402
    from span_marker import SpanMarkerModel  # noqa: E402

    model = SpanMarkerModel.from_pretrained(model_id)
    model.eval()
    logits = collated_logits(model, WORD_INPUTS)
    return {
        "entities": model.predict(WORD_INPUTS, batch_size=4),
        "logits": logits.flatten().tolist(),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--load")
    args = parser.parse_args()
    out = load(args.load) if args.load else upload_and_download(args.work)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

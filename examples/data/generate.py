"""Writes the bundled toy NER corpus (train.txt, test.txt) in CoNLL format: `word TAG` per line.

The sentences are made from hand-written templates and invented names, so that the examples can
train a model in minutes on a CPU without any external data. Deterministic; run from anywhere:

    python3 examples/data/generate.py
"""

import random
from pathlib import Path

PEOPLE = [
    "Ada Lovelace", "Alan Turing", "Grace Hopper", "Maria Silva", "Jonas Berg", "Li Wei", "Amara Okafor",
    "Pierre Dubois", "Sofia Rossi", "Kenji Tanaka", "Olga Petrova", "Tom Becker", "Nina Haddad", "Ravi Patel",
    "Elena Garcia", "Lars Nilsson", "Fatima Zahra", "Noah Fischer", "Ingrid Holm", "Diego Ramos",
]
PLACES = [
    "Paris", "Berlin", "Lagos", "Osaka", "Lima", "Oslo", "Cairo", "Quebec", "Porto", "Seoul",
    "New York", "Cape Town", "Buenos Aires", "Kuala Lumpur", "San Diego", "Rio de Janeiro",
]
ORGS = [
    "Acme Corp", "Globex", "Initech", "Umbrella Group", "Stark Industries", "Wayne Enterprises", "Hooli",
    "the United Nations", "the World Bank", "Nordic Rail", "Blue Harbor Bank", "Northwind Traders",
]
MISC = ["Olympic Games", "World Cup", "Nobel Prize", "Python", "Esperanto", "Renaissance", "Tour de France"]

TEMPLATES = [
    "{PER} met {PER} in {LOC} on Monday .",
    "{ORG} opened a new office in {LOC} .",
    "{PER} , who works for {ORG} , lives in {LOC} .",
    "Shares of {ORG} rose after {PER} spoke in {LOC} .",
    "{PER} won the {MISC} last year .",
    "The {MISC} will be held in {LOC} next summer .",
    "{ORG} and {ORG} signed a deal in {LOC} .",
    "According to {PER} , {ORG} will hire more staff .",
    "{PER} flew from {LOC} to {LOC} .",
    "Officials in {LOC} praised {ORG} for its work on the {MISC} .",
    "{PER} learned {MISC} while living in {LOC} .",
    "Nobody expected {PER} to leave {ORG} so soon .",
]
POOLS = {"PER": PEOPLE, "LOC": PLACES, "ORG": ORGS, "MISC": MISC}


def sentence(rng):
    template = rng.choice(TEMPLATES)
    rows = []
    for piece in template.split(" "):
        if piece.startswith("{") and piece.endswith("}"):
            label = piece[1:-1]
            words = rng.choice(POOLS[label]).split(" ")
            rows += [(w, ("B-" if i == 0 else "I-") + label) for i, w in enumerate(words)]
        else:
            rows.append((piece, "O"))
    return rows


def write(path, count, seed):
    rng = random.Random(seed)
    with open(path, "w", encoding="utf8") as f:
        for _ in range(count):
            for word, tag in sentence(rng):
                f.write(f"{word} {tag}\n")
            f.write("\n")


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    write(here / "train.txt", 600, seed=1)
    write(here / "test.txt", 150, seed=2)

"""Training from Python: Polars and DataFusion frames in, a model Python span_marker loads out."""

from __future__ import annotations

import polars as pl
import pytest
from conftest import TINY_ENCODER, assert_same_entities, rust_annotate
from datafusion import SessionContext

import span_marker_rs

ARGS = {"num_train_epochs": 1, "learning_rate": 5e-4, "per_device_train_batch_size": 8, "seed": 7}


def test_train_from_a_lazy_frame_saves_a_model_python_span_marker_loads(
    train_rows, sentences, tmp_path, span_marker_bin
):
    output = tmp_path / "model"
    result = span_marker_rs.train(
        train_rows.head(160).lazy(),
        encoder=TINY_ENCODER,
        args={**ARGS, "output_dir": str(output)},
        eval_frame=sentences.head(40).lazy(),
    )
    assert result.output_dir == output
    assert result.metrics["train_loss"] > 0
    assert 0.0 <= result.metrics["eval_overall_f1"] <= 1.0
    assert "eval_loss" in result.metrics

    from span_marker import SpanMarkerModel

    model = SpanMarkerModel.from_pretrained(str(output))
    labels = set(model.config.id2label.values())
    assert {"O", "PER", "LOC"} <= labels, labels

    # The new model serves the plugin as it serves the Rust engine.
    head = sentences.head(20)
    out = head.select(pl.col("tokens").span_marker.predict(str(output), allow_overlapping=True))
    want = rust_annotate(span_marker_bin, head, tmp_path, "--model", str(output), "--overlapping")
    assert_same_entities(out["tokens"].to_list(), want)


def test_train_from_a_datafusion_dataframe_with_tag_ids(train_rows, tmp_path):
    labels = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    ids = train_rows.head(64).with_columns(
        pl.col("ner_tags").list.eval(pl.element().replace_strict(labels, range(len(labels))))
    )
    ctx = SessionContext()
    frame = ctx.from_arrow(ids.to_arrow())
    result = span_marker_rs.train(
        frame,
        encoder=TINY_ENCODER,
        labels=labels,
        args={**ARGS, "max_steps": 2, "output_dir": str(tmp_path / "ids")},
        model_settings={"entity_max_length": 4},
    )
    assert (result.output_dir / "config.json").is_file()
    assert '"entity_max_length": 4' in (result.output_dir / "config.json").read_text()


def test_bad_training_input_fails_clearly(train_rows, tmp_path):
    rows = train_rows.head(8)
    with pytest.raises(span_marker_rs.SpanMarkerError, match="`learning_rat`"):
        span_marker_rs.train(rows, encoder=TINY_ENCODER, args={"learning_rat": 1.0})
    with pytest.raises(span_marker_rs.SpanMarkerError, match="`num_train_epochs`"):
        span_marker_rs.train(rows, encoder=TINY_ENCODER, args={"num_train_epochs": "two"})
    with pytest.raises(span_marker_rs.SpanMarkerError, match="missing-encoder"):
        span_marker_rs.train(
            rows, encoder=tmp_path / "missing-encoder", args={"output_dir": str(tmp_path / "b")}
        )
    with pytest.raises(TypeError, match="`frame`"):
        span_marker_rs.train([1, 2], encoder=TINY_ENCODER)
    with pytest.raises(TypeError, match="`args` must be a dict"):
        span_marker_rs.train(rows, encoder=TINY_ENCODER, args=["x"])
    with pytest.raises(TypeError, match="`labels` must be a list of strings"):
        span_marker_rs.train(rows, encoder=TINY_ENCODER, labels="OB")
    with pytest.raises(ValueError, match="`args.learning_rate` must be a finite number"):
        span_marker_rs.train(rows, encoder=TINY_ENCODER, args={"learning_rate": float("nan")})
    with pytest.raises(span_marker_rs.SpanMarkerError, match="no column 'nope'"):
        span_marker_rs.train(rows, encoder=TINY_ENCODER, tags="nope")
    with pytest.raises(span_marker_rs.SpanMarkerError, match="tokens"):
        span_marker_rs.train(
            rows.with_columns(tokens=pl.lit(1)),
            encoder=TINY_ENCODER,
            args={"output_dir": str(tmp_path / "c")},
        )


def test_categorical_columns_and_unrelated_columns_of_any_type(train_rows, tmp_path):
    rows = train_rows.head(16).with_columns(
        pl.col("ner_tags").cast(pl.List(pl.Categorical)),
        extra=pl.lit("x").cast(pl.Categorical),
        small=pl.lit(1, dtype=pl.UInt8),
    )
    result = span_marker_rs.train(
        rows,
        encoder=TINY_ENCODER,
        args={**ARGS, "max_steps": 1, "output_dir": str(tmp_path / "cat")},
    )
    assert (result.output_dir / "config.json").is_file()

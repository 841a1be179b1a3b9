"""The Polars expression plugin against the Rust engine on the same model and sentences."""

from __future__ import annotations

import warnings

import polars as pl
import pytest
from conftest import TINY_MODEL, assert_same_entities, run_cli, rust_annotate

import span_marker_rs  # noqa: F401  (registers the namespace)
from span_marker_rs import _native
from span_marker_rs.polars import _predict_kwargs

ENTITY = pl.Struct(
    {"start": pl.Int64, "end": pl.Int64, "label": pl.String, "score": pl.Float32}
)
TEXT_ENTITY = pl.Struct(
    {
        "start": pl.Int64,
        "end": pl.Int64,
        "label": pl.String,
        "score": pl.Float32,
        "char_start": pl.Int64,
        "char_end": pl.Int64,
        "text": pl.String,
    }
)


@pytest.fixture(scope="module")
def rust_entities(span_marker_bin, sentences, tmp_path_factory):
    return rust_annotate(
        span_marker_bin, sentences, tmp_path_factory.mktemp("rust"), "--model", TINY_MODEL
    )


def test_eager_lazy_and_streaming_equal_the_rust_engine(sentences, rust_entities):
    expr = pl.col("tokens").span_marker.predict(TINY_MODEL).alias("entities")
    eager = sentences.with_columns(expr)
    lazy = sentences.lazy().with_columns(expr).collect()
    streaming = sentences.lazy().with_columns(expr).collect(engine="streaming")
    assert eager.schema["entities"] == pl.List(ENTITY)
    assert lazy.schema == eager.schema == streaming.schema
    assert sum(len(e) for e in rust_entities) > 100, "the fixture model finds entities"
    for frame in (eager, lazy, streaming):
        assert frame["id"].to_list() == sentences["id"].to_list()
        assert_same_entities(frame["entities"].to_list(), rust_entities)


def rust_api(frame: pl.DataFrame, column: str, model: str, **options) -> list:
    """The entities that the Rust Polars API (`col(..).span_marker().predict_with`) gives."""
    kwargs = _predict_kwargs(model, **options)
    out = _native.rust_polars_predict(frame, column, column == "text", kwargs)
    return out[column].to_list()


def test_plugin_equals_the_rust_polars_api_in_every_engine(sentences):
    want = rust_api(sentences, "tokens", TINY_MODEL)
    expr = pl.col("tokens").span_marker.predict(TINY_MODEL)
    assert sentences.lazy().select(expr).collect()["tokens"].to_list() == want
    # The streaming engine batches rows its own way: scores may differ in the last bit.
    streaming = sentences.lazy().select(expr).collect(engine="streaming")
    assert_same_entities(streaming["tokens"].to_list(), want)
    texts = pl.DataFrame({"text": [" ".join(words) for words in sentences["tokens"].head(50)]})
    got = texts.select(pl.col("text").span_marker.predict_text("bundled", threshold=0.5))
    assert got["text"].to_list() == rust_api(texts, "text", "bundled", threshold=0.5)


def test_options_reach_the_model(span_marker_bin, sentences, tmp_path, rust_entities):
    head = sentences.head(60)
    for kwargs, flags in [
        ({"threshold": 0.9}, ["--threshold", "0.9"]),
        ({"allow_overlapping": True}, ["--overlapping"]),
        ({"batch_size": 3, "precision": "int8"}, ["--batch-size", "3", "--precision", "int8"]),
    ]:
        got = head.select(pl.col("tokens").span_marker.predict(TINY_MODEL, **kwargs))
        want = rust_annotate(span_marker_bin, head, tmp_path, "--model", TINY_MODEL, *flags)
        assert_same_entities(got["tokens"].to_list(), want)
        # Each option changes the result, so a dropped option fails the comparison.
        assert want != rust_entities[:60], kwargs


def test_text_column_and_nulls(span_marker_bin, tmp_path):
    texts = pl.DataFrame(
        {
            "id": [0, 1, 2, 3],
            "text": [
                "Angela Merkel visited Paris on Monday.",
                None,
                "",
                "The European Central Bank met in Frankfurt.",
            ],
        }
    )
    got = texts.lazy().with_columns(
        entities=pl.col("text").span_marker.predict_text("bundled")
    ).collect(engine="streaming")
    assert got.schema["entities"] == pl.List(TEXT_ENTITY)
    want = rust_annotate(span_marker_bin, texts, tmp_path, column="text")
    assert_same_entities(got["entities"].to_list(), want)
    assert got["entities"][1] is None
    assert got["entities"].to_list()[2] == []
    assert [e["text"] for e in got["entities"][0]] == ["Angela Merkel", "Paris"]


def test_candidates_equal_the_sql_function(span_marker_bin, sentences, tmp_path):
    head = sentences.head(20)
    source = tmp_path / "in.parquet"
    head.write_parquet(source)
    output = tmp_path / "candidates.parquet"
    run_cli(
        span_marker_bin,
        "sql",
        f"COPY (SELECT id, span_marker_candidates(tokens, 3) AS spans FROM '{source}' "
        f"ORDER BY id) TO '{output}'",
    )
    want = pl.read_parquet(output)["spans"].to_list()
    got = head.select(pl.col("tokens").span_marker.candidates(entity_max_length=3))
    assert got["tokens"].to_list() == want
    assert got.schema["tokens"] == pl.List(pl.Struct({"start": pl.Int64, "end": pl.Int64}))


def test_a_row_that_cannot_be_annotated_is_null_with_a_warning_or_an_error_when_strict():
    # A word longer than the model input (punctuation is a token per character), a null word.
    frame = pl.DataFrame(
        {"tokens": [["Paris", "is", "nice"], ["." * 1000], ["Rome", None], ["Berlin"]]}
    )
    with pytest.warns(UserWarning, match=r"2 of the 4 rows of `tokens` in this batch.*row 1: "):
        got = frame.select(pl.col("tokens").span_marker.predict(TINY_MODEL))
    rows = got["tokens"].to_list()
    assert rows[1] is None and rows[2] is None
    assert rows[0] is not None and rows[3] is not None
    with pytest.raises(pl.exceptions.ComputeError, match="batch of 4 rows: row 1"):
        frame.select(pl.col("tokens").span_marker.predict(TINY_MODEL, strict=True))


def test_bad_input_raises_clear_exceptions(tmp_path):
    words = pl.DataFrame({"tokens": [["Paris"]], "text": ["Paris"], "n": [1]})
    # Polars reports a plugin's errors as ComputeError, with the plugin's message.
    with pytest.raises(pl.exceptions.ComputeError, match="list of words use predict"):
        words.select(pl.col("tokens").span_marker.predict_text(TINY_MODEL))
    with pytest.raises(pl.exceptions.ComputeError, match="span_marker.predict: `n`"):
        words.select(pl.col("n").span_marker.predict(TINY_MODEL))
    with pytest.raises(pl.exceptions.ComputeError, match="no-such-model"):
        words.select(pl.col("tokens").span_marker.predict(str(tmp_path / "no-such-model")))
    with pytest.raises(pl.exceptions.ComputeError, match="precision"):
        words.select(pl.col("tokens").span_marker.predict(TINY_MODEL, precision="fp64"))
    with pytest.raises(pl.exceptions.ComputeError, match="device"):
        words.select(pl.col("tokens").span_marker.predict(TINY_MODEL, device="tpu"))
    with pytest.raises(ValueError, match="threshold"):
        pl.col("tokens").span_marker.predict(TINY_MODEL, threshold=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        pl.col("tokens").span_marker.predict(TINY_MODEL, batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        pl.col("tokens").span_marker.predict(TINY_MODEL, batch_size="8")
    with pytest.raises(TypeError, match="model"):
        pl.col("tokens").span_marker.predict(None)
    with pytest.raises(ValueError, match="entity_max_length"):
        pl.col("tokens").span_marker.candidates(0)


def test_null_typed_columns_give_nulls():
    nulls = pl.DataFrame({"c": [None, None]})
    assert nulls.schema["c"] == pl.Null
    for expr in [
        pl.col("c").span_marker.predict(TINY_MODEL),
        pl.col("c").span_marker.predict_text(TINY_MODEL),
        pl.col("c").span_marker.candidates(),
    ]:
        assert nulls.select(expr)["c"].to_list() == [None, None]
    null_words = pl.DataFrame({"c": [[None], []]}, schema={"c": pl.List(pl.Null)})
    with pytest.warns(UserWarning, match="word 0 is null"):
        got = null_words.select(pl.col("c").span_marker.predict(TINY_MODEL))
    assert got["c"].to_list() == [None, []]


def test_any_polars_type_is_a_clear_error_not_a_panic():
    frames = [
        pl.DataFrame({"c": ["Paris"]}, schema={"c": pl.Categorical}),
        pl.DataFrame({"c": [["Paris"]]}, schema={"c": pl.List(pl.Categorical)}),
        pl.DataFrame({"c": [["Paris", "is"]]}, schema={"c": pl.Array(pl.String, 2)}),
        pl.DataFrame({"c": [1]}, schema={"c": pl.UInt8}),
        pl.DataFrame({"c": ["1.5"]}).with_columns(pl.col("c").cast(pl.Decimal(5, 2))),
    ]
    for frame in frames:
        for expr in [
            pl.col("c").span_marker.predict(TINY_MODEL),
            pl.col("c").span_marker.predict_text(TINY_MODEL),
        ]:
            with pytest.raises(pl.exceptions.ComputeError, match="`c` must be") as error:
                frame.select(expr)
            assert "panicked" not in str(error.value)


def test_numpy_scalars_are_accepted_as_numbers():
    np = pytest.importorskip("numpy")
    frame = pl.DataFrame({"tokens": [["Paris", "is", "nice"]]})
    got = frame.select(
        pl.col("tokens").span_marker.predict(
            TINY_MODEL, batch_size=np.int64(4), threshold=np.float32(0.5)
        )
    )
    assert got["tokens"][0][0]["label"] == "LOC"
    with pytest.raises(ValueError, match="batch_size"):
        pl.col("tokens").span_marker.predict(TINY_MODEL, batch_size=2**70)
    with pytest.raises(ValueError, match="threshold"):
        pl.col("tokens").span_marker.predict(TINY_MODEL, threshold=float("nan"))


def test_warnings_from_the_streaming_engine_and_warnings_as_errors():
    frame = pl.LazyFrame({"tokens": [["Paris"], ["Rome", None]] * 50})
    expr = pl.col("tokens").span_marker.predict(TINY_MODEL)
    with pytest.warns(UserWarning, match="word 1 is null"):
        got = frame.select(expr).collect(engine="streaming")
    assert got["tokens"].null_count() == 50
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(pl.exceptions.ComputeError, match="word 1 is null"):
            frame.select(expr).collect(engine="streaming")


def test_nul_bytes_in_messages_do_not_hide_the_error():
    frame = pl.DataFrame({"tokens": [["Paris"]]})
    with pytest.raises(pl.exceptions.ComputeError, match=r"no-such\\0model"):
        frame.select(pl.col("tokens").span_marker.predict("no-such\0model"))

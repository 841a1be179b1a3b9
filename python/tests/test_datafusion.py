"""The SQL functions in Python's DataFusion (through the FFI) against the Rust engine's SQL."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest
from conftest import TINY_MODEL, assert_same_entities, run_cli
from datafusion import SessionConfig, SessionContext

import span_marker_rs


def rust_sql(binary: str, tmp_path, source, select: str, *settings: str) -> list:
    output = tmp_path / "rust-sql.parquet"
    output.unlink(missing_ok=True)
    statements = [f"SET span_marker.{s}" for s in settings]
    query = select.format(source=f"'{source}'")
    statements.append(f"COPY ({query} ORDER BY id) TO '{output}'")
    run_cli(binary, "sql", *statements)
    return pl.read_parquet(output)["e"].to_list()


@pytest.fixture
def corpus(sentences, tmp_path):
    path = tmp_path / "corpus.parquet"
    sentences.head(80).write_parquet(path)
    return path


def python_sql(ctx: SessionContext, select: str, source) -> list:
    if not ctx.table_exist("corpus"):
        ctx.register_parquet("corpus", str(source))
    table = ctx.sql(f"{select.format(source='corpus')} ORDER BY id").to_arrow_table()
    return table.column("e").to_pylist()


SELECT = "SELECT id, span_marker_predict(tokens) AS e FROM {source}"


def test_sql_through_the_ffi_equals_the_rust_sql(span_marker_bin, tmp_path, corpus):
    ctx = SessionContext(span_marker_rs.session_config())
    span_marker_rs.register(ctx)
    ctx.sql(f"SET span_marker.model = '{TINY_MODEL}'")
    baseline = python_sql(ctx, SELECT, corpus)
    assert_same_entities(
        baseline, rust_sql(span_marker_bin, tmp_path, corpus, SELECT, f"model = '{TINY_MODEL}'")
    )
    assert sum(len(e) for e in baseline) > 20
    for setting in ["threshold = 0.9", "allow_overlapping = true", "precision = 'int8'"]:
        ctx = SessionContext(span_marker_rs.session_config())
        span_marker_rs.register(ctx)
        ctx.sql(f"SET span_marker.model = '{TINY_MODEL}'")
        ctx.sql(f"SET span_marker.{setting}")
        got = python_sql(ctx, SELECT, corpus)
        want = rust_sql(
            span_marker_bin, tmp_path, corpus, SELECT, f"model = '{TINY_MODEL}'", setting
        )
        assert_same_entities(got, want)
        assert got != baseline, f"{setting} changes the result"


def test_text_candidates_and_model_info(span_marker_bin, tmp_path):
    ctx = SessionContext(span_marker_rs.session_config())
    span_marker_rs.register(ctx, model="bundled")
    batch = ctx.sql(
        "SELECT span_marker_predict_text('Angela Merkel visited Paris.') AS e, "
        "span_marker_candidates(['New', 'York']) AS c, span_marker_model_info() AS info"
    ).to_arrow_table()
    assert [e["text"] for e in batch.column("e")[0].as_py()] == ["Angela Merkel", "Paris"]
    assert batch.column("c")[0].as_py() == [
        {"start": 0, "end": 1},
        {"start": 0, "end": 2},
        {"start": 1, "end": 2},
    ]
    assert '"model":"bundled"' in batch.column("info")[0].as_py()
    # `span_marker.entity_max_length` is the default longest candidate.
    ctx.sql("SET span_marker.entity_max_length = 1")
    short = ctx.sql("SELECT span_marker_candidates(['New', 'York']) AS c").to_arrow_table()
    assert short.column("c")[0].as_py() == [{"start": 0, "end": 1}, {"start": 1, "end": 2}]


def test_null_rows_and_dataframe_api():
    ctx = SessionContext(span_marker_rs.session_config(SessionConfig().with_batch_size(2)))
    span_marker_rs.register(ctx, model=TINY_MODEL)
    frame = ctx.from_arrow(
        pa.table({"id": [0, 1, 2], "tokens": [["Paris", "is", "nice"], None, ["Berlin"]]})
    )
    predict = ctx.udf("span_marker_predict")
    from datafusion import col

    rows = frame.select(col("id"), predict(col("tokens")).alias("e")).sort(col("id"))
    values = rows.to_arrow_table().column("e").to_pylist()
    assert values[1] is None
    assert [e["label"] for e in values[0]] == ["LOC"]
    assert [e["label"] for e in values[2]] == ["LOC"]


def test_bad_settings_and_sessions_fail_clearly(tmp_path):
    ctx = SessionContext(span_marker_rs.session_config())
    span_marker_rs.register(ctx)
    with pytest.raises(Exception, match="no model chosen"):
        ctx.sql("SELECT span_marker_predict(['Paris']) AS e").collect()
    ctx.sql("SET span_marker.model = 'bundled'")
    # SET checks keys and that values parse, and the session keeps its settings.
    with pytest.raises(Exception, match=r"invalid value 'many' for `span_marker.batch_size`"):
        ctx.sql("SET span_marker.batch_size = 'many'")
    with pytest.raises(Exception, match=r"unknown setting `span_marker.nope`; the settings are"):
        ctx.sql("SET span_marker.nope = 1")
    ctx.sql("SET span_marker.batch_size = 8")
    entities = ctx.sql("SELECT span_marker_predict(['Paris']) AS e").to_arrow_table()
    assert entities.column("e")[0].as_py()[0]["label"] == "LOC"
    ctx.sql("SET span_marker.threshold = 2")
    with pytest.raises(Exception, match="span_marker.threshold"):
        ctx.sql("SELECT span_marker_predict(['Paris']) AS e").collect()
    ctx.sql("SET span_marker.threshold = 0")
    with pytest.raises(Exception, match="span_marker_predict_text"):
        ctx.sql("SELECT span_marker_predict('Paris') AS e").collect()
    ctx.sql(f"SET span_marker.model = '{tmp_path / 'missing'}'")
    with pytest.raises(Exception, match="missing"):
        ctx.sql("SELECT span_marker_predict(['Paris']) AS e").collect()

    # A context made without the settings: the functions say how to make one.
    plain = SessionContext()
    span_marker_rs.register(plain)
    with pytest.raises(Exception, match=r"span_marker_rs.session_config\(\)"):
        plain.sql("SELECT span_marker_predict(['Paris']) AS e").collect()
    with pytest.raises(span_marker_rs.SpanMarkerError, match="missing"):
        span_marker_rs.register(plain, model=tmp_path / "missing")
    with pytest.raises(TypeError, match="`model`"):
        span_marker_rs.register(plain, model=123)
    with pytest.raises(ValueError, match="`device` applies to `model`"):
        span_marker_rs.register(plain, device="cuda")


def test_strict_mode_fails_on_an_unannotatable_row():
    ctx = SessionContext(span_marker_rs.session_config())
    span_marker_rs.register(ctx, model=TINY_MODEL)
    query = "SELECT span_marker_predict(['Paris', repeat('.', 1000)]) AS e"
    assert ctx.sql(query).to_arrow_table().column("e").to_pylist() == [None]
    ctx.sql("SET span_marker.strict = true")
    with pytest.raises(Exception, match="cannot be annotated"):
        ctx.sql(query).collect()


def test_text_and_candidates_through_the_ffi_equal_the_rust_sql(span_marker_bin, tmp_path):
    texts = pl.DataFrame(
        {
            "id": [0, 1, 2],
            "text": ["Angela Merkel visited Paris.", None, "The ECB met in Frankfurt."],
            "tokens": [["New", "York", "is", "big"], ["Rome"], None],
        }
    )
    source = tmp_path / "texts.parquet"
    texts.write_parquet(source)
    select = (
        "SELECT id, span_marker_predict_text(text) AS e, "
        "span_marker_candidates(tokens, 2) AS c FROM {source}"
    )
    output = tmp_path / "rust.parquet"
    run_cli(
        span_marker_bin,
        "sql",
        f"COPY ({select.format(source=repr(str(source)))} ORDER BY id) TO '{output}'",
    )
    want = pl.read_parquet(output)
    ctx = SessionContext(span_marker_rs.session_config())
    span_marker_rs.register(ctx, model="bundled")
    ctx.register_parquet("texts", str(source))
    got = ctx.sql(f"{select.format(source='texts')} ORDER BY id").to_arrow_table()
    assert_same_entities(got.column("e").to_pylist(), want["e"].to_list())
    assert got.column("c").to_pylist() == want["c"].to_list()
    assert got.column("c").to_pylist()[0][:2] == [{"start": 0, "end": 1}, {"start": 0, "end": 2}]

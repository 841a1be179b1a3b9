"""Corpora in object storage from Python: Polars reads `s3://` with its `storage_options` and the
expression runs over what it read; a DataFusion session with an S3 store registered runs the
SQL functions over `s3://` tables; and `span-marker annotate` writes `s3://` outputs that Polars
reads back; the same for Azure Blob Storage (`az://`) through Polars and the command line. Each
equals the same work on the local file, row for row. Against moto's S3 server and Azurite,
started here with their own credentials (tests/fixtures/s3_server.py, azure_server.py; skipped,
saying why, where they are not installed: `bash scripts/setup.sh` installs them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import polars as pl
import pytest
from conftest import REPO, TINY_MODEL, assert_same_entities
from datafusion import SessionContext

import span_marker_rs


@pytest.fixture(scope="module")
def s3():
    pytest.importorskip(
        "moto.server", reason="moto[server] is not installed (run `bash scripts/setup.sh`)"
    )
    import boto3

    server = subprocess.Popen(
        [sys.executable, str(REPO / "tests/fixtures/s3_server.py"), "corpus"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    info = json.loads(server.stdout.readline())
    info["client"] = boto3.client(
        "s3",
        endpoint_url=info["endpoint"],
        aws_access_key_id=info["access_key_id"],
        aws_secret_access_key=info["secret_access_key"],
        region_name="us-east-1",
    )
    yield info
    server.stdin.close()
    server.wait(timeout=30)


@pytest.fixture
def corpus(s3, sentences, tmp_path):
    """The first 60 test sentences, as a local file and as s3://corpus/py/corpus.parquet."""
    path = tmp_path / "corpus.parquet"
    sentences.head(60).select("id", "tokens").write_parquet(path)
    s3["client"].upload_file(str(path), "corpus", "py/corpus.parquet")
    return path


def test_polars_reads_s3_and_the_expression_runs_over_it(s3, corpus):
    options = {
        "aws_access_key_id": s3["access_key_id"],
        "aws_secret_access_key": s3["secret_access_key"],
        "aws_region": "us-east-1",
        "aws_endpoint_url": s3["endpoint"],
        "aws_allow_http": "true",
    }
    expr = pl.col("tokens").span_marker.predict(TINY_MODEL).alias("entities")
    remote = (
        pl.scan_parquet("s3://corpus/py/corpus.parquet", storage_options=options)
        .with_columns(expr)
        .collect()
    )
    local = pl.read_parquet(corpus).with_columns(expr)
    assert remote["id"].to_list() == local["id"].to_list()
    assert sum(len(e) for e in local["entities"].to_list()) > 20
    assert_same_entities(remote["entities"].to_list(), local["entities"].to_list())


def test_registered_sql_functions_run_over_the_sessions_s3_tables(s3, corpus):
    from datafusion.object_store import AmazonS3

    def entities(source: str, register_s3: bool) -> list:
        ctx = SessionContext(span_marker_rs.session_config())
        span_marker_rs.register(ctx)
        if register_s3:
            store = AmazonS3(
                bucket_name="corpus",
                region="us-east-1",
                access_key_id=s3["access_key_id"],
                secret_access_key=s3["secret_access_key"],
                endpoint=s3["endpoint"],
                allow_http=True,
            )
            ctx.register_object_store("s3://", store, "corpus")
        ctx.sql(f"SET span_marker.model = '{TINY_MODEL}'")
        ctx.register_parquet("corpus", source)
        query = "SELECT id, span_marker_predict(tokens) AS e FROM corpus ORDER BY id"
        return ctx.sql(query).to_arrow_table().column("e").to_pylist()

    local = entities(str(corpus), register_s3=False)
    assert_same_entities(entities("s3://corpus/py/corpus.parquet", register_s3=True), local)


def test_annotate_writes_s3_outputs_that_polars_reads(s3, corpus, span_marker_bin, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=s3["access_key_id"],
        AWS_SECRET_ACCESS_KEY=s3["secret_access_key"],
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL=s3["endpoint"],
        AWS_CONFIG_FILE="/nonexistent/aws/config",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent/aws/credentials",
    )
    subprocess.run(
        [span_marker_bin, "annotate", "--input", "s3://corpus/py/corpus.parquet"]
        + ["--output", "s3://corpus/py/annotated/", "--model", TINY_MODEL, "--show", "0"],
        env=env,
        check=True,
        capture_output=True,
    )
    written = tmp_path / "annotated.parquet"
    s3["client"].download_file("corpus", "py/annotated/corpus.parquet", str(written))
    annotated = pl.read_parquet(written)
    local = pl.read_parquet(corpus).with_columns(
        pl.col("tokens").span_marker.predict(TINY_MODEL).alias("entities")
    )
    assert annotated["id"].to_list() == local["id"].to_list()
    assert_same_entities(annotated["entities"].to_list(), local["entities"].to_list())


@pytest.fixture(scope="module")
def azure():
    pytest.importorskip(
        "azure.storage.blob",
        reason="azure-storage-blob is not installed (run `bash scripts/setup.sh`)",
    )
    if not (REPO / ".venv-python").exists() or not os.path.isdir(
        os.path.join(sys.prefix, "azurite")
    ):
        pytest.skip("Azurite is not installed (run `bash scripts/setup.sh`)")
    from azure.storage.blob import BlobServiceClient

    server = subprocess.Popen(
        [sys.executable, str(REPO / "tests/fixtures/azure_server.py"), "corpus"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    info = json.loads(server.stdout.readline())
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={info['account']};"
        f"AccountKey={info['key']};BlobEndpoint={info['endpoint']};"
    )
    info["container"] = BlobServiceClient.from_connection_string(
        connection
    ).get_container_client("corpus")
    info["options"] = {
        "account_name": info["account"],
        "account_key": info["key"],
        "endpoint": info["endpoint"],
        "allow_http": "true",
    }
    yield info
    server.stdin.close()
    server.wait(timeout=30)


def test_polars_reads_azure_and_annotate_writes_blobs_that_polars_reads(
    azure, sentences, span_marker_bin, tmp_path
):
    path = tmp_path / "corpus.parquet"
    sentences.head(60).select("id", "tokens").write_parquet(path)
    azure["container"].upload_blob("py/corpus.parquet", path.read_bytes())
    expr = pl.col("tokens").span_marker.predict(TINY_MODEL).alias("entities")
    local = pl.read_parquet(path).with_columns(expr)
    assert sum(len(e) for e in local["entities"].to_list()) > 20
    remote = (
        pl.scan_parquet("az://corpus/py/corpus.parquet", storage_options=azure["options"])
        .with_columns(expr)
        .collect()
    )
    assert remote["id"].to_list() == local["id"].to_list()
    assert_same_entities(remote["entities"].to_list(), local["entities"].to_list())

    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    env.update(
        AZURE_STORAGE_ACCOUNT_NAME=azure["account"],
        AZURE_STORAGE_ACCOUNT_KEY=azure["key"],
        AZURE_STORAGE_ENDPOINT=azure["endpoint"],
    )
    subprocess.run(
        [span_marker_bin, "annotate", "--input", "az://corpus/py/corpus.parquet"]
        + ["--output", "az://corpus/py/annotated/", "--model", TINY_MODEL, "--show", "0"],
        env=env,
        check=True,
        capture_output=True,
    )
    annotated = pl.read_parquet(
        "az://corpus/py/annotated/corpus.parquet", storage_options=azure["options"]
    )
    assert annotated["id"].to_list() == local["id"].to_list()
    assert_same_entities(annotated["entities"].to_list(), local["entities"].to_list())

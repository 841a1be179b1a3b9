//! Tables in object storage, against real servers started here (see `stores/mod.rs`): an
//! S3-compatible server (moto's, with its own credentials) and Azure Blob Storage (Azurite, with
//! an account and key of its own). On each: SQL over Parquet
//! objects (one object and a glob) equals the same query over the local files row for row,
//! table sources and pipelines read Parquet, CSV and JSON lines objects as they read the local
//! files, `COPY ... TO '<url>'` writes an object that reads back equal; wrong credentials and a
//! missing bucket or container are errors that name the URL and never the secret. Checks that
//! need no server come first.
//!
//! Where a server is not installed its tests print why and pass; `scripts/setup.sh` installs
//! them.

mod stores;

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Builder, ListBuilder, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::object_store::ObjectStoreExt;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::{SessionConfig, SessionContext};
use span_marker::train::read_conll;
use span_marker::Labels;
use span_marker_udfs::dataset::AnnotatedRows;
use span_marker_udfs::pipeline::Pipeline;
use span_marker_udfs::sources::TableSource;
use span_marker_udfs::store::{self, StoreRegistry};
use stores::TestStore;

const LABELS: [&str; 9] = [
    "O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC",
];

/// A session whose stores are `registry`'s, with URL tables.
fn session(registry: StoreRegistry) -> SessionContext {
    store::enable_url_table(SessionContext::new_with_config_rt(
        SessionConfig::new(),
        store::runtime_env_with(Arc::new(registry)),
    ))
}

/// A local session with URL tables, as a baseline.
fn local_session() -> SessionContext {
    SessionContext::new().enable_url_table()
}

/// The sentences of `examples/data/train.txt` as Parquet (integer tags), CSV and JSON lines in
/// `dir` (`train.parquet`, `train.csv`, `train.jsonl`), and the Parquet file's rows split in two
/// (`parts/part-0.parquet`, `parts/part-1.parquet`).
fn write_tables(dir: &Path) {
    let sentences = read_conll(stores::repo().join("examples/data/train.txt")).unwrap();
    let labels = Labels::new(LABELS).unwrap();
    let parquet = |path: &Path, sentences: &[span_marker::train::ConllSentence]| {
        let mut tokens = ListBuilder::new(StringBuilder::new());
        let mut tags = ListBuilder::new(Int64Builder::new());
        for s in sentences {
            s.words.iter().for_each(|w| tokens.values().append_value(w));
            tokens.append(true);
            s.tags
                .iter()
                .for_each(|t| tags.values().append_value(labels.tag_id(t).unwrap() as i64));
            tags.append(true);
        }
        let columns: Vec<ArrayRef> = vec![Arc::new(tokens.finish()), Arc::new(tags.finish())];
        let schema = Arc::new(Schema::new(vec![
            Field::new("tokens", columns[0].data_type().clone(), false),
            Field::new("ner_tags", columns[1].data_type().clone(), false),
        ]));
        let file = std::fs::File::create(path).unwrap();
        let mut writer = ArrowWriter::try_new(file, schema.clone(), None).unwrap();
        writer
            .write(&RecordBatch::try_new(schema, columns).unwrap())
            .unwrap();
        writer.close().unwrap();
    };
    parquet(&dir.join("train.parquet"), &sentences);
    std::fs::create_dir_all(dir.join("parts")).unwrap();
    let half = sentences.len() / 2;
    parquet(&dir.join("parts/part-0.parquet"), &sentences[..half]);
    parquet(&dir.join("parts/part-1.parquet"), &sentences[half..]);
    let (mut csv, mut json) = (String::from("tokens,ner_tags\n"), String::new());
    for s in &sentences {
        csv.push_str(&format!(
            "\"{}\",\"{}\"\n",
            s.words.join(" ").replace('"', "\"\""),
            s.tags.join(" ")
        ));
        json.push_str(&serde_json::json!({"tokens": s.words, "ner_tags": s.tags}).to_string());
        json.push('\n');
    }
    std::fs::write(dir.join("train.csv"), csv).unwrap();
    std::fs::write(dir.join("train.jsonl"), json).unwrap();
}

/// Uploads the files under `dir` (relative names) to `{root}/{prefix}/...` (`root`: `s3://corpus`).
async fn upload(ctx: &SessionContext, root: &str, dir: &Path, prefix: &str, names: &[&str]) {
    let root = ObjectStoreUrl::parse(root).unwrap();
    let bucket = ctx.runtime_env().object_store(root).unwrap();
    for name in names {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        bucket
            .put(&ObjectPath::from(format!("{prefix}/{name}")), bytes.into())
            .await
            .unwrap();
    }
}

async fn table(ctx: &SessionContext, query: &str) -> String {
    let batches = ctx
        .sql(query)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    pretty_format_batches(&batches).unwrap().to_string()
}

/// Asserts that `error` names `names`, says one of `says`, and quotes none of `hidden`.
fn assert_clear_error(error: &str, names: &str, says: &[&str], hidden: &[&str]) {
    assert!(error.contains(names), "should name {names}: {error}");
    assert!(
        says.iter().any(|s| error.contains(s)),
        "should say one of {says:?}: {error}"
    );
    for secret in hidden {
        assert!(!error.contains(secret), "shows a secret: {error}");
    }
}

/// What a source read, less the name it gives its rows.
fn content(rows: AnnotatedRows) -> AnnotatedRows {
    AnnotatedRows {
        source: String::new(),
        ..rows
    }
}

#[test]
fn urls_in_sources_are_checked_without_a_server() {
    let check = |path: &str, format: Option<&str>| {
        let mut source = TableSource::file(path);
        source.format = format.map(|f| serde_json::from_value(f.into()).unwrap());
        source.validate()
    };
    check("s3://corpus/train.parquet", None).unwrap();
    check("s3://corpus/train", Some("csv")).unwrap();
    check("az://corpus/train.parquet", None).unwrap();
    let (key, message) = check("gs://corpus/train.parquet", None).unwrap_err();
    assert_eq!(key, "path");
    assert!(
        message.contains("gs://") && message.contains("not supported"),
        "{message}"
    );
    let (_, message) = check("s3://corpus/train.txt", Some("conll")).unwrap_err();
    assert!(message.contains("local disk"), "{message}");
    let (_, message) = check("s3://corpus/parts/*.parquet", None).unwrap_err();
    assert!(message.contains("query"), "{message}");
    let (key, message) = check("s3://corpus/train", None).unwrap_err();
    assert_eq!(key, "format");
    assert!(message.contains("s3://corpus/train"), "{message}");
    let (_, message) = check("s3:///train.parquet", None).unwrap_err();
    assert!(message.contains("names no bucket"), "{message}");
}

#[test]
fn pipelines_leave_urls_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.toml");
    std::fs::write(
        &file,
        "[sources.train]\npath = \"s3://corpus/pipeline/train.parquet\"\n\
         [sources.eval]\npath = \"${DATA}/dev.parquet\"\n\
         [model]\nencoder = \"bert-base-cased\"\nlabels = [\"O\", \"B-PER\", \"I-PER\"]\n\
         [training]\noutput_dir = \"model\"\n",
    )
    .unwrap();
    let pipeline = Pipeline::from_file_with_vars(&file, |name| {
        (name == "DATA").then(|| "s3://corpus/pipeline".to_owned())
    })
    .unwrap();
    assert_eq!(
        pipeline.sources.train.path.as_deref(),
        Some(Path::new("s3://corpus/pipeline/train.parquet"))
    );
    assert_eq!(
        pipeline.sources.eval.as_ref().unwrap().path.as_deref(),
        Some(Path::new("s3://corpus/pipeline/dev.parquet"))
    );
    assert_eq!(pipeline.training.output_dir, dir.path().join("model"));
    let url_output = std::fs::read_to_string(&file).unwrap().replace(
        "output_dir = \"model\"",
        "output_dir = \"s3://corpus/model\"",
    );
    std::fs::write(&file, url_output).unwrap();
    let error = Pipeline::from_file_with_vars(&file, |_| Some("s3://corpus".into()))
        .unwrap_err()
        .to_string();
    assert!(error.contains("training.output_dir"), "{error}");
}

/// SQL over `server`'s Parquet objects (one object, a glob, a prefix) equals SQL over the
/// local files.
async fn sql_equals_the_local_files(server: &dyn TestStore) {
    let root = server.root();
    let dir = tempfile::tempdir().unwrap();
    write_tables(dir.path());
    let ctx = session(server.registry());
    let parts = ["parts/part-0.parquet", "parts/part-1.parquet"];
    upload(&ctx, &root, dir.path(), "sql", &["train.parquet"]).await;
    upload(&ctx, &root, dir.path(), "sql", &parts).await;
    let local = local_session();
    let query = |from: &str| {
        format!(
            "SELECT tokens, ner_tags, cardinality(tokens) AS words FROM '{from}' \
             WHERE array_has(ner_tags, 1)"
        )
    };
    let local_file = dir.path().join("train.parquet").display().to_string();
    let expected = table(&local, &query(&local_file)).await;
    assert!(expected.lines().count() > 10, "{expected}");
    assert_eq!(
        table(&ctx, &query(&format!("{root}/sql/train.parquet"))).await,
        expected
    );
    // A glob over several objects, as over the local files.
    let summary = |from: &str| {
        format!("SELECT count(*) AS n, sum(cardinality(tokens)) AS words FROM '{from}'")
    };
    let local_glob = format!("{}/parts/*.parquet", dir.path().display());
    assert_eq!(
        table(&ctx, &summary(&format!("{root}/sql/parts/*.parquet"))).await,
        table(&local, &summary(&local_glob)).await
    );
    assert_eq!(
        table(&ctx, &summary(&format!("{root}/sql/parts/"))).await,
        table(&local, &summary(&local_glob)).await
    );
    // No object under a prefix: said, not "table not found".
    let none = format!("{root}/sql/none/*.parquet");
    let error = ctx
        .sql(&format!("SELECT * FROM '{none}'"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&none) && error.contains("no object"),
        "{error}"
    );
}

/// Table sources and pipelines read `server`'s objects as they read the local files.
async fn sources_read_objects_as_local_files(server: &dyn TestStore) {
    let root = server.root();
    let dir = tempfile::tempdir().unwrap();
    write_tables(dir.path());
    let ctx = session(server.registry());
    let files = ["train.parquet", "train.csv", "train.jsonl"];
    upload(&ctx, &root, dir.path(), "sources", &files).await;
    upload(
        &ctx,
        &root,
        dir.path(),
        "sources",
        &["parts/part-0.parquet", "parts/part-1.parquet"],
    )
    .await;
    let local = local_session();
    for file in files {
        let url = format!("{root}/sources/{file}");
        let remote = TableSource::file(&url).read(&ctx).await.unwrap();
        assert_eq!(remote.source, url);
        let expected = TableSource::file(dir.path().join(file))
            .read(&local)
            .await
            .unwrap();
        assert_eq!(content(remote), content(expected), "{file}");
        let mut first = TableSource::file(&url);
        first.rows = Some(7);
        let rows = first.read(&ctx).await.unwrap();
        assert_eq!(rows.tokens.len(), 7, "{file}");
    }
    // A query over a glob of objects.
    let query = TableSource::query(format!(
        "SELECT * FROM '{root}/sources/parts/*.parquet' ORDER BY cardinality(tokens), tokens",
    ));
    let local_query = TableSource::query(format!(
        "SELECT * FROM '{}/parts/*.parquet' ORDER BY cardinality(tokens), tokens",
        dir.path().display()
    ));
    assert_eq!(
        query.read(&ctx).await.unwrap().tokens,
        local_query.read(&local).await.unwrap().tokens
    );
    // A pipeline's source, as the pipeline file gives it.
    let file = dir.path().join("job.toml");
    std::fs::write(
        &file,
        format!(
            "[sources.train]\npath = \"{root}/sources/train.parquet\"\n\
             [model]\nencoder = \"bert-base-cased\"\n[training]\noutput_dir = \"model\"\n"
        ),
    )
    .unwrap();
    let pipeline = Pipeline::from_file(&file).unwrap();
    let remote = pipeline.sources.train.read(&ctx).await.unwrap();
    let expected = TableSource::file(dir.path().join("train.parquet"))
        .read(&local)
        .await
        .unwrap();
    assert_eq!(content(remote), content(expected));
}

/// `COPY ... TO` an object of `server` writes an object that reads back equal.
async fn copy_writes_an_object_that_reads_back_equal(server: &dyn TestStore) {
    let dir = tempfile::tempdir().unwrap();
    write_tables(dir.path());
    let ctx = session(server.registry());
    let url = &server.url("copy/out.parquet");
    assert!(!store::exists(&ctx, url).await.unwrap());
    let local_file = dir.path().join("train.parquet").display().to_string();
    table(
        &ctx,
        &format!("COPY (SELECT * FROM '{local_file}' WHERE cardinality(tokens) > 3) TO '{url}'"),
    )
    .await;
    assert!(store::exists(&ctx, url).await.unwrap());
    let query = |from: &str| format!("SELECT * FROM '{from}' WHERE cardinality(tokens) > 3");
    assert_eq!(
        table(&ctx, &format!("SELECT * FROM '{url}'")).await,
        table(&local_session(), &query(&local_file)).await
    );
    let remote = TableSource::file(url).read(&ctx).await.unwrap();
    assert!(remote.tokens.iter().all(|t| t.len() > 3));
}

macro_rules! on_every_store {
    ($check:ident: $s3:ident, $azure:ident) => {
        #[tokio::test]
        async fn $s3() {
            let Some(server) = stores::s3() else { return };
            $check(server).await;
        }

        #[tokio::test]
        async fn $azure() {
            let Some(server) = stores::azure() else {
                return;
            };
            $check(server).await;
        }
    };
}

on_every_store!(sql_equals_the_local_files:
    sql_over_s3_parquet_equals_the_local_files,
    sql_over_azure_blobs_equals_the_local_files);
on_every_store!(sources_read_objects_as_local_files:
    sources_read_s3_objects_as_local_files,
    sources_read_azure_blobs_as_local_files);
on_every_store!(copy_writes_an_object_that_reads_back_equal:
    copy_to_s3_writes_an_object_that_reads_back_equal,
    copy_to_azure_writes_a_blob_that_reads_back_equal);

#[tokio::test]
async fn wrong_credentials_and_missing_buckets_are_clear_errors() {
    let Some(server) = stores::s3() else { return };
    let dir = tempfile::tempdir().unwrap();
    write_tables(dir.path());
    upload(
        &session(server.registry()),
        &server.root(),
        dir.path(),
        "errors",
        &["train.parquet"],
    )
    .await;
    let secret = &server.secret_access_key;
    let wrong_secret = "wrong-secret-Kx7Qp2";
    let token = "session-token-Zr9Lm4";
    let check = |error: String, names: &str, says: &[&str]| {
        assert_clear_error(&error, names, says, &[secret.as_str(), wrong_secret, token]);
    };
    let url = "s3://corpus/errors/train.parquet";
    // A wrong secret: the signature does not match.
    let ctx = session(
        StoreRegistry::new().with_s3(server.settings_with(&server.access_key_id, wrong_secret)),
    );
    let error = TableSource::file(url).read(&ctx).await.unwrap_err();
    check(error.to_string(), url, &["SignatureDoesNotMatch"]);
    let error = ctx
        .sql(&format!("SELECT * FROM '{url}'"))
        .await
        .unwrap_err();
    check(error.to_string(), url, &["SignatureDoesNotMatch"]);
    let error = store::exists(&ctx, url).await.unwrap_err();
    check(error.to_string(), url, &["SignatureDoesNotMatch"]);
    // A session token the server does not know.
    let ctx = session(StoreRegistry::new().with_s3(server.settings().with_session_token(token)));
    let error = TableSource::file(url).read(&ctx).await.unwrap_err();
    check(error.to_string(), url, &["InvalidToken"]);
    // An unknown key id.
    let ctx = session(
        StoreRegistry::new().with_s3(server.settings_with("AKIDNOTAKEY0000000", wrong_secret)),
    );
    let error = TableSource::file(url).read(&ctx).await.unwrap_err();
    check(error.to_string(), url, &["InvalidAccessKeyId", "403"]);
    // A bucket that does not exist.
    let ctx = session(server.registry());
    let missing = "s3://no-such-bucket/train.parquet";
    let error = TableSource::file(missing).read(&ctx).await.unwrap_err();
    check(
        error.to_string(),
        missing,
        &["NoSuchBucket", "does not exist"],
    );
    let error = ctx
        .sql(&format!("SELECT * FROM '{missing}'"))
        .await
        .unwrap_err();
    check(
        error.to_string(),
        "no-such-bucket",
        &["NoSuchBucket", "does not exist"],
    );
    // A missing key in a bucket that exists.
    let error = TableSource::file("s3://corpus/errors/none.parquet")
        .read(&ctx)
        .await
        .unwrap_err();
    check(
        error.to_string(),
        "s3://corpus/errors/none.parquet",
        &["not found", "NoSuchKey", "no such object"],
    );
}

#[tokio::test]
async fn azure_wrong_keys_and_missing_containers_are_clear_errors() {
    let Some(server) = stores::azure() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_tables(dir.path());
    let root = server.root();
    let ctx = session(server.registry());
    upload(&ctx, &root, dir.path(), "errors", &["train.parquet"]).await;
    // A key of the right form that is not the account's.
    let wrong_key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXkh";
    let check = |error: String, names: &str, says: &[&str]| {
        assert_clear_error(&error, names, says, &[server.key.as_str(), wrong_key]);
    };
    let url = server.url("errors/train.parquet");
    let wrong = session(StoreRegistry::new().with_azure(server.settings_with(wrong_key)));
    let error = TableSource::file(&url).read(&wrong).await.unwrap_err();
    check(
        error.to_string(),
        &url,
        &["AuthorizationFailure", "AuthenticationFailed", "403"],
    );
    let error = store::exists(&wrong, &url).await.unwrap_err();
    check(
        error.to_string(),
        &url,
        &["AuthorizationFailure", "AuthenticationFailed", "403"],
    );
    // A container that does not exist.
    let missing = "az://no-such-container/train.parquet";
    let error = TableSource::file(missing).read(&ctx).await.unwrap_err();
    check(error.to_string(), missing, &["ContainerNotFound", "404"]);
    let error = ctx
        .sql(&format!("SELECT * FROM '{missing}'"))
        .await
        .unwrap_err();
    check(
        error.to_string(),
        "no-such-container",
        &["ContainerNotFound", "404"],
    );
    // A missing blob in a container that exists.
    let error = store::exists(&ctx, &server.url("errors/none.parquet")).await;
    assert!(!error.unwrap());
}

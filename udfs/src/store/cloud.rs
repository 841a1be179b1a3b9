//! What the cloud stores share: their settings as lists of object_store options (read from
//! the environment, secrets never shown), and the store of one bucket or container, whose errors
//! name their objects by URL (`s3://bucket/key`) and never quote a secret.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryFutureExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};

/// The options of one store's builder (`K`: object_store's config key of that store), in the
/// order given: a later value of a key replaces an earlier one when the store is built.
/// `Debug` shows the values of the keys named in `secret_keys` as `******`.
#[derive(Clone)]
pub(super) struct Options<K> {
    pub(super) list: Vec<(K, String)>,
    secret_keys: &'static [&'static str],
}

impl<K: Copy + PartialEq + AsRef<str> + FromStr> Options<K> {
    /// None set; the values of `secret_keys` (object_store's key names) are never shown.
    pub(super) fn new(secret_keys: &'static [&'static str]) -> Self {
        Self {
            list: Vec::new(),
            secret_keys,
        }
    }

    pub(super) fn push(&mut self, key: K, value: impl Into<String>) {
        self.list.push((key, value.into()));
    }

    /// The last value of `key`.
    pub(super) fn get(&self, key: K) -> Option<&str> {
        let found = self.list.iter().rev().find(|(k, _)| *k == key);
        found.map(|(_, v)| v.as_str())
    }

    /// `key` (any name object_store's builder takes for it, in any case) set to `value`; an
    /// unknown key is an error naming it and `store`.
    pub(super) fn push_named(
        &mut self,
        key: &str,
        value: impl Into<String>,
        store: &str,
    ) -> Result<(), String> {
        let parsed = key
            .to_ascii_lowercase()
            .parse::<K>()
            .map_err(|_| format!("`{key}` is not an option of the {store} store"))?;
        self.push(parsed, value);
        Ok(())
    }

    /// The variables of `vars` that start with one of `prefixes` and name an option
    /// (lower-cased, as object_store's `from_env` reads them) that `keep` keeps, in name order,
    /// empty values left out.
    pub(super) fn push_env(
        &mut self,
        vars: &HashMap<String, String>,
        prefixes: &[&str],
        keep: impl Fn(&str, &K) -> bool,
    ) {
        let sorted: BTreeMap<_, _> = vars
            .iter()
            .filter(|(name, value)| {
                prefixes.iter().any(|p| name.starts_with(p)) && !value.is_empty()
            })
            .collect();
        for (name, value) in sorted {
            if let Ok(key) = name.to_ascii_lowercase().parse::<K>() {
                if keep(name, &key) {
                    self.push(key, value.clone());
                }
            }
        }
    }

    /// `allow` set to true when the last of `endpoints` given is an `http://` URL and `allow`
    /// was not given: naming such an endpoint is the intent (a server on a local network, an
    /// emulator), where object_store refuses plain HTTP unless told.
    pub(super) fn allowing_http(&mut self, endpoints: &[K], allow: K) {
        let http_endpoint = self.list.iter().rev().find_map(|(key, value)| {
            endpoints
                .contains(key)
                .then(|| value.starts_with("http://"))
        });
        if http_endpoint == Some(true) && self.get(allow).is_none() {
            self.push(allow, "true");
        }
    }

    /// The values never to show (those of four characters or more: shorter ones would be
    /// replaced in unrelated text, and are no secret).
    pub(super) fn secrets(&self) -> Vec<String> {
        self.list
            .iter()
            .filter(|(key, value)| self.is_secret(key) && value.len() >= 4)
            .map(|(_, value)| value.clone())
            .collect()
    }

    fn is_secret(&self, key: &K) -> bool {
        self.secret_keys.contains(&key.as_ref())
    }
}

impl<K: Copy + PartialEq + AsRef<str> + FromStr> fmt::Debug for Options<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in &self.list {
            let shown = if self.is_secret(key) { "******" } else { value };
            map.entry(&key.as_ref(), &shown);
        }
        map.finish()
    }
}

/// What a bucket's errors are rewritten with: its URL before keys, secrets replaced.
#[derive(Clone)]
struct Scrub {
    /// `s3://bucket`, `az://container`.
    root: Arc<str>,
    secrets: Arc<[String]>,
}

impl fmt::Debug for Scrub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scrub({}, {} secrets)", self.root, self.secrets.len())
    }
}

/// An error whose text had a secret, with the secret replaced.
#[derive(Debug)]
struct Scrubbed(String);

impl fmt::Display for Scrubbed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Scrubbed {}

/// An error of a whole bucket, not of one key: says which.
#[derive(Debug)]
struct InBucket {
    root: Arc<str>,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl fmt::Display for InBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.root, self.source)
    }
}

impl std::error::Error for InBucket {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `text` with each of `secrets` replaced by `******`.
pub(super) fn hide(secrets: &[String], text: &str) -> String {
    secrets.iter().fold(text.to_owned(), |text, secret| {
        text.replace(secret, "******")
    })
}

impl Scrub {
    fn text(&self, text: &str) -> String {
        hide(&self.secrets, text)
    }

    /// `source` unchanged, or, when its text, its causes' or its debug form quote a secret,
    /// one message of them all with the secrets replaced.
    fn cause(&self, source: Cause) -> Cause {
        let mut chain = vec![source.to_string()];
        let mut next = source.source();
        while let Some(cause) = next {
            chain.push(cause.to_string());
            next = cause.source();
        }
        let debug = format!("{source:?}");
        let quotes_secret = |text: &str| self.secrets.iter().any(|s| text.contains(s.as_str()));
        if !chain.iter().any(|t| quotes_secret(t)) && !quotes_secret(&debug) {
            return source;
        }
        let mut shown = String::new();
        for text in chain {
            if !shown.contains(&text) {
                if !shown.is_empty() {
                    shown.push_str(": ");
                }
                shown.push_str(&text);
            }
        }
        Box::new(Scrubbed(self.text(&shown)))
    }

    fn at(&self, path: String) -> String {
        format!("{}/{path}", self.root)
    }

    fn fix(&self, error: object_store::Error) -> object_store::Error {
        use object_store::Error as E;
        match error {
            E::Generic { store, source } => E::Generic {
                store,
                source: Box::new(InBucket {
                    root: self.root.clone(),
                    source: self.cause(source),
                }),
            },
            E::NotFound { path, source } => E::NotFound {
                path: self.at(path),
                source: self.cause(source),
            },
            E::AlreadyExists { path, source } => E::AlreadyExists {
                path: self.at(path),
                source: self.cause(source),
            },
            E::Precondition { path, source } => E::Precondition {
                path: self.at(path),
                source: self.cause(source),
            },
            E::NotModified { path, source } => E::NotModified {
                path: self.at(path),
                source: self.cause(source),
            },
            E::PermissionDenied { path, source } => E::PermissionDenied {
                path: self.at(path),
                source: self.cause(source),
            },
            E::Unauthenticated { path, source } => E::Unauthenticated {
                path: self.at(path),
                source: self.cause(source),
            },
            E::NotSupported { source } => E::NotSupported {
                source: self.cause(source),
            },
            other => other,
        }
    }
}

/// The store of one bucket (or container), its errors rewritten by [`Scrub`].
pub(super) struct Bucket {
    inner: Box<dyn ObjectStore>,
    scrub: Scrub,
}

impl Bucket {
    /// `inner`, the store of the bucket at `root` (`s3://bucket`), its errors naming their
    /// objects under `root` and never quoting one of `secrets`.
    pub(super) fn wrap(
        inner: impl ObjectStore,
        root: &str,
        secrets: Vec<String>,
    ) -> Arc<dyn ObjectStore> {
        Arc::new(Self {
            inner: Box::new(inner),
            scrub: Scrub {
                root: root.into(),
                secrets: secrets.into(),
            },
        })
    }
}

/// The bucket only: the client's debug form would show its settings (an SSE-C key among them).
impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bucket({})", self.scrub.root)
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Store({})", self.scrub.root)
    }
}

type StoreResult<T> = object_store::Result<T>;

#[async_trait]
impl ObjectStore for Bucket {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> StoreResult<PutResult> {
        let result = self.inner.put_opts(location, payload, opts).await;
        result.map_err(|e| self.scrub.fix(e))
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> StoreResult<Box<dyn MultipartUpload>> {
        let upload = self.inner.put_multipart_opts(location, opts).await;
        let upload = upload.map_err(|e| self.scrub.fix(e))?;
        Ok(Box::new(Upload {
            inner: upload,
            scrub: self.scrub.clone(),
        }))
    }

    async fn get_opts(&self, location: &ObjectPath, options: GetOptions) -> StoreResult<GetResult> {
        let result = self.inner.get_opts(location, options).await;
        let mut result = result.map_err(|e| self.scrub.fix(e))?;
        if let GetResultPayload::Stream(stream) = result.payload {
            let scrub = self.scrub.clone();
            result.payload =
                GetResultPayload::Stream(stream.map_err(move |e| scrub.fix(e)).boxed());
        }
        Ok(result)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, StoreResult<ObjectPath>>,
    ) -> BoxStream<'static, StoreResult<ObjectPath>> {
        let scrub = self.scrub.clone();
        self.inner
            .delete_stream(locations)
            .map_err(move |e| scrub.fix(e))
            .boxed()
    }

    fn list(&self, prefix: Option<&ObjectPath>) -> BoxStream<'static, StoreResult<ObjectMeta>> {
        let scrub = self.scrub.clone();
        self.inner
            .list(prefix)
            .map_err(move |e| scrub.fix(e))
            .boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&ObjectPath>,
        offset: &ObjectPath,
    ) -> BoxStream<'static, StoreResult<ObjectMeta>> {
        let scrub = self.scrub.clone();
        self.inner
            .list_with_offset(prefix, offset)
            .map_err(move |e| scrub.fix(e))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&ObjectPath>) -> StoreResult<ListResult> {
        let result = self.inner.list_with_delimiter(prefix).await;
        result.map_err(|e| self.scrub.fix(e))
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> StoreResult<()> {
        let result = self.inner.copy_opts(from, to, options).await;
        result.map_err(|e| self.scrub.fix(e))
    }

    async fn rename_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: RenameOptions,
    ) -> StoreResult<()> {
        let result = self.inner.rename_opts(from, to, options).await;
        result.map_err(|e| self.scrub.fix(e))
    }
}

/// A multipart upload of a [`Bucket`], its errors rewritten the same way.
struct Upload {
    inner: Box<dyn MultipartUpload>,
    scrub: Scrub,
}

impl fmt::Debug for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Upload({})", self.scrub.root)
    }
}

#[async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let scrub = self.scrub.clone();
        self.inner
            .put_part(data)
            .map_err(move |e| scrub.fix(e))
            .boxed()
    }

    async fn complete(&mut self) -> StoreResult<PutResult> {
        let result = self.inner.complete().await;
        result.map_err(|e| self.scrub.fix(e))
    }

    async fn abort(&mut self) -> StoreResult<()> {
        let result = self.inner.abort().await;
        result.map_err(|e| self.scrub.fix(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_object_and_hide_secrets() {
        let scrub = Scrub {
            root: "s3://bucket".into(),
            secrets: vec!["sekrit-token".to_owned()].into(),
        };
        let error = scrub.fix(object_store::Error::NotFound {
            path: "data/x.parquet".into(),
            source: "x-amz-security-token:sekrit-token".into(),
        });
        let text = error.to_string();
        assert!(text.contains("s3://bucket/data/x.parquet"), "{text}");
        assert!(!text.contains("sekrit-token"), "{text}");
        let generic = scrub.fix(object_store::Error::Generic {
            store: "S3",
            source: "403 Forbidden".into(),
        });
        assert!(
            generic.to_string().contains("s3://bucket: 403"),
            "{generic}"
        );
    }
}

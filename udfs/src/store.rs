//! Object stores: tables whose path is a URL (`s3://bucket/key`, `az://container/key`), read and written through DataFusion's
//! [`object_store`](datafusion::object_store) as DataFusion itself does.
//!
//! Every session this crate and the command line make comes from here
//! ([`session_context`], [`runtime_env`], and [`enable_url_table`] for tables named by path in
//! SQL): their runtime's [`StoreRegistry`] serves `file://` (local paths) as DataFusion's
//! default registry does, and, with the features of the same name, one client per bucket or
//! container, made on first use and kept for the process:
//!
//! | feature | URLs | settings from |
//! |---|---|---|
//! | `s3` | `s3://bucket/key`, `s3a://` (Amazon S3 and S3-compatible servers) | `AWS_*`, `~/.aws` profiles |
//! | `azure` | `az://container/key`, `azure://`, `abfs[s]://container@account.dfs.core.windows.net/key` | `AZURE_*` |
//!
//! S3 credentials, region and endpoint come from the standard AWS environment, read once
//! ([`S3Settings::from_env`]): `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION` (or `AWS_DEFAULT_REGION`), `AWS_ENDPOINT_URL` for
//! S3-compatible servers (an `http://` endpoint is allowed without `AWS_ALLOW_HTTP`), the
//! other `AWS_*` variables object_store reads (web identity, container credentials), and the
//! static keys, region and `endpoint_url` of the profile named by `AWS_PROFILE` (`default`
//! otherwise) in `~/.aws/credentials` and `~/.aws/config`. The environment wins over the
//! profile. Profiles that get their credentials from a role, SSO or a process are refused with
//! a message saying how to export the credentials. Azure reads its standard environment the
//! same way (`AzureSettings::from_env`).
//! Credentials are never taken from a command line, never logged, and never shown: settings
//! print their secrets as `******`, and a store error that quotes a secret (an S3 error body
//! quoting the session token) has it replaced.
//!
//! Errors from a cloud store name the object by URL (`s3://bucket/key`), and a table named by
//! URL in SQL that cannot be listed says why (a missing bucket, refused credentials) where
//! DataFusion's own URL tables say only that the table was not found. Globs work in store
//! URLs too: `FROM 's3://bucket/data/*.parquet'`.
//!
//! ```no_run
//! # async fn demo() -> datafusion::error::Result<()> {
//! // AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION (or AWS_ENDPOINT_URL) set.
//! let ctx = span_marker_udfs::store::enable_url_table(span_marker_udfs::store::session_context());
//! span_marker_udfs::sql::register_all(&ctx);
//! ctx.sql("SELECT count(*) FROM 's3://my-bucket/corpus/*.parquet'")
//!     .await?
//!     .show()
//!     .await?;
//! ctx.sql("COPY (SELECT * FROM 's3://my-bucket/corpus/part-0.parquet' LIMIT 10) \
//!          TO 's3://my-bucket/sample.parquet'")
//!     .await?
//!     .collect()
//!     .await?;
//! # Ok(()) }
//! ```

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::catalog::{DynamicFileCatalog, TableProvider, UrlTableFactory};
use datafusion::datasource::dynamic_file::DynamicListTableFactory;
use datafusion::datasource::listing::{
    ListingTable, ListingTableConfig, ListingTableConfigExt, ListingTableUrl,
};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::{
    DefaultObjectStoreRegistry, ObjectStoreRegistry, ObjectStoreUrl,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionState;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
use datafusion::prelude::{SessionConfig, SessionContext};
use url::Url;

use crate::error::{Error, Result};

#[cfg(feature = "azure")]
mod azure;
#[cfg(any(feature = "s3", feature = "azure"))]
mod cloud;
#[cfg(feature = "s3")]
mod s3;
#[cfg(feature = "azure")]
pub use azure::AzureSettings;
#[cfg(feature = "s3")]
pub use s3::S3Settings;

/// The cloud stores, each with the feature that builds it and the URL schemes it serves.
const STORES: [(&str, bool, &[&str]); 2] = [
    ("s3", cfg!(feature = "s3"), &["s3", "s3a"]),
    (
        "azure",
        cfg!(feature = "azure"),
        &["az", "azure", "abfs", "abfss"],
    ),
];

/// The URL schemes this build serves besides local paths (`file`).
pub fn schemes() -> Vec<&'static str> {
    let cloud = STORES.iter().filter(|(_, built, _)| *built);
    std::iter::once("file")
        .chain(cloud.flat_map(|(_, _, schemes)| schemes.iter().copied()))
        .collect()
}

/// The scheme of `location` when it is a URL (`s3` of `s3://bucket/key`); `None` for a local
/// path. A scheme is two or more letters, digits, `+`, `-` or `.`, starting with a letter, so a
/// Windows drive (`C:\`) is a path.
pub fn url_scheme(location: &str) -> Option<&str> {
    let (scheme, _) = location.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = scheme.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

/// Whether `location` is a URL (`scheme://...`) rather than a local path.
pub fn is_url(location: &str) -> bool {
    url_scheme(location).is_some()
}

/// Whether `location` is a URL of an object store: a URL other than `file://`.
pub fn is_store_url(location: &str) -> bool {
    url_scheme(location).is_some_and(|scheme| !scheme.eq_ignore_ascii_case("file"))
}

/// The local path that `location` names: itself, or the path of a `file://` URL (`None` for
/// a URL of another scheme); an error for a `file://` URL that names no local path.
pub fn local_path(location: &str) -> std::result::Result<Option<std::path::PathBuf>, String> {
    match url_scheme(location) {
        None => Ok(Some(location.into())),
        Some(scheme) if scheme.eq_ignore_ascii_case("file") => Url::parse(location)
            .ok()
            .and_then(|url| url.to_file_path().ok())
            .map(Some)
            .ok_or_else(|| format!("{location} is not a local file URL")),
        Some(_) => Ok(None),
    }
}

/// Checks that this build can read and write `location`: a local path, or a URL of a scheme it
/// serves that names its bucket. The message says what is wrong (`az://` needs a feature this
/// build leaves out).
pub fn check_location(location: &str) -> std::result::Result<(), String> {
    let Some(scheme) = url_scheme(location) else {
        return Ok(());
    };
    let scheme = scheme.to_ascii_lowercase();
    if !schemes().contains(&scheme.as_str()) {
        return Err(unsupported_scheme(&scheme));
    }
    let url = Url::parse(location).map_err(|e| format!("{location} is not a valid URL: {e}"))?;
    // `abfss://container@account.dfs.core.windows.net/...` names its container as a user.
    let container_as_user = matches!(scheme.as_str(), "az" | "abfs" | "abfss");
    if (!url.username().is_empty() && !container_as_user) || url.password().is_some() {
        return Err(format!(
            "{scheme}://...: credentials do not go in URLs (they would be shown and sent on); \
             set them in the store's environment (AWS_*, AZURE_*)"
        ));
    }
    if scheme != "file" && url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "{location} names no bucket ({scheme}://BUCKET/KEY)"
        ));
    }
    Ok(())
}

fn unsupported_scheme(scheme: &str) -> String {
    let store = STORES
        .iter()
        .find(|(_, _, schemes)| schemes.contains(&scheme));
    match store {
        Some((feature, _, _)) => format!(
            "{scheme}:// URLs need span-marker-udfs' `{feature}` feature, which this build leaves \
             out"
        ),
        None => {
            let served: Vec<String> = schemes()
                .iter()
                .filter(|s| **s != "file")
                .map(|s| format!("{s}://"))
                .collect();
            let urls = if served.is_empty() {
                String::new()
            } else {
                format!(" or a URL of {}", served.join(", "))
            };
            let what = if matches!(scheme, "gs" | "gcs") {
                " (Google Cloud Storage) are not supported yet"
            } else {
                " are not supported"
            };
            format!("{scheme}:// URLs{what}: give a local path{urls}")
        }
    }
}

/// DataFusion's object store registry with the stores of this build: local files as
/// DataFusion's default registry serves them, stores registered explicitly
/// ([`RuntimeEnv::register_object_store`]) first, and with the `s3` and `azure` features a store
/// per bucket (or container), made on first use from that store's settings and kept.
///
/// ```
/// use span_marker_udfs::store::StoreRegistry;
///
/// // The settings of every store from the environment, read now (errors wait for first use).
/// let registry = std::sync::Arc::new(StoreRegistry::from_env());
/// let ctx = datafusion::prelude::SessionContext::new_with_config_rt(
///     Default::default(),
///     span_marker_udfs::store::runtime_env_with(registry),
/// );
/// # drop(ctx);
/// ```
#[derive(Debug)]
pub struct StoreRegistry {
    /// Local files and explicitly registered stores.
    stores: DefaultObjectStoreRegistry,
    #[cfg(feature = "s3")]
    s3: std::result::Result<S3Settings, String>,
    #[cfg(feature = "azure")]
    azure: AzureSettings,
    /// The stores made, by root URL (`s3://bucket`; with its user, as in
    /// `abfss://container@account.dfs.core.windows.net`, which DataFusion's registry would
    /// take for the account's other containers): one client per bucket.
    #[cfg(any(feature = "s3", feature = "azure"))]
    made: std::sync::Mutex<std::collections::HashMap<String, Arc<dyn ObjectStore>>>,
}

impl Default for StoreRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl StoreRegistry {
    /// A registry whose stores' settings come from the environment ([`S3Settings::from_env`],
    /// `AzureSettings::from_env`); S3 settings that cannot be read (a
    /// missing `AWS_PROFILE`) are an error when an `s3://` URL is first used, not before.
    pub fn from_env() -> Self {
        Self {
            #[cfg(feature = "s3")]
            s3: S3Settings::from_env(),
            #[cfg(feature = "azure")]
            azure: AzureSettings::from_env(),
            ..Self::new()
        }
    }

    /// A registry with every store's default settings, the environment left unread: set them
    /// with `with_s3` and `with_azure` (tests, programs with their own configuration).
    pub fn new() -> Self {
        Self {
            stores: DefaultObjectStoreRegistry::new(),
            #[cfg(feature = "s3")]
            s3: Ok(S3Settings::new()),
            #[cfg(feature = "azure")]
            azure: AzureSettings::new(),
            #[cfg(any(feature = "s3", feature = "azure"))]
            made: Default::default(),
        }
    }

    /// This registry with `settings` for `s3://` URLs.
    #[cfg(feature = "s3")]
    pub fn with_s3(self, settings: S3Settings) -> Self {
        Self {
            s3: Ok(settings),
            ..self
        }
    }

    /// This registry with `settings` for `az://`, `azure://` and `abfs[s]://` URLs.
    #[cfg(feature = "azure")]
    pub fn with_azure(self, settings: AzureSettings) -> Self {
        Self {
            azure: settings,
            ..self
        }
    }

    /// The store of the bucket `url` names, made by `make` from the bucket's name and root URL
    /// (`s3://bucket`) the first time it is asked for.
    #[cfg(any(feature = "s3", feature = "azure"))]
    fn cloud_store(
        &self,
        url: &Url,
        make: impl FnOnce(&str, &str) -> DfResult<Arc<dyn ObjectStore>>,
    ) -> DfResult<Arc<dyn ObjectStore>> {
        let root = &url[..url::Position::BeforePath];
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = made.get(root) {
            return Ok(store.clone());
        }
        let bucket = url.host_str().unwrap_or_default();
        if bucket.is_empty() {
            return Err(store_error(format!(
                "{url} names no bucket ({}://BUCKET/KEY)",
                url.scheme()
            )));
        }
        let store = make(bucket, root)?;
        made.insert(root.to_owned(), store.clone());
        Ok(store)
    }
}

fn store_error(message: String) -> DataFusionError {
    DataFusionError::Configuration(message)
}

/// Stores of URLs that name a user (`abfss://container@account...`) are kept by their whole
/// root: DataFusion's registry keys by scheme and host alone, and would answer for the
/// account's other containers.
impl ObjectStoreRegistry for StoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        #[cfg(any(feature = "s3", feature = "azure"))]
        if !url.username().is_empty() {
            let root = url[..url::Position::BeforePath].to_owned();
            let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
            return made.insert(root, store);
        }
        self.stores.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        #[cfg(any(feature = "s3", feature = "azure"))]
        {
            let root = &url[..url::Position::BeforePath];
            let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(store) = made.remove(root) {
                return Ok(store);
            }
        }
        self.stores.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        if url.username().is_empty() {
            if let Ok(store) = self.stores.get_store(url) {
                return Ok(store);
            }
        }
        match url.scheme() {
            #[cfg(feature = "s3")]
            "s3" | "s3a" => self.cloud_store(url, |bucket, root| {
                let settings = self.s3.as_ref();
                let settings =
                    settings.map_err(|message| store_error(format!("{root}: {message}")))?;
                settings.store(bucket, root)
            }),
            #[cfg(feature = "azure")]
            "az" | "azure" | "abfs" | "abfss" => {
                self.cloud_store(url, |_, root| self.azure.store(root))
            }
            scheme => Err(store_error(format!(
                "{url}: {}",
                unsupported_scheme(&scheme.to_ascii_lowercase())
            ))),
        }
    }
}

/// The process's registry, its S3 settings read from the environment on first use.
pub fn registry() -> Arc<StoreRegistry> {
    static REGISTRY: OnceLock<Arc<StoreRegistry>> = OnceLock::new();
    REGISTRY
        .get_or_init(|| Arc::new(StoreRegistry::from_env()))
        .clone()
}

/// A runtime with the process's [`registry`].
pub fn runtime_env() -> Arc<RuntimeEnv> {
    runtime_env_with(registry())
}

/// A runtime with `registry`.
pub fn runtime_env_with(registry: Arc<StoreRegistry>) -> Arc<RuntimeEnv> {
    Arc::new(
        RuntimeEnvBuilder::new()
            .with_object_store_registry(registry)
            .build()
            .expect("a runtime with default settings builds"),
    )
}

/// A session like `SessionContext::new()` whose runtime serves this build's stores: what this
/// crate and the command line make every session from.
pub fn session_context() -> SessionContext {
    session_context_with(SessionConfig::new())
}

/// [`session_context`] with `config`.
pub fn session_context_with(config: SessionConfig) -> SessionContext {
    SessionContext::new_with_config_rt(config, runtime_env())
}

/// `ctx` with tables named by path or URL in SQL (`FROM 'data/train.parquet'`,
/// `FROM 's3://bucket/data/*.parquet'`), as `SessionContext::enable_url_table`, except that
/// a store URL that cannot be listed is an error saying why, and that globs work in store
/// URLs.
pub fn enable_url_table(ctx: SessionContext) -> SessionContext {
    let local = Arc::new(DynamicListTableFactory::default());
    let factory = Arc::new(UrlTables {
        local: local.clone(),
    });
    let catalogs = Arc::clone(ctx.state_ref().read().catalog_list());
    let catalogs = Arc::new(DynamicFileCatalog::new(catalogs, factory));
    let session_id = ctx.session_id();
    let ctx: SessionContext = ctx
        .into_state_builder()
        .with_session_id(session_id)
        .with_catalog_list(catalogs)
        .build()
        .into();
    local.session_store().with_state(ctx.state_weak_ref());
    ctx
}

/// Tables by path (DataFusion's own factory) and by store URL.
#[derive(Debug)]
struct UrlTables {
    local: Arc<DynamicListTableFactory>,
}

#[async_trait]
impl UrlTableFactory for UrlTables {
    async fn try_new(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if !is_store_url(name) {
            return self.local.try_new(name).await;
        }
        let state = self
            .local
            .session_store()
            .get_session()
            .upgrade()
            .and_then(|session| {
                session
                    .read()
                    .as_any()
                    .downcast_ref::<SessionState>()
                    .cloned()
            })
            .ok_or_else(|| DataFusionError::Plan("the session of a URL table is gone".into()))?;
        let url = table_url(name)?;
        let error = match listing_table(&state, url.clone()).await {
            Ok(table) => return Ok(Some(table)),
            Err(error) => error,
        };
        let reason = match &error {
            DataFusionError::Internal(message) if message.starts_with("No files") => {
                "no object matches it".to_owned()
            }
            // A HEAD answer has no body, so its error is a bare status code: a listing's error
            // says why, with S3's error code.
            DataFusionError::ObjectStore(_) => match listing_error(&state, &url).await {
                Some(listing) => listing,
                None => error.strip_backtrace(),
            },
            _ => error.strip_backtrace(),
        };
        Err(DataFusionError::Plan(format!(
            "cannot read table '{name}': {reason}"
        )))
    }
}

async fn listing_table(
    state: &SessionState,
    url: ListingTableUrl,
) -> DfResult<Arc<dyn TableProvider>> {
    let config = ListingTableConfig::new(url)
        .infer_options(state)
        .await?
        .infer_partitions_from_path(state)
        .await?
        .infer_schema(state)
        .await?;
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// The error of listing the objects under `url`'s prefix, when listing fails.
async fn listing_error(state: &SessionState, url: &ListingTableUrl) -> Option<String> {
    let store = state.runtime_env().object_store(url).ok()?;
    store
        .list_with_delimiter(Some(url.prefix()))
        .await
        .err()
        .map(|e| e.to_string())
}

/// The listing URL of a store URL, a glob (`*`, `?`, `[`) in its key applied to the objects
/// under the prefix before it (DataFusion reads globs in local paths only).
pub fn table_url(location: &str) -> DfResult<ListingTableUrl> {
    if !is_store_url(location) {
        return ListingTableUrl::parse(location);
    }
    let glob_start = location.find("://").map(|at| at + 3).and_then(|key_start| {
        location[key_start..]
            .find(['*', '?', '['])
            .map(|at| key_start + at)
    });
    let Some(glob_start) = glob_start else {
        return ListingTableUrl::parse(location);
    };
    let prefix_end = location[..glob_start].rfind('/').map_or(0, |at| at + 1);
    let (prefix, glob) = location.split_at(prefix_end);
    let url = Url::parse(prefix).map_err(|e| DataFusionError::Plan(format!("{location}: {e}")))?;
    let pattern = glob::Pattern::new(glob)
        .map_err(|e| DataFusionError::Plan(format!("{location}: bad glob `{glob}`: {e}")))?;
    ListingTableUrl::try_new(url, Some(pattern))
}

/// Whether the object at the store URL `location` exists in `ctx`'s stores: `false` for a
/// missing key in a bucket that exists; an error naming the URL for anything else (refused
/// credentials, a missing bucket). For a local path, whether the file exists.
pub async fn exists(ctx: &SessionContext, location: &str) -> Result<bool> {
    if !is_url(location) {
        return Ok(std::path::Path::new(location).exists());
    }
    let (store, key, _) = locate(ctx, location)?;
    Ok(head(store.as_ref(), &key, location).await?.is_some())
}

/// The store of `ctx` that holds the store URL `location`, the object key, and the URL's
/// root (`s3://bucket`).
pub(crate) fn locate(
    ctx: &SessionContext,
    location: &str,
) -> Result<(Arc<dyn ObjectStore>, ObjectPath, String)> {
    check_location(location).map_err(|message| Error::file(location, message))?;
    let url = Url::parse(location).map_err(|e| Error::file(location, e.to_string()))?;
    let root = &url[..url::Position::BeforePath];
    let store = ctx
        .runtime_env()
        .object_store(ObjectStoreUrl::parse(root)?)?;
    let key = ObjectPath::from_url_path(url.path())
        .map_err(|e| Error::file(location, format!("not an object key: {e}")))?;
    Ok((store, key, root.to_owned()))
}

/// What `store` says of the object at `key` (shown as `location`): `None` for a missing key
/// (in a bucket that exists); an error naming `location` for anything else (refused
/// credentials, a missing bucket).
pub(crate) async fn head(
    store: &dyn ObjectStore,
    key: &ObjectPath,
    location: &str,
) -> Result<Option<datafusion::object_store::ObjectMeta>> {
    let failed = |e: datafusion::object_store::Error| Error::file(location, e.to_string());
    // A HEAD answer has no body, so its errors are bare status codes (a missing bucket and a
    // missing key look alike): a listing's error says why, with S3's error code.
    match store.head(key).await {
        Ok(meta) => Ok(Some(meta)),
        Err(datafusion::object_store::Error::NotFound { .. }) => {
            store.list_with_delimiter(Some(key)).await.map_err(failed)?;
            Ok(None)
        }
        Err(head) => match store.list_with_delimiter(Some(key)).await {
            Err(listing) => Err(failed(listing)),
            Ok(_) => Err(failed(head)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths() {
        assert_eq!(url_scheme("s3://bucket/key.parquet"), Some("s3"));
        assert_eq!(url_scheme("file:///tmp/x.parquet"), Some("file"));
        assert_eq!(url_scheme("data/train.parquet"), None);
        assert_eq!(url_scheme("/abs/path://odd"), None);
        assert_eq!(url_scheme("C://windows"), None);
        assert!(is_store_url("s3://b/k"));
        assert!(!is_store_url("file:///x"));
        assert!(!is_store_url("x.parquet"));
        assert_eq!(
            local_path("file:///tmp/x.parquet"),
            Ok(Some("/tmp/x.parquet".into()))
        );
        assert_eq!(
            local_path("data/x.parquet"),
            Ok(Some("data/x.parquet".into()))
        );
        assert_eq!(local_path("s3://b/x.parquet"), Ok(None));
        assert!(local_path("file://host/x").is_err());
    }

    #[test]
    fn locations_are_checked() {
        assert!(check_location("data/train.parquet").is_ok());
        assert!(check_location("file:///tmp/x.parquet").is_ok());
        let odd = check_location("ftp://host/x.parquet").unwrap_err();
        assert!(odd.contains("not supported"), "{odd}");
        let gcs = check_location("gs://bucket/x.parquet").unwrap_err();
        assert!(gcs.contains("Google Cloud Storage"), "{gcs}");
        if cfg!(feature = "azure") {
            let hadoop = "abfss://container@account.dfs.core.windows.net/x.parquet";
            assert!(check_location(hadoop).is_ok());
            assert!(check_location("az://container@account.blob.core.windows.net/x").is_ok());
            let secret = check_location("abfss://container:k3y@account.dfs.core.windows.net/x");
            assert!(secret
                .unwrap_err()
                .contains("credentials do not go in URLs"));
        } else {
            let azure = check_location("az://container/x.parquet").unwrap_err();
            assert!(azure.contains("`azure` feature"), "{azure}");
        }
        if cfg!(feature = "s3") {
            assert!(check_location("s3://bucket/x.parquet").is_ok());
            let no_bucket = check_location("s3:///x.parquet").unwrap_err();
            assert!(no_bucket.contains("names no bucket"), "{no_bucket}");
            let secret = check_location("s3://AKID:s3cr3t@bucket/x.parquet").unwrap_err();
            assert!(
                !secret.contains("s3cr3t") && secret.contains("AWS_*"),
                "{secret}"
            );
        } else {
            let s3 = check_location("s3://bucket/x.parquet").unwrap_err();
            assert!(s3.contains("`s3` feature"), "{s3}");
        }
    }

    #[test]
    fn globs_in_store_urls_filter_a_prefix() {
        let url = table_url("s3://bucket/data/part-*.parquet").unwrap();
        assert_eq!(url.prefix().as_ref(), "data");
        assert!(url.is_collection());
        assert_eq!(
            url.get_glob().as_ref().map(|g| g.as_str()),
            Some("part-*.parquet")
        );
        let plain = table_url("s3://bucket/data/train.parquet").unwrap();
        assert!(plain.get_glob().is_none());
        assert_eq!(plain.prefix().as_ref(), "data/train.parquet");
    }

    #[test]
    fn unserved_schemes_are_named_by_the_registry() {
        let registry = StoreRegistry::from_env();
        let error = registry
            .get_store(&Url::parse("hdfs://cluster/x").unwrap())
            .unwrap_err()
            .to_string();
        assert!(error.contains("hdfs://"), "{error}");
        assert!(registry.get_store(&Url::parse("file:///").unwrap()).is_ok());
    }

    #[cfg(feature = "azure")]
    #[test]
    fn stores_of_urls_with_a_user_answer_for_their_own_container_only() {
        let registry = StoreRegistry::new();
        let one = Url::parse("abfss://one@account.dfs.core.windows.net/").unwrap();
        let other = Url::parse("abfss://other@account.dfs.core.windows.net/").unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(datafusion::object_store::memory::InMemory::new());
        registry.register_store(&one, store.clone());
        assert!(Arc::ptr_eq(&registry.get_store(&one).unwrap(), &store));
        // The other container gets a store of its own (made from the settings), not `one`'s.
        if let Ok(made) = registry.get_store(&other) {
            assert!(!Arc::ptr_eq(&made, &store));
        }
        assert!(registry.deregister_store(&one).is_ok());
    }
}

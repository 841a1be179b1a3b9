//! Amazon S3 and S3-compatible stores: the settings (environment and profile), and the store of
//! one bucket, whose errors name their objects as `s3://bucket/key` and never quote a secret.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::error::{DataFusionError, Result as DfResult};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryFutureExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3CopyIfNotExists};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientConfigKey, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, RenameOptions, UploadPart,
};

/// How S3 stores are reached: credentials, region, endpoint and any other option of
/// object_store's Amazon S3 builder, by its key name.
///
/// [`S3Settings::from_env`] reads the standard AWS environment and profile; the builder
/// methods set them explicitly (an S3-compatible server in tests, a program with its own
/// configuration). Later settings replace earlier ones. `Debug` shows secrets as `******`.
///
/// ```
/// use span_marker_udfs::store::{S3Settings, StoreRegistry};
///
/// let settings = S3Settings::new()
///     .with_credentials("test-key", "test-secret")
///     .with_endpoint("http://127.0.0.1:9000")
///     .with_region("us-east-1");
/// assert!(!format!("{settings:?}").contains("test-secret"));
/// let registry = std::sync::Arc::new(StoreRegistry::with_s3(settings));
/// let ctx = datafusion::prelude::SessionContext::new_with_config_rt(
///     Default::default(),
///     span_marker_udfs::store::runtime_env_with(registry),
/// );
/// # drop(ctx);
/// ```
#[derive(Clone, Default)]
pub struct S3Settings {
    options: Vec<(AmazonS3ConfigKey, String)>,
}

/// Keys whose values are secrets: never shown.
const SECRET_KEYS: [&str; 3] = [
    "aws_secret_access_key",
    "aws_session_token",
    "aws_sse_customer_key_base64",
];

/// Profile keys that get credentials another way than static keys, which this build does not
/// resolve.
const INDIRECT_CREDENTIALS: [&str; 6] = [
    "role_arn",
    "source_profile",
    "credential_process",
    "sso_start_url",
    "sso_session",
    "web_identity_token_file",
];

impl S3Settings {
    /// Nothing set: object_store's defaults (region `us-east-1`, AWS endpoints, credentials
    /// from the instance metadata service).
    pub fn new() -> Self {
        Self::default()
    }

    /// The standard AWS environment, and the profile named by `AWS_PROFILE` (`default`
    /// otherwise) in `AWS_SHARED_CREDENTIALS_FILE` (`~/.aws/credentials`) and
    /// `AWS_CONFIG_FILE` (`~/.aws/config`): its static keys, `region` and `endpoint_url`. The
    /// environment wins; credentials are taken as a whole, from the environment when it has
    /// `AWS_ACCESS_KEY_ID`, else from the profile. An `http://` endpoint allows plain HTTP.
    ///
    /// An error says what is wrong with the profile: `AWS_PROFILE` naming a profile that
    /// neither file has, or a profile whose credentials come from a role, SSO or a process.
    pub fn from_env() -> Result<Self, String> {
        let vars: HashMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with("AWS_"))
            .collect();
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Self::from_vars(&vars, home.as_deref())
    }

    fn from_vars(vars: &HashMap<String, String>, home: Option<&Path>) -> Result<Self, String> {
        let var = |name: &str| vars.get(name).filter(|v| !v.is_empty()).cloned();
        let env_credentials = var("AWS_ACCESS_KEY_ID").is_some();
        let profile = Profile::read(vars, home)?;
        let mut settings = Self::new();
        if !env_credentials {
            if let Some(profile) = &profile {
                profile.check_credentials(vars)?;
                for (name, key) in [
                    ("aws_access_key_id", AmazonS3ConfigKey::AccessKeyId),
                    ("aws_secret_access_key", AmazonS3ConfigKey::SecretAccessKey),
                    ("aws_session_token", AmazonS3ConfigKey::Token),
                ] {
                    if let Some(value) = profile.get(name) {
                        settings.options.push((key, value.to_owned()));
                    }
                }
            }
        }
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| profile.as_ref()?.get("region").map(str::to_owned));
        if let Some(region) = region {
            settings.options.push((AmazonS3ConfigKey::Region, region));
        }
        if let Some(endpoint) = profile.as_ref().and_then(|p| p.get("endpoint_url")) {
            settings
                .options
                .push((AmazonS3ConfigKey::Endpoint, endpoint.to_owned()));
        }
        // The rest of the environment as object_store's `from_env` reads it, in a fixed order.
        let sorted: BTreeMap<_, _> = vars.iter().collect();
        for (name, value) in sorted {
            if matches!(name.as_str(), "AWS_REGION" | "AWS_DEFAULT_REGION") || value.is_empty() {
                continue;
            }
            if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                let credential = matches!(
                    key,
                    AmazonS3ConfigKey::AccessKeyId
                        | AmazonS3ConfigKey::SecretAccessKey
                        | AmazonS3ConfigKey::Token
                );
                if credential && !env_credentials {
                    continue;
                }
                settings.options.push((key, value.clone()));
            }
        }
        Ok(settings.allowing_http_endpoints())
    }

    /// Static credentials: an access key id and its secret.
    pub fn with_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.options
            .push((AmazonS3ConfigKey::AccessKeyId, access_key_id.into()));
        self.options
            .push((AmazonS3ConfigKey::SecretAccessKey, secret_access_key.into()));
        self
    }

    /// The session token of temporary credentials.
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.options.push((AmazonS3ConfigKey::Token, token.into()));
        self
    }

    /// The region (`us-east-1` when unset).
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.options
            .push((AmazonS3ConfigKey::Region, region.into()));
        self
    }

    /// The endpoint of an S3-compatible server (`http://127.0.0.1:9000`); buckets are then
    /// addressed by path. An `http://` endpoint allows plain HTTP.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.options
            .push((AmazonS3ConfigKey::Endpoint, endpoint.into()));
        self.allowing_http_endpoints()
    }

    /// Whether plain HTTP is allowed.
    pub fn with_allow_http(mut self, allow: bool) -> Self {
        self.options.push((
            AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp),
            allow.to_string(),
        ));
        self
    }

    /// Any option of object_store's Amazon S3 builder by its key (`aws_virtual_hosted_style_request`,
    /// `aws_checksum_algorithm`, ...); an unknown key is an error naming it.
    pub fn with_option(mut self, key: &str, value: impl Into<String>) -> Result<Self, String> {
        let parsed = key
            .to_ascii_lowercase()
            .parse::<AmazonS3ConfigKey>()
            .map_err(|_| format!("`{key}` is not an option of the S3 store"))?;
        self.options.push((parsed, value.into()));
        Ok(self)
    }

    /// An `http://` endpoint given without a word on plain HTTP allows it: naming one is the
    /// intent (S3-compatible servers on a local network), where object_store refuses it.
    fn allowing_http_endpoints(mut self) -> Self {
        let allow_http = AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp);
        let http_endpoint = self.options.iter().rev().find_map(|(key, value)| {
            matches!(
                key,
                AmazonS3ConfigKey::Endpoint | AmazonS3ConfigKey::S3Endpoint
            )
            .then(|| value.starts_with("http://"))
        });
        if http_endpoint == Some(true) && !self.options.iter().any(|(key, _)| *key == allow_http) {
            self.options.push((allow_http, "true".into()));
        }
        self
    }

    /// The values never to show.
    fn secrets(&self) -> Vec<String> {
        self.options
            .iter()
            .filter(|(key, value)| SECRET_KEYS.contains(&key.as_ref()) && value.len() >= 4)
            .map(|(_, value)| value.clone())
            .collect()
    }

    /// The store of `bucket`, named `root` (`s3://bucket`) in its errors.
    pub(super) fn store(&self, bucket: &str, root: &str) -> DfResult<Arc<dyn ObjectStore>> {
        let scrub = Scrub {
            root: root.into(),
            secrets: self.secrets().into(),
        };
        // Publishing an output never replaces an object: a copy completed with
        // `If-None-Match: *` (Amazon S3 and most compatible stores) unless
        // `AWS_COPY_IF_NOT_EXISTS` names another way (a header, for Cloudflare R2).
        let mut builder =
            AmazonS3Builder::new().with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
        for (key, value) in &self.options {
            builder = builder.with_config(*key, value);
        }
        let inner = builder.with_bucket_name(bucket).build().map_err(|e| {
            DataFusionError::Configuration(format!(
                "{root}: cannot set up the S3 store: {}",
                scrub.text(&e.to_string())
            ))
        })?;
        Ok(Arc::new(S3Bucket { inner, scrub }))
    }
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in &self.options {
            let shown = if SECRET_KEYS.contains(&key.as_ref()) {
                "******"
            } else {
                value
            };
            map.entry(&key.as_ref(), &shown);
        }
        map.finish()
    }
}

/// One profile's keys, from the credentials file over the config file.
struct Profile {
    name: String,
    keys: BTreeMap<String, String>,
}

impl Profile {
    /// The profile `AWS_PROFILE` names (`default` otherwise); `None` when neither file has it
    /// and it was not named.
    fn read(vars: &HashMap<String, String>, home: Option<&Path>) -> Result<Option<Self>, String> {
        let named = vars.get("AWS_PROFILE").filter(|p| !p.is_empty());
        let name = named.map_or("default", String::as_str);
        let file = |var: &str, default: &str| {
            vars.get(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| home.map(|h| h.join(".aws").join(default)))
        };
        let config = file("AWS_CONFIG_FILE", "config");
        let credentials = file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
        let config_section = if name == "default" {
            vec!["default".to_owned(), "profile default".to_owned()]
        } else {
            vec![format!("profile {name}")]
        };
        let mut keys = BTreeMap::new();
        let mut found = false;
        for (path, sections) in [(&config, config_section), (&credentials, vec![name.into()])] {
            let Some(path) = path else { continue };
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            if let Some(section) = ini_section(&text, &sections) {
                found = true;
                keys.extend(section);
            }
        }
        match (found, named) {
            (true, _) => Ok(Some(Self {
                name: name.into(),
                keys,
            })),
            (false, None) => Ok(None),
            (false, Some(_)) => Err(format!(
                "AWS_PROFILE names the profile `{name}`, which {} does not have",
                [config, credentials]
                    .iter()
                    .flatten()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )),
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.keys
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A profile without static keys whose credentials come from a role, SSO or a process is
    /// an error (unless the environment gives credentials another way object_store reads).
    fn check_credentials(&self, vars: &HashMap<String, String>) -> Result<(), String> {
        let other_way = [
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ]
        .iter()
        .any(|name| vars.get(*name).is_some_and(|v| !v.is_empty()));
        if self.get("aws_access_key_id").is_some() || other_way {
            return Ok(());
        }
        match INDIRECT_CREDENTIALS
            .iter()
            .find(|key| self.get(key).is_some())
        {
            Some(key) => Err(format!(
                "the AWS profile `{}` gets its credentials through `{key}`, which this build does \
                 not resolve: export them into the environment (`aws configure \
                 export-credentials --profile {} --format env`)",
                self.name, self.name
            )),
            None => Ok(()),
        }
    }
}

/// The `key = value` lines of the first of `sections` that `text` (an INI file) has; keys in
/// lower case, indented lines (nested settings) left out.
fn ini_section(text: &str, sections: &[String]) -> Option<BTreeMap<String, String>> {
    let mut current: Option<String> = None;
    let mut found: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(header) = trimmed.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            let header = header.split_whitespace().collect::<Vec<_>>().join(" ");
            current = sections.contains(&header).then_some(header);
            if let Some(name) = &current {
                found.entry(name.clone()).or_default();
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let (Some(section), Some((key, value))) = (&current, trimmed.split_once('=')) {
            found
                .entry(section.clone())
                .or_default()
                .insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    sections.iter().find_map(|s| found.remove(s))
}

/// What a bucket's errors are rewritten with: its URL before keys, secrets replaced.
#[derive(Clone)]
struct Scrub {
    /// `s3://bucket`.
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

impl Scrub {
    fn text(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_owned(), |text, secret| {
            text.replace(secret, "******")
        })
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

/// The S3 store of one bucket, its errors rewritten by [`Scrub`].
struct S3Bucket {
    inner: object_store::aws::AmazonS3,
    scrub: Scrub,
}

/// The bucket only: the client's debug form would show its settings (an SSE-C key among them).
impl fmt::Debug for S3Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3Bucket({})", self.scrub.root)
    }
}

impl fmt::Display for S3Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3({})", self.scrub.root)
    }
}

type StoreResult<T> = object_store::Result<T>;

#[async_trait]
impl ObjectStore for S3Bucket {
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

/// A multipart upload of an [`S3Bucket`], its errors rewritten the same way.
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
    use datafusion::execution::object_store::ObjectStoreRegistry;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn value(settings: &S3Settings, key: AmazonS3ConfigKey) -> Option<&str> {
        settings
            .options
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_environment_gives_credentials_region_and_endpoint() {
        let settings = S3Settings::from_vars(
            &vars(&[
                ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI"),
                ("AWS_DEFAULT_REGION", "eu-west-1"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
                ("AWS_UNRELATED_THING", "x"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(
            value(&settings, AmazonS3ConfigKey::AccessKeyId),
            Some("AKIDEXAMPLE")
        );
        assert_eq!(
            value(&settings, AmazonS3ConfigKey::Region),
            Some("eu-west-1")
        );
        assert_eq!(
            value(
                &settings,
                AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)
            ),
            Some("true")
        );
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("wJalrXUtnFEMI") && shown.contains("AKIDEXAMPLE"),
            "{shown}"
        );
    }

    #[test]
    fn a_profile_fills_in_what_the_environment_leaves_out() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(
            home.path().join(".aws/credentials"),
            "[default]\naws_access_key_id = DEFAULTKEY\naws_secret_access_key = defaultsecret\n\
             [work]\naws_access_key_id = WORKKEY\naws_secret_access_key = worksecret\n",
        )
        .unwrap();
        std::fs::write(
            home.path().join(".aws/config"),
            "[default]\nregion = us-west-2\n[profile work]\nregion = eu-central-1\n\
             endpoint_url = https://s3.example.com\ns3 =\n  addressing_style = path\n\
             [profile sso]\nsso_session = corp\nregion = us-east-2\n",
        )
        .unwrap();
        let read = |pairs: &[(&str, &str)]| S3Settings::from_vars(&vars(pairs), Some(home.path()));
        let default = read(&[]).unwrap();
        assert_eq!(
            value(&default, AmazonS3ConfigKey::AccessKeyId),
            Some("DEFAULTKEY")
        );
        assert_eq!(
            value(&default, AmazonS3ConfigKey::Region),
            Some("us-west-2")
        );
        let work = read(&[("AWS_PROFILE", "work"), ("AWS_REGION", "ap-south-1")]).unwrap();
        assert_eq!(
            value(&work, AmazonS3ConfigKey::AccessKeyId),
            Some("WORKKEY")
        );
        assert_eq!(value(&work, AmazonS3ConfigKey::Region), Some("ap-south-1"));
        assert_eq!(
            value(&work, AmazonS3ConfigKey::Endpoint),
            Some("https://s3.example.com")
        );
        // Credentials come whole from the environment when it has a key id.
        let env = read(&[
            ("AWS_PROFILE", "work"),
            ("AWS_ACCESS_KEY_ID", "ENVKEY"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
        ])
        .unwrap();
        assert_eq!(value(&env, AmazonS3ConfigKey::AccessKeyId), Some("ENVKEY"));
        assert_eq!(
            value(&env, AmazonS3ConfigKey::SecretAccessKey),
            Some("envsecret")
        );
        let missing = read(&[("AWS_PROFILE", "nope")]).err().unwrap();
        assert!(missing.contains("`nope`"), "{missing}");
        let sso = read(&[("AWS_PROFILE", "sso")]).err().unwrap();
        assert!(
            sso.contains("sso_session") && sso.contains("export-credentials"),
            "{sso}"
        );
    }

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

    #[test]
    fn debug_forms_hide_secrets() {
        let settings = S3Settings::new()
            .with_credentials("AKIDEXAMPLE", "topsecret-1234")
            .with_session_token("session-5678")
            .with_endpoint("http://127.0.0.1:9");
        let store = settings.store("bucket", "s3://bucket").unwrap();
        let registry = super::super::StoreRegistry::with_s3(settings);
        registry.register_store(&url::Url::parse("s3://bucket").unwrap(), store.clone());
        for shown in [format!("{store:?}"), format!("{registry:?}")] {
            assert!(
                !shown.contains("topsecret-1234") && !shown.contains("session-5678"),
                "{shown}"
            );
        }
    }
}

//! Amazon S3 and S3-compatible stores: the settings (environment and profile) and the store of
//! one bucket.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::error::{DataFusionError, Result as DfResult};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3CopyIfNotExists};
use object_store::{ClientConfigKey, ObjectStore};

use super::cloud::{hide, Bucket, Options};

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
/// let registry = std::sync::Arc::new(StoreRegistry::new().with_s3(settings));
/// let ctx = datafusion::prelude::SessionContext::new_with_config_rt(
///     Default::default(),
///     span_marker_udfs::store::runtime_env_with(registry),
/// );
/// # drop(ctx);
/// ```
#[derive(Clone)]
pub struct S3Settings {
    options: Options<AmazonS3ConfigKey>,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            options: Options::new(&SECRET_KEYS),
        }
    }
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
                        settings.options.push(key, value);
                    }
                }
            }
        }
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| profile.as_ref()?.get("region").map(str::to_owned));
        if let Some(region) = region {
            settings.options.push(AmazonS3ConfigKey::Region, region);
        }
        if let Some(endpoint) = profile.as_ref().and_then(|p| p.get("endpoint_url")) {
            settings.options.push(AmazonS3ConfigKey::Endpoint, endpoint);
        }
        // The rest of the environment as object_store's `from_env` reads it, in a fixed order:
        // the region is settled above, and credentials come whole from one place.
        settings.options.push_env(vars, &["AWS_"], |name, key| {
            let credential = matches!(
                key,
                AmazonS3ConfigKey::AccessKeyId
                    | AmazonS3ConfigKey::SecretAccessKey
                    | AmazonS3ConfigKey::Token
            );
            !matches!(name, "AWS_REGION" | "AWS_DEFAULT_REGION") && (env_credentials || !credential)
        });
        Ok(settings.allowing_http_endpoints())
    }

    /// Static credentials: an access key id and its secret.
    pub fn with_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.options
            .push(AmazonS3ConfigKey::AccessKeyId, access_key_id);
        self.options
            .push(AmazonS3ConfigKey::SecretAccessKey, secret_access_key);
        self
    }

    /// The session token of temporary credentials.
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.options.push(AmazonS3ConfigKey::Token, token);
        self
    }

    /// The region (`us-east-1` when unset).
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.options.push(AmazonS3ConfigKey::Region, region);
        self
    }

    /// The endpoint of an S3-compatible server (`http://127.0.0.1:9000`); buckets are then
    /// addressed by path. An `http://` endpoint allows plain HTTP.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.options.push(AmazonS3ConfigKey::Endpoint, endpoint);
        self.allowing_http_endpoints()
    }

    /// Whether plain HTTP is allowed.
    pub fn with_allow_http(mut self, allow: bool) -> Self {
        self.options.push(
            AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp),
            allow.to_string(),
        );
        self
    }

    /// Any option of object_store's Amazon S3 builder by its key (`aws_virtual_hosted_style_request`,
    /// `aws_checksum_algorithm`, ...); an unknown key is an error naming it.
    pub fn with_option(mut self, key: &str, value: impl Into<String>) -> Result<Self, String> {
        self.options.push_named(key, value, "S3")?;
        Ok(self)
    }

    /// An `http://` endpoint given without a word on plain HTTP allows it: naming one is the
    /// intent (S3-compatible servers on a local network), where object_store refuses it.
    fn allowing_http_endpoints(mut self) -> Self {
        self.options.allowing_http(
            &[AmazonS3ConfigKey::Endpoint, AmazonS3ConfigKey::S3Endpoint],
            AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp),
        );
        self
    }

    /// The store of `bucket`, named `root` (`s3://bucket`) in its errors.
    pub(super) fn store(&self, bucket: &str, root: &str) -> DfResult<Arc<dyn ObjectStore>> {
        // Publishing an output never replaces an object: a copy completed with
        // `If-None-Match: *` (Amazon S3 and most compatible stores) unless
        // `AWS_COPY_IF_NOT_EXISTS` names another way (a header, for Cloudflare R2).
        let mut builder =
            AmazonS3Builder::new().with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
        for (key, value) in &self.options.list {
            builder = builder.with_config(*key, value);
        }
        let secrets = self.options.secrets();
        let inner = builder.with_bucket_name(bucket).build().map_err(|e| {
            DataFusionError::Configuration(format!(
                "{root}: cannot set up the S3 store: {}",
                hide(&secrets, &e.to_string())
            ))
        })?;
        Ok(Bucket::wrap(inner, root, secrets))
    }
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.options.fmt(f)
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
        settings.options.get(key)
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
    fn debug_forms_hide_secrets() {
        let settings = S3Settings::new()
            .with_credentials("AKIDEXAMPLE", "topsecret-1234")
            .with_session_token("session-5678")
            .with_endpoint("http://127.0.0.1:9");
        let store = settings.store("bucket", "s3://bucket").unwrap();
        let registry = super::super::StoreRegistry::new().with_s3(settings);
        registry.register_store(&url::Url::parse("s3://bucket").unwrap(), store.clone());
        for shown in [format!("{store:?}"), format!("{registry:?}")] {
            assert!(
                !shown.contains("topsecret-1234") && !shown.contains("session-5678"),
                "{shown}"
            );
        }
    }
}

//! Azure Blob Storage (and Data Lake Storage Gen2): the settings (the standard Azure
//! environment) and the store of one container.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::error::{DataFusionError, Result as DfResult};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::{ClientConfigKey, ObjectStore};

use super::cloud::{hide, Bucket, Options};

/// How Azure storage is reached: the account, its credentials and any other option of
/// object_store's Azure builder, by its key name.
///
/// [`AzureSettings::from_env`] reads the standard Azure environment; the builder methods set
/// options explicitly. Later settings replace earlier ones. `Debug` shows keys, secrets and
/// tokens as `******`.
///
/// ```
/// use span_marker_udfs::store::{AzureSettings, StoreRegistry};
///
/// let settings = AzureSettings::new()
///     .with_account("devstoreaccount1", "c2VjcmV0LWtleS1ieXRlcw==")
///     .with_endpoint("http://127.0.0.1:10000/devstoreaccount1");
/// assert!(!format!("{settings:?}").contains("c2VjcmV0"));
/// let registry = StoreRegistry::new().with_azure(settings);
/// # drop(registry);
/// ```
#[derive(Clone)]
pub struct AzureSettings {
    options: Options<AzureConfigKey>,
}

/// Keys whose values are secrets: never shown.
const SECRET_KEYS: [&str; 5] = [
    "azure_storage_account_key",
    "azure_storage_client_secret",
    "azure_storage_sas_key",
    "azure_storage_token",
    "azure_fabric_session_token",
];

impl Default for AzureSettings {
    fn default() -> Self {
        Self {
            options: Options::new(&SECRET_KEYS),
        }
    }
}

impl AzureSettings {
    /// Nothing set: the account must come from the URL (`abfss://container@account.dfs...`),
    /// credentials from the instance's managed identity.
    pub fn new() -> Self {
        Self::default()
    }

    /// The standard Azure environment as object_store reads it: `AZURE_STORAGE_ACCOUNT_NAME`,
    /// `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_TOKEN`, a service principal's
    /// `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` and `AZURE_TENANT_ID`, workload identity
    /// (`AZURE_FEDERATED_TOKEN_FILE`), `AZURE_STORAGE_ENDPOINT`, `AZURE_STORAGE_USE_EMULATOR`
    /// (Azurite; `AZURITE_BLOB_STORAGE_URL` moves it), the managed identity's
    /// `IDENTITY_ENDPOINT` (App Service, Functions, Container Apps) and the other `AZURE_*`
    /// variables. An `http://` endpoint allows plain HTTP.
    pub fn from_env() -> Self {
        let vars: HashMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with("AZURE_") || k == "IDENTITY_ENDPOINT")
            .collect();
        Self::from_vars(&vars)
    }

    fn from_vars(vars: &HashMap<String, String>) -> Self {
        let mut settings = Self::new();
        settings
            .options
            .push_env(vars, &["AZURE_", "IDENTITY_ENDPOINT"], |_, _| true);
        settings.allowing_http_endpoints()
    }

    /// The storage account and its access key (base64, as the portal shows it).
    pub fn with_account(mut self, name: impl Into<String>, key: impl Into<String>) -> Self {
        self.options.push(AzureConfigKey::AccountName, name);
        self.options.push(AzureConfigKey::AccessKey, key);
        self
    }

    /// The blob endpoint of the account (`https://account.blob.core.windows.net` by default;
    /// `http://127.0.0.1:10000/account` for Azurite). An `http://` endpoint allows plain HTTP.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.options.push(AzureConfigKey::Endpoint, endpoint);
        self.allowing_http_endpoints()
    }

    /// Any option of object_store's Azure builder by its key (`azure_storage_sas_key`,
    /// `azure_client_id`, ...); an unknown key is an error naming it.
    pub fn with_option(mut self, key: &str, value: impl Into<String>) -> Result<Self, String> {
        self.options.push_named(key, value, "Azure")?;
        Ok(self.allowing_http_endpoints())
    }

    fn allowing_http_endpoints(mut self) -> Self {
        self.options.allowing_http(
            &[AzureConfigKey::Endpoint],
            AzureConfigKey::Client(ClientConfigKey::AllowHttp),
        );
        self
    }

    /// The store of the container at `root` (`az://container`,
    /// `abfss://container@account.dfs.core.windows.net`), named so in its errors.
    pub(super) fn store(&self, root: &str) -> DfResult<Arc<dyn ObjectStore>> {
        let mut builder = MicrosoftAzureBuilder::new();
        for (key, value) in &self.options.list {
            builder = builder.with_config(*key, value);
        }
        let secrets = self.options.secrets();
        let inner = builder.with_url(root).build().map_err(|e| {
            let text = hide(&secrets, &e.to_string());
            let hint = if text.contains("Account must be specified") {
                ": set AZURE_STORAGE_ACCOUNT_NAME (and its credentials, such as \
                 AZURE_STORAGE_ACCOUNT_KEY), or name the account in the URL \
                 (abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/KEY)"
            } else {
                ""
            };
            DataFusionError::Configuration(format!(
                "{root}: cannot set up the Azure store: {text}{hint}"
            ))
        })?;
        Ok(Bucket::wrap(inner, root, secrets))
    }
}

impl fmt::Debug for AzureSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.options.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_gives_the_account_and_hides_its_key() {
        let vars: HashMap<String, String> = [
            ("AZURE_STORAGE_ACCOUNT_NAME", "corpora"),
            ("AZURE_STORAGE_ACCOUNT_KEY", "a2V5LWJ5dGVzLWhlcmU="),
            ("AZURE_STORAGE_ENDPOINT", "http://127.0.0.1:10000/corpora"),
            ("IDENTITY_ENDPOINT", "http://169.254.130.1/msi/token"),
            ("AZURE_UNRELATED", "x"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let settings = AzureSettings::from_vars(&vars);
        assert_eq!(
            settings.options.get(AzureConfigKey::AccountName),
            Some("corpora")
        );
        assert_eq!(
            settings
                .options
                .get(AzureConfigKey::Client(ClientConfigKey::AllowHttp)),
            Some("true")
        );
        assert_eq!(
            settings.options.get(AzureConfigKey::MsiEndpoint),
            Some("http://169.254.130.1/msi/token")
        );
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("a2V5LWJ5") && shown.contains("corpora"),
            "{shown}"
        );
    }

    #[test]
    fn a_missing_account_is_named() {
        let error = AzureSettings::new().store("az://container").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("az://container"), "{text}");
        assert!(text.contains("AZURE_STORAGE_ACCOUNT_NAME"), "{text}");
    }
}

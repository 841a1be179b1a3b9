//! The client side: a checked connection to a scheduler, sessions on it, and the model check.

use std::collections::BTreeMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use ballista::prelude::SessionContextExt;
use ballista_core::config::BALLISTA_COALESCE_ENABLED;
use datafusion::arrow::array::AsArray;
use datafusion::prelude::SessionContext;
use serde::Deserialize;

use crate::cluster::server::SCHEDULER_PORT;
use crate::cluster::{session_config, session_state};
use crate::error::{Error, Result};
use crate::sql::{scalar_functions, ModelInfo, SpanMarkerOptions};

/// How long a scheduler may take to accept a connection or answer its REST API.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A Ballista scheduler with SpanMarker executors, reached at `df://HOST:PORT`.
#[derive(Debug, Clone)]
pub struct Cluster {
    url: String,
    host: String,
    port: u16,
}

/// An executor registered with the scheduler, as its REST API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExecutorInfo {
    pub id: String,
    pub host: String,
    pub port: u16,
}

impl Cluster {
    /// Parses `url` (`df://HOST[:PORT]`, port 50050 by default) and checks within seconds
    /// that a Ballista scheduler answers there.
    pub fn connect(url: &str) -> Result<Self> {
        let bad = |message: String| Error::Cluster {
            url: url.to_owned(),
            message,
        };
        let rest = url.strip_prefix("df://").ok_or_else(|| {
            bad("not a cluster address: expected df://HOST:PORT (e.g. df://127.0.0.1:50050)".into())
        })?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| bad(format!("`{port}` is not a port number")))?,
            ),
            None => (rest, SCHEDULER_PORT),
        };
        if host.is_empty() || host.contains('/') {
            return Err(bad("expected df://HOST:PORT".into()));
        }
        let cluster = Self {
            url: url.to_owned(),
            host: host.to_owned(),
            port,
        };
        let addresses: Vec<_> = (host, port)
            .to_socket_addrs()
            .map_err(|e| bad(format!("cannot resolve `{host}`: {e}")))?
            .collect();
        let mut last_error = None;
        for address in &addresses {
            match TcpStream::connect_timeout(address, CONNECT_TIMEOUT) {
                Ok(_) => {
                    last_error = None;
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        if let Some(e) = last_error {
            return Err(bad(format!(
                "cannot reach the scheduler: {e} (is `span-marker cluster scheduler` running there?)"
            )));
        }
        cluster.executors()?;
        Ok(cluster)
    }

    /// The address it was reached at.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The executors registered with the scheduler now.
    pub fn executors(&self) -> Result<Vec<ExecutorInfo>> {
        let endpoint = format!("http://{}:{}/api/executors", self.host, self.port);
        let agent = ureq::AgentBuilder::new().timeout(CONNECT_TIMEOUT).build();
        let answer = agent
            .get(&endpoint)
            .call()
            .map_err(|e| self.error(format!("no Ballista scheduler answers at {endpoint}: {e}")))?;
        answer.into_json().map_err(|e| {
            self.error(format!(
                "{endpoint} did not answer like a Ballista scheduler: {e}"
            ))
        })
    }

    /// Waits up to `timeout` for at least `count` executors to register.
    pub fn wait_for_executors(&self, count: usize, timeout: Duration) -> Result<Vec<ExecutorInfo>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let executors = self.executors()?;
            if executors.len() >= count {
                return Ok(executors);
            }
            if std::time::Instant::now() >= deadline {
                return Err(self.error(format!(
                    "{} executor(s) registered after {timeout:?}, {count} wanted",
                    executors.len()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A session whose queries run on the cluster, with the SpanMarker functions and settings.
    pub async fn context(&self) -> Result<SessionContext> {
        let state = session_state(session_config())?;
        let url = format!("df://{}:{}", self.host, self.port);
        let ctx = SessionContext::remote_with_state(&url, state).await?;
        // Ballista's upgrade of the state replaces its scalar functions with its own list.
        for udf in scalar_functions(None, None) {
            ctx.register_udf(udf);
        }
        Ok(ctx)
    }

    /// Has every executor load the model that `ctx`'s settings name and checks that they all
    /// load the same weights, before any real work: an executor that cannot load it is named
    /// in the error. Returns what each executor loaded, by executor id.
    pub async fn check_model(&self, ctx: &SessionContext) -> Result<BTreeMap<String, ModelInfo>> {
        let executors = self.executors()?;
        if executors.is_empty() {
            return Err(self.error(
                "no executors have registered with the scheduler (start them with `span-marker cluster executor`)".into(),
            ));
        }
        let model = SpanMarkerOptions::from_config(ctx.state().config().options())
            .model
            .clone();
        let mut answers = BTreeMap::new();
        // Tasks go to the executors in turn, so a few tasks per executor reach them all; a
        // busy cluster may need another round.
        for round in 0..4 {
            let partitions = (executors.len() * 4) << round;
            let asked = self.ask_executors(ctx, partitions).await;
            for info in asked.map_err(|e| {
                let reason = match e {
                    Error::DataFusion(e) => readable_error(&e),
                    other => other.to_string(),
                };
                self.error(format!(
                    "the model `{model}` cannot be loaded on every executor: {reason}"
                ))
            })? {
                answers.insert(info.executor.clone(), info);
            }
            if executors.iter().all(|e| answers.contains_key(&e.id)) {
                break;
            }
        }
        let missing: Vec<&str> = executors
            .iter()
            .filter(|e| !answers.contains_key(&e.id))
            .map(|e| e.id.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(self.error(format!(
                "executor(s) {} took no part in the check of model `{model}`: busy, or lost (the \
                 scheduler drops a lost executor after its executor timeout; run again then)",
                missing.join(", ")
            )));
        }
        let mut fingerprints: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for info in answers.values() {
            fingerprints
                .entry(info.fingerprint.as_str())
                .or_default()
                .push(&info.executor);
        }
        if fingerprints.len() > 1 {
            let groups: Vec<String> = fingerprints
                .iter()
                .map(|(digest, executors)| {
                    format!(
                        "{} on {}",
                        &digest[..12.min(digest.len())],
                        executors.join(", ")
                    )
                })
                .collect();
            return Err(self.error(format!(
                "the executors loaded different weights for model `{model}` ({}): give every executor the same model",
                groups.join("; ")
            )));
        }
        Ok(answers)
    }

    /// `span_marker_model_info()` in each of `partitions` partitions (a union of one-row
    /// selects: one task each, where a single table would be one task).
    async fn ask_executors(
        &self,
        ctx: &SessionContext,
        partitions: usize,
    ) -> Result<Vec<ModelInfo>> {
        // The same session, without Ballista's merging of small partitions into one task.
        let mut state = ctx.state();
        state
            .config_mut()
            .options_mut()
            .set(BALLISTA_COALESCE_ENABLED, "false")?;
        let ctx = SessionContext::new_with_state(state);
        let rows: Vec<String> = (0..partitions)
            .map(|i| format!("SELECT {i} AS i"))
            .collect();
        let batches = ctx
            .sql(&format!(
                "SELECT span_marker_model_info() AS info FROM ({})",
                rows.join(" UNION ALL ")
            ))
            .await?
            .collect()
            .await?;
        let mut answers = Vec::new();
        for batch in &batches {
            for text in batch.column(0).as_string::<i32>().iter().flatten() {
                let info: ModelInfo = serde_json::from_str(text).map_err(|e| {
                    self.error(format!(
                        "an executor answered the model check with `{text}`: {e}"
                    ))
                })?;
                answers.push(info);
            }
        }
        Ok(answers)
    }

    fn error(&self, message: String) -> Error {
        Error::Cluster {
            url: self.url.clone(),
            message,
        }
    }
}

/// A cluster error as one readable line: where a task failed, the message of the executor's
/// error, which Ballista hands back in its debug form (`DataFusionError(Shared(External(...`).
pub fn readable_error(error: &datafusion::error::DataFusionError) -> String {
    const MARK: &str = "Execution(\"";
    let text = error.strip_backtrace();
    let Some(start) = text.find(MARK) else {
        return text;
    };
    // The string's debug form, up to its closing quote.
    let mut message = String::new();
    let mut chars = text[start + MARK.len()..].chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            ('"', _) => break,
            (_, true) => match chars.next() {
                Some('n') => message.push('\n'),
                Some('t') => message.push('\t'),
                Some(escaped) => message.push(escaped),
                None => break,
            },
            (c, false) => message.push(c),
        }
    }
    format!("a task failed on the cluster: {message}")
}

/// A session on the cluster at `url` (`df://HOST:PORT`), checked to answer; the same as
/// `Cluster::connect(url)?.context()`.
pub async fn remote_context(url: &str) -> Result<SessionContext> {
    Cluster::connect(url)?.context().await
}

#[cfg(test)]
mod tests {
    use datafusion::error::DataFusionError;

    use super::*;

    #[test]
    fn a_task_error_in_debug_form_comes_back_as_its_message() {
        // How Ballista's client reports a task that failed on an executor.
        let inner = DataFusionError::Execution(
            "executor 127.0.0.1:1/2: model \"m\": not a directory\nsee `x`".into(),
        );
        let shipped = DataFusionError::Execution(format!(
            "Job 1 failed: Job failed due to stage 0 failed: Task failed due to runtime \
             execution error: DataFusionError(Shared(External(DataFusionError({inner:?})))))"
        ));
        assert_eq!(
            readable_error(&shipped),
            "a task failed on the cluster: executor 127.0.0.1:1/2: model \"m\": not a directory\nsee `x`"
        );
        let plain = DataFusionError::Plan("no such table".into());
        assert_eq!(readable_error(&plain), plain.strip_backtrace());
    }

    #[test]
    fn addresses_that_are_not_df_urls_are_refused_before_any_connection() {
        for (url, expected) in [
            ("http://h:1", "expected df://HOST:PORT"),
            ("df://", "expected df://HOST:PORT"),
            ("df://h:port", "`port` is not a port number"),
            ("df://h/x:1", "expected df://HOST:PORT"),
        ] {
            let error = Cluster::connect(url).unwrap_err().to_string();
            assert!(error.contains(expected), "{url}: {error}");
            assert!(error.starts_with(&format!("cluster {url}: ")), "{error}");
        }
    }
}

//! The client side: a checked connection to a scheduler, sessions on it, and the model check.

use std::collections::BTreeMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use ballista::prelude::SessionContextExt;
use ballista_api_types::dto::{JobResponse, QueryStagesResponse, TaskStatus};
use ballista_core::config::{BALLISTA_COALESCE_ENABLED, BALLISTA_JOB_NAME};
use datafusion::prelude::SessionContext;
use serde::Deserialize;

use crate::cluster::server::SCHEDULER_PORT;
use crate::cluster::{session_config, session_state};
use crate::error::{Error, Result};
use crate::sql::{scalar_functions, ModelInfo, SpanMarkerOptions};

/// How long a scheduler may take to accept a connection or answer its REST API.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a job may show no progress before its client gives up on it (see
/// [`Cluster::run_watched`]). A task shows progress only when it ends, so this must exceed the
/// longest task (the annotation of one file).
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// How often a watched job is looked at.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// How long a job the scheduler reports failed may keep its client waiting.
const FAILED_GRACE: Duration = Duration::from_secs(5);

/// A Ballista scheduler with SpanMarker executors, reached at `df://HOST:PORT`.
#[derive(Debug, Clone)]
pub struct Cluster {
    url: String,
    host: String,
    port: u16,
    stall_timeout: Duration,
    /// The client of the scheduler's REST API; each call bounded by [`CONNECT_TIMEOUT`].
    agent: ureq::Agent,
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
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            agent: ureq::AgentBuilder::new().timeout(CONNECT_TIMEOUT).build(),
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

    /// How long a job may show no progress (no task or stage ending) before it is cancelled
    /// and its client fails, naming where it stood ([`DEFAULT_STALL_TIMEOUT`] unless set).
    pub fn with_stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// Runs `job`, the queries of one piece of work, on a session like `ctx` whose jobs carry
    /// a name of their own, and watches them on the scheduler. When nothing on the whole
    /// cluster makes progress (no task, stage or job of any client ends) for the stall timeout,
    /// or the scheduler says the jobs failed while the client still waits, the jobs are
    /// cancelled and the error names their stages, tasks, the executors' reasons and the
    /// executors; a job that waits its turn behind others' work is not stalled. Jobs still
    /// running when the returned future is dropped (another file's job failed first) are
    /// cancelled too. Ballista's client waits for a job without limit; this is the limit.
    pub async fn run_watched<T, F, Fut>(&self, ctx: &SessionContext, job: F) -> Result<T>
    where
        F: FnOnce(SessionContext) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let name = format!("span-marker-{}", ballista_core::ids::new_instance_id());
        let mut state = ctx.state();
        state
            .config_mut()
            .options_mut()
            .set(BALLISTA_JOB_NAME, &name)?;
        let mut guard = CancelOnDrop {
            cluster: self.clone(),
            name: name.clone(),
            armed: true,
        };
        let job = job(SessionContext::new_with_state(state));
        tokio::pin!(job);
        let mut ticks = tokio::time::interval(WATCH_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<Sighting> = None;
        let mut unchanged_since = Instant::now();
        let mut failed_since: Option<Instant> = None;
        loop {
            tokio::select! {
                result = &mut job => {
                    guard.armed = false;
                    return result;
                }
                _ = ticks.tick() => {}
            }
            let named = name.clone();
            let seen = self.blocking(move |cluster| cluster.look(&named)).await?;
            let seen = match seen {
                Ok(seen) => seen,
                // An unanswered look is no progress; the job's own error may still come.
                Err(e) if unchanged_since.elapsed() >= self.stall_timeout => return Err(e),
                Err(_) => continue,
            };
            let stalled = if seen.ours.iter().any(|job| job.status == "Failed") {
                let since = *failed_since.get_or_insert_with(Instant::now);
                (since.elapsed() >= FAILED_GRACE)
                    .then(|| "failed on the scheduler, but its client was never told".to_owned())
            } else if last.as_ref() != Some(&seen) {
                last = Some(seen.clone());
                unchanged_since = Instant::now();
                None
            } else {
                (unchanged_since.elapsed() >= self.stall_timeout).then(|| {
                    format!(
                        "made no progress in {}s (no task, stage or job ended anywhere on the \
                         cluster; a longer task needs a longer stall timeout)",
                        self.stall_timeout.as_secs()
                    )
                })
            };
            if let Some(why) = stalled {
                guard.armed = false;
                let jobs = seen.ours;
                return Err(self
                    .blocking(move |cluster| cluster.stalled(&jobs, &why))
                    .await?);
            }
        }
    }

    /// Runs blocking scheduler calls (`ureq`) off the async runtime's threads.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Cluster) -> T + Send + 'static,
    ) -> Result<T> {
        let cluster = self.clone();
        tokio::task::spawn_blocking(move || call(&cluster))
            .await
            .map_err(|e| self.error(format!("the job watch stopped: {e}")))
    }

    /// What the scheduler says of every job now, and of the jobs named `name` in detail.
    fn look(&self, name: &str) -> Result<Sighting> {
        let get = |path: &str| -> Result<ureq::Response> {
            let endpoint = self.api(path);
            self.agent
                .get(&endpoint)
                .call()
                .map_err(|e| self.error(format!("the scheduler did not answer {endpoint}: {e}")))
        };
        let unreadable = |e: std::io::Error| {
            self.error(format!(
                "the scheduler's answer about its jobs is unreadable: {e}"
            ))
        };
        let mut jobs: Vec<JobResponse> = get("jobs")?.into_json().map_err(unreadable)?;
        // The scheduler lists its jobs in no fixed order: two looks compare in id order.
        jobs.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        let cluster = jobs
            .iter()
            .map(|job| {
                (
                    job.job_id.clone(),
                    job.status.clone(),
                    job.completed_stages,
                    job.percent_complete,
                )
            })
            .collect();
        let mut ours = Vec::new();
        for job in jobs.into_iter().filter(|job| job.job_name == name) {
            let stages: QueryStagesResponse = get(&format!("job/{}/stages", job.job_id))?
                .into_json()
                .map_err(unreadable)?;
            ours.push(JobProgress::new(job, stages));
        }
        Ok(Sighting { cluster, ours })
    }

    /// Cancels the jobs named `name` that are still queued or running.
    fn cancel_named(&self, name: &str) {
        match self.look(name) {
            Ok(seen) => {
                for job in &seen.ours {
                    self.cancel(job);
                }
            }
            Err(e) => tracing::warn!("could not cancel the jobs of this client: {e}"),
        }
    }

    fn cancel(&self, job: &JobProgress) {
        if !matches!(job.status.as_str(), "Queued" | "Running") {
            return;
        }
        let endpoint = self.api(&format!("job/{}", job.id));
        if let Err(e) = self.agent.request("PATCH", &endpoint).call() {
            tracing::warn!(job = %job.id, "could not cancel the job: {e}");
        }
    }

    /// Cancels the unfinished `jobs` and says where they stood.
    fn stalled(&self, jobs: &[JobProgress], why: &str) -> Error {
        let mut lines = Vec::new();
        for job in jobs {
            let id = &job.id;
            self.cancel(job);
            lines.push(format!(
                "job {id} ({}, {} of {} stages done){}",
                job.status_text,
                job.completed_stages,
                job.num_stages,
                job.describe()
            ));
        }
        if lines.is_empty() {
            lines.push("the scheduler lists no job of this client".into());
        }
        let executors = match self.executors() {
            Ok(executors) if executors.is_empty() => "none registered".to_owned(),
            Ok(executors) => executors
                .iter()
                .map(|e| e.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => e.to_string(),
        };
        self.error(format!(
            "{why}; cancelled: {}; executors: {executors}",
            lines.join("; ")
        ))
    }

    /// The executors registered with the scheduler now.
    pub fn executors(&self) -> Result<Vec<ExecutorInfo>> {
        let endpoint = self.api("executors");
        let answer =
            self.agent.get(&endpoint).call().map_err(|e| {
                self.error(format!("no Ballista scheduler answers at {endpoint}: {e}"))
            })?;
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
        let model = absolute_model(ctx)?;
        let mut answers = BTreeMap::new();
        // Tasks go to the executors in turn, so a few tasks per executor reach them all; a
        // busy cluster may need another round.
        for round in 0..4 {
            let partitions = (executors.len() * 4) << round;
            let asked = self.ask_executors(ctx, partitions).await;
            for info in asked.map_err(|e| match e {
                Error::DataFusion(e) => self.error(format!(
                    "the model `{model}` cannot be loaded on every executor: {}",
                    readable_error(&e)
                )),
                Error::Cluster { message, .. } => {
                    self.error(format!("the check of model `{model}` failed: {message}"))
                }
                other => other,
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
        let query = format!(
            "SELECT span_marker_model_info() AS info FROM ({})",
            rows.join(" UNION ALL ")
        );
        let batches = self
            .run_watched(&ctx, |ctx| async move {
                Ok(ctx.sql(&query).await?.collect().await?)
            })
            .await?;
        ModelInfo::from_batches(&batches)
            .map_err(|e| self.error(format!("an executor answered the model check with {e}")))
    }

    /// The address of `path` in the scheduler's REST API.
    fn api(&self, path: &str) -> String {
        format!("http://{}:{}/api/{path}", self.host, self.port)
    }

    fn error(&self, message: String) -> Error {
        Error::Cluster {
            url: self.url.clone(),
            message,
        }
    }
}

/// Cancels the jobs of a [`Cluster::run_watched`] that is dropped before they end.
struct CancelOnDrop {
    cluster: Cluster,
    name: String,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.cluster.cancel_named(&self.name);
        }
    }
}

/// What a look at the scheduler saw: any change between two looks is progress.
#[derive(Debug, Clone, PartialEq)]
struct Sighting {
    /// Every job: its id, status, finished stages and share of finished tasks.
    cluster: Vec<(String, String, usize, u8)>,
    /// The watched jobs in detail.
    ours: Vec<JobProgress>,
}

/// What a look at one job saw.
#[derive(Debug, Clone, PartialEq)]
struct JobProgress {
    id: String,
    /// `Queued`, `Running`, `Completed` or `Failed`.
    status: String,
    /// The status in words (with a failed job's error).
    status_text: String,
    completed_stages: usize,
    num_stages: usize,
    /// Per stage: its id, status, and its tasks' ids by state.
    stages: Vec<StageProgress>,
}

#[derive(Debug, Clone, PartialEq)]
struct StageProgress {
    id: String,
    status: String,
    running: Vec<usize>,
    successful: usize,
    /// Failed tasks: id and the executor's reason.
    failed: Vec<(usize, String)>,
}

impl JobProgress {
    fn new(job: JobResponse, stages: QueryStagesResponse) -> Self {
        let mut stages: Vec<StageProgress> = stages
            .stages
            .into_iter()
            .map(|stage| {
                let mut progress = StageProgress {
                    id: stage.stage_id,
                    status: stage.stage_status,
                    running: Vec::new(),
                    successful: 0,
                    failed: Vec::new(),
                };
                for task in stage.tasks.into_iter().flatten() {
                    match task.status {
                        TaskStatus::Running => progress.running.push(task.id),
                        TaskStatus::Successful => progress.successful += 1,
                        TaskStatus::Failed { reason, error } => progress
                            .failed
                            .push((task.id, format!("{reason}: {error}"))),
                    }
                }
                progress.running.sort_unstable();
                progress.failed.sort();
                progress
            })
            .collect();
        // In a fixed order, as the scheduler's lists have none.
        stages.sort_by(|a, b| a.id.cmp(&b.id));
        Self {
            id: job.job_id,
            status: job.status,
            status_text: job.job_status,
            completed_stages: job.completed_stages,
            num_stages: job.num_stages,
            stages,
        }
    }

    /// The unfinished stages: their tasks and the executors' reasons for failed ones.
    fn describe(&self) -> String {
        let mut text = String::new();
        for stage in self.stages.iter().filter(|s| s.status != "Successful") {
            text += &format!(
                ": stage {} {}, tasks running {:?}, {} done",
                stage.id, stage.status, stage.running, stage.successful
            );
            for (task, reason) in &stage.failed {
                text += &format!(", task {task} failed: {reason}");
            }
        }
        text
    }
}

/// Makes the session's `span_marker.model` absolute when it names a directory relative to the
/// client's working directory, as input paths are, so that every executor loads the model the
/// client means rather than whatever is at that relative path in its own working directory.
/// Returns the model as the executors get it.
fn absolute_model(ctx: &SessionContext) -> Result<String> {
    let model = SpanMarkerOptions::from_config(ctx.state().config().options()).model;
    let path = std::path::Path::new(&model);
    if model == span_marker::hub::BUNDLED || !path.is_relative() || !path.is_dir() {
        return Ok(model);
    }
    let absolute = std::path::absolute(path)
        .map_err(|e| Error::io(path, e))?
        .to_string_lossy()
        .into_owned();
    ctx.state_ref()
        .write()
        .config_mut()
        .options_mut()
        .set("span_marker.model", &absolute)?;
    Ok(absolute)
}

/// A cluster error as one readable line: where a task failed, the message of the executor's
/// error, which Ballista hands back in its debug form (`DataFusionError(Shared(External(...`).
pub fn readable_error(error: &datafusion::error::DataFusionError) -> String {
    const MARK: &str = "Execution(\"";
    /// What Ballista's scheduler says of a task an executor would not run; the executor
    /// logged the reason.
    const REJECTED: &str = "task could not be prepared or was rejected by executor";
    let text = error.strip_backtrace();
    if text.contains(REJECTED) {
        return format!(
            "{text} (the executor's log says why, on a line `failed to decode tasks for ...`: \
             the scheduler, the executors and the client must run the same span-marker build)"
        );
    }
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

/// A cluster client's error as one readable line: a job's DataFusion error through
/// [`readable_error`], any other as it is.
pub fn describe(error: &Error) -> String {
    match error {
        Error::DataFusion(e) => readable_error(e),
        other => other.to_string(),
    }
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
        let rejected = DataFusionError::Execution(
            "Job 7 failed: task could not be prepared or was rejected by executor".into(),
        );
        assert!(readable_error(&rejected).contains("the executor's log says why"));
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

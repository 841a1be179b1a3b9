//! How this crate talks to a Hub over HTTP, for downloads and publishing alike:
//!
//! - **The address is checked first.** `http://` or `https://`, a host, and optionally a path
//!   that the Hub's paths go under (`https://proxy.example/hf` for a mirror behind a proxy); a
//!   query, a fragment or credentials (`user:password@`) are refused, and an address is only
//!   ever shown with its password replaced.
//! - **The token is checked before it is sent.** A byte that an HTTP header cannot carry, or an
//!   empty token, is refused by a message that names where the token came from, never the
//!   token; and every message that leaves this module has the token and the password taken
//!   out, whatever the server echoed.
//! - **Every step is bounded in time.** A step is one request and its repetitions; it ends
//!   within the Hub options' `timeout` (default [`DEFAULT_TIMEOUT`]), plus the time its body
//!   takes at [`MIN_RATE`] when it moves a file. A transfer that falls below that rate after
//!   its first `timeout` is ended too. A step that ran out of time is not repeated.
//! - **Redirects are never an answer.** Nothing follows them behind the caller's back: a
//!   publishing step refuses one ([`Failure::Redirect`]), a download follows it itself.
//! - **Repeatable requests are repeated** on network errors and `429`/`5xx` answers, after a
//!   growing wait, while the step has time left.

use std::cell::Cell;
use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{redact_url, HubOptions, Secret, DEFAULT_TIMEOUT, REDACTED, TIMEOUT_ENV};

/// The slowest transfer waited for, in bytes a second: a step that moves a file's content is
/// allowed the time its size takes at this rate on top of its `timeout`, and must keep this
/// rate on average once its first `timeout` has passed.
pub const MIN_RATE: u64 = 64 * 1024;

/// How many times a request that can be repeated is sent at most, and the wait before the
/// first repetition (doubled each time).
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Secrets shorter than this are not searched for in messages (they would blank out common
/// words); they never reach a message by construction either.
const MIN_SCRUBBED_LEN: usize = 4;

/// A Hub's checked base address.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// `scheme://host[:port][/path]`, without a trailing `/`.
    base: String,
    /// `scheme://host[:port]`, what relative redirects are resolved against.
    origin: String,
}

impl Endpoint {
    /// Checks `text` (from the options or `HF_ENDPOINT`); an error shows it redacted.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let shown = redact_url(text);
        let trimmed = text.trim();
        let lower = trimmed.to_ascii_lowercase();
        let scheme_len = if lower.starts_with("https://") {
            "https://".len()
        } else if lower.starts_with("http://") {
            "http://".len()
        } else {
            return Err(format!(
                "the Hub's address {shown:?} (from the options or HF_ENDPOINT) is not an \
                 http:// or https:// URL"
            ));
        };
        if trimmed.bytes().any(|b| !(0x21..=0x7E).contains(&b)) {
            return Err(format!(
                "the Hub's address {shown:?} has spaces, control or non-ASCII characters \
                 (percent-encode them)"
            ));
        }
        let rest = trimmed[scheme_len..].trim_end_matches('/');
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err(format!(
                "the Hub's address {shown:?} holds credentials (`user:password@`), which are \
                 not sent; leave them out and give a token (HF_TOKEN, `--token` or \
                 `huggingface-cli login`)"
            ));
        }
        if authority.is_empty() || authority.starts_with(':') {
            return Err(format!("the Hub's address {shown:?} has no host"));
        }
        if path.contains(['?', '#']) {
            return Err(format!(
                "the Hub's address {shown:?} has a query or a fragment, which the Hub's paths \
                 cannot be added to; give the address they go under, e.g. \
                 https://huggingface.co or https://proxy.example/hf"
            ));
        }
        let scheme = &lower[..scheme_len];
        Ok(Self {
            base: format!("{scheme}{authority}{path}"),
            origin: format!("{scheme}{authority}"),
        })
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }
}

/// The time a step may take: from its start, `timeout` plus `bytes` at [`MIN_RATE`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    start: Instant,
    limit: Duration,
}

impl Deadline {
    fn new(timeout: Duration, bytes: u64) -> Self {
        Self {
            start: Instant::now(),
            limit: timeout + Duration::from_secs_f64(bytes as f64 / MIN_RATE as f64),
        }
    }

    /// The time left, `None` once it is spent.
    fn remaining(&self) -> Option<Duration> {
        self.limit
            .checked_sub(self.start.elapsed())
            .filter(|left| !left.is_zero())
    }
}

/// The rate check of one transfer: after `grace`, at least [`MIN_RATE`] on average.
pub(crate) struct Pace {
    start: Instant,
    grace: Duration,
    done: Cell<u64>,
    too_slow: Cell<bool>,
}

impl Pace {
    fn new(grace: Duration) -> Self {
        Self {
            start: Instant::now(),
            grace,
            done: Cell::new(0),
            too_slow: Cell::new(false),
        }
    }

    /// Counts `bytes` more; an error once the transfer is behind.
    fn advance(&self, bytes: usize) -> std::io::Result<()> {
        self.done.set(self.done.get() + bytes as u64);
        if let Some(over) = self.start.elapsed().checked_sub(self.grace) {
            if (self.done.get() as f64) < over.as_secs_f64() * MIN_RATE as f64 {
                self.too_slow.set(true);
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the transfer is too slow",
                ));
            }
        }
        Ok(())
    }

    /// `inner`, read through this check.
    pub(crate) fn reader<R: Read>(&self, inner: R) -> PacedReader<'_, R> {
        PacedReader { inner, pace: self }
    }
}

/// A reader that fails once its transfer falls behind [`MIN_RATE`].
pub(crate) struct PacedReader<'a, R> {
    inner: R,
    pace: &'a Pace,
}

impl<R: Read> Read for PacedReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.pace.advance(0)?;
        let read = self.inner.read(buf)?;
        self.pace.advance(read)?;
        Ok(read)
    }
}

/// Why a step failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// An error answer: its status, the Hub's error code (`X-Error-Code`) and message.
    Status {
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// A redirect that is not followed (publishing), or one too many (downloads).
    Redirect { status: u16, location: String },
    /// The step's time ran out.
    TimedOut { limit: Duration },
    /// The transfer fell below [`MIN_RATE`] after its first `timeout`.
    TooSlow { grace: Duration },
    /// The network failed: the peer as `scheme://host:port` and what happened.
    Transport {
        kind: ureq::ErrorKind,
        peer: String,
        text: String,
    },
    /// The answer is not what the protocol says (not JSON, a header missing, a short body).
    Invalid(String),
}

impl Failure {
    /// Whether sending the request again may help.
    fn is_transient(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Transport { kind, .. } => matches!(
                kind,
                ureq::ErrorKind::Dns
                    | ureq::ErrorKind::ConnectionFailed
                    | ureq::ErrorKind::Io
                    | ureq::ErrorKind::ProxyConnect
                    | ureq::ErrorKind::BadStatus
                    | ureq::ErrorKind::BadHeader
            ),
            Self::Redirect { .. }
            | Self::TimedOut { .. }
            | Self::TooSlow { .. }
            | Self::Invalid(_) => false,
        }
    }

    /// The HTTP status of an error answer.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The Hub's error code (`RepoNotFound`, `EntryNotFound`, ...) of an error answer.
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            Self::Status { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status {
                status, message, ..
            } => write!(f, "HTTP {status} {message}"),
            Self::Redirect { status, location } => write!(
                f,
                "the server answered with a redirect (HTTP {status}) to {location:?}, which is \
                 not followed: check the Hub's address, and whether the repository was renamed"
            ),
            Self::TimedOut { limit } => write!(
                f,
                "no complete answer within {} (the Hub options' `timeout`, `--timeout` or \
                 {TIMEOUT_ENV}; {} s by default)",
                seconds(*limit),
                DEFAULT_TIMEOUT.as_secs()
            ),
            Self::TooSlow { grace } => write!(
                f,
                "the transfer fell below {} KiB/s after its first {} (the Hub options' \
                 `timeout`, `--timeout` or {TIMEOUT_ENV})",
                MIN_RATE / 1024,
                seconds(*grace)
            ),
            Self::Transport { peer, text, .. } => write!(f, "could not talk to {peer} ({text})"),
            Self::Invalid(message) => f.write_str(message),
        }
    }
}

/// A duration as seconds, for messages.
fn seconds(duration: Duration) -> String {
    let tenths = (duration.as_secs_f64() * 10.0).round();
    if tenths % 10.0 == 0.0 {
        format!("{} s", tenths / 10.0)
    } else {
        format!("{:.1} s", tenths / 10.0)
    }
}

/// A request body.
pub(crate) enum Body<'a> {
    Empty,
    Json(&'a Value),
    /// Text with its content type.
    Text(&'a str, &'a str),
}

impl Body<'_> {
    fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Json(value) => value.to_string().len() as u64,
            Body::Text(text, _) => text.len() as u64,
        }
    }
}

/// One request to the Hub's API, whose answer is JSON.
pub(crate) struct Call<'a> {
    method: &'a str,
    url: &'a str,
    body: Body<'a>,
    headers: Vec<(String, String)>,
    repeat: bool,
}

impl<'a> Call<'a> {
    pub(crate) fn get(url: &'a str) -> Self {
        Self {
            method: "GET",
            url,
            body: Body::Empty,
            headers: Vec::new(),
            repeat: true,
        }
    }

    pub(crate) fn post(url: &'a str, body: Body<'a>) -> Self {
        Self {
            method: "POST",
            body,
            ..Self::get(url)
        }
    }

    /// With one more header.
    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sent once, never repeated (a request whose effect must not happen twice).
    pub(crate) fn once(mut self) -> Self {
        self.repeat = false;
        self
    }
}

/// The HTTP side of one session with a Hub: the checked address and token, the time limit,
/// and the secrets to keep out of messages.
pub(crate) struct Http {
    endpoint: Endpoint,
    token: Option<Secret>,
    timeout: Duration,
    secrets: Vec<String>,
}

impl Http {
    /// Checks the address, the token and the timeout of `options`; a message says what is
    /// wrong without showing a secret.
    pub(crate) fn new(options: &HubOptions) -> Result<Self, String> {
        let raw_endpoint = options.endpoint();
        let mut secrets = url_secrets(&raw_endpoint);
        let endpoint = Endpoint::parse(&raw_endpoint)?;
        let token = options.checked_token()?;
        if let Some(token) = &token {
            secrets.push(token.expose().to_owned());
        }
        let timeout = options.checked_timeout()?;
        Ok(Self {
            endpoint,
            token,
            timeout,
            secrets,
        })
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub(crate) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The time limit of a step that moves `bytes` of content.
    pub(crate) fn deadline(&self, bytes: u64) -> Deadline {
        Deadline::new(self.timeout, bytes)
    }

    /// The rate check of one transfer.
    pub(crate) fn pace(&self) -> Pace {
        Pace::new(self.timeout)
    }

    /// A request that is part of the step bounded by `deadline`, with the token when `token`.
    pub(crate) fn request(
        &self,
        method: &str,
        url: &str,
        deadline: &Deadline,
        token: bool,
    ) -> Result<ureq::Request, Failure> {
        let left = deadline.remaining().ok_or(Failure::TimedOut {
            limit: deadline.limit,
        })?;
        // An agent per request, whose connection may take no longer than the time left
        // (ureq bounds connecting by its own limit, not by the request's deadline). None is
        // reused: ureq clears a pooled connection's socket time limits, and a request on it
        // could then wait forever to write its body; a fresh one is bounded by the deadline.
        let agent = ureq::AgentBuilder::new()
            .try_proxy_from_env(true)
            // Redirects are looked at by the callers, never followed silently.
            .redirects(0)
            .timeout_connect(left)
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .build();
        let mut request = agent.request(method, url).timeout(left).set(
            "User-Agent",
            concat!("span-marker-rs/", env!("CARGO_PKG_VERSION")),
        );
        if let (true, Some(secret)) = (token, &self.token) {
            request = request.set("Authorization", &format!("Bearer {}", secret.expose()));
        }
        Ok(request)
    }

    /// Whether `url` is on the Hub's host (the token goes there only).
    pub(crate) fn is_on_hub(&self, url: &str) -> bool {
        // Parsed as the client parses it (`https://evil\@hub/` is on `evil`), and never an
        // address with credentials.
        let (Ok(target), Ok(hub)) = (
            url::Url::parse(url),
            url::Url::parse(self.endpoint.origin()),
        ) else {
            return false;
        };
        target.username().is_empty()
            && target.password().is_none()
            && target.scheme() == hub.scheme()
            && target.host() == hub.host()
            && target.port_or_known_default() == hub.port_or_known_default()
    }

    /// A sent request's outcome: a `2xx` answer as is, a redirect as an answer when
    /// `redirects` (else [`Failure::Redirect`]), anything else as a failure.
    pub(crate) fn answer(
        &self,
        sent: Result<ureq::Response, ureq::Error>,
        deadline: &Deadline,
        pace: Option<&Pace>,
        redirects: bool,
    ) -> Result<ureq::Response, Failure> {
        match sent {
            Ok(response) if (300..400).contains(&response.status()) && !redirects => {
                Err(Failure::Redirect {
                    status: response.status(),
                    location: response.header("Location").unwrap_or("").to_owned(),
                })
            }
            Ok(response) => Ok(response),
            Err(ureq::Error::Status(status, response)) => {
                let code = response.header("X-Error-Code").map(str::to_owned);
                let message = response
                    .header("X-Error-Message")
                    .map(str::to_owned)
                    .or_else(|| {
                        let body: Value = response.into_json().ok()?;
                        body["error"].as_str().map(str::to_owned)
                    })
                    .unwrap_or_default();
                Err(Failure::Status {
                    status,
                    code,
                    message,
                })
            }
            Err(ureq::Error::Transport(transport)) => {
                let peer = transport
                    .url()
                    .map(|url| origin_of(url.as_str()))
                    .unwrap_or_default();
                let mut text = transport.kind().to_string();
                if let Some(message) = transport.message() {
                    text = format!("{text}: {message}");
                }
                if let Some(source) = std::error::Error::source(&transport) {
                    text = format!("{text}: {source}");
                }
                Err(self.classify(
                    Failure::Transport {
                        kind: transport.kind(),
                        peer,
                        text,
                    },
                    deadline,
                    pace,
                ))
            }
        }
    }

    /// A failure while reading an answer's body.
    pub(crate) fn body_failure(
        &self,
        error: std::io::Error,
        url: &str,
        deadline: &Deadline,
        pace: Option<&Pace>,
    ) -> Failure {
        self.classify(
            Failure::Transport {
                kind: ureq::ErrorKind::Io,
                peer: origin_of(url),
                text: format!("reading the answer: {error}"),
            },
            deadline,
            pace,
        )
    }

    /// A network failure as a timeout when the step's time or rate ran out.
    fn classify(&self, failure: Failure, deadline: &Deadline, pace: Option<&Pace>) -> Failure {
        if pace.is_some_and(|p| p.too_slow.get()) {
            Failure::TooSlow {
                grace: self.timeout,
            }
        } else if deadline.remaining().is_none() {
            Failure::TimedOut {
                limit: deadline.limit,
            }
        } else {
            failure
        }
    }

    /// `attempt` until it succeeds, fails for good, [`ATTEMPTS`] are spent or the deadline
    /// leaves no time for another, when `repeat`; once otherwise.
    pub(crate) fn run<T>(
        &self,
        step: &str,
        deadline: &Deadline,
        repeat: bool,
        mut attempt: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let mut wait = FIRST_BACKOFF;
        let mut tries = 1;
        loop {
            match attempt() {
                Ok(value) => return Ok(value),
                Err(failure) => {
                    let time_left = deadline.remaining().is_some_and(|left| left > wait);
                    if !repeat || !failure.is_transient() || tries >= ATTEMPTS || !time_left {
                        return Err(failure);
                    }
                    tracing::warn!(
                        step,
                        attempt = tries,
                        error = %self.scrub(&failure.to_string()),
                        "the Hub did not answer; trying again"
                    );
                    std::thread::sleep(wait);
                    wait *= 2;
                    tries += 1;
                }
            }
        }
    }

    /// `call`'s answer as JSON (`null` when empty), repeated as `call` allows, all within one
    /// deadline: `timeout` plus the body's size at [`MIN_RATE`].
    pub(crate) fn call(&self, step: &str, call: &Call<'_>) -> Result<Value, Failure> {
        self.call_page(step, call).map(|(value, _)| value)
    }

    /// [`call`](Self::call)'s answer with the address of the next page of a paged listing
    /// (the `Link` header's `rel="next"`), made absolute on the Hub's origin.
    pub(crate) fn call_page(
        &self,
        step: &str,
        call: &Call<'_>,
    ) -> Result<(Value, Option<String>), Failure> {
        let deadline = self.deadline(call.body.len());
        self.run(step, &deadline, call.repeat, || {
            let mut request = self.request(call.method, call.url, &deadline, true)?;
            for (name, value) in &call.headers {
                request = request.set(name, value);
            }
            let sent = match &call.body {
                Body::Empty => request.call(),
                Body::Json(value) => request.send_json(value),
                Body::Text(text, content_type) => {
                    request.set("Content-Type", content_type).send_string(text)
                }
            };
            let response = self.answer(sent, &deadline, None, false)?;
            let next = response.header("Link").and_then(next_link).map(|link| {
                if link.starts_with('/') {
                    format!("{}{link}", self.endpoint.origin())
                } else {
                    link
                }
            });
            let mut text = String::new();
            response
                .into_reader()
                .read_to_string(&mut text)
                .map_err(|e| self.body_failure(e, call.url, &deadline, None))?;
            if text.trim().is_empty() {
                return Ok((Value::Null, next));
            }
            serde_json::from_str(&text)
                .map(|value| (value, next))
                .map_err(|e| Failure::Invalid(format!("the answer is not JSON ({e})")))
        })
    }

    /// `text` with every secret of this session replaced by [`REDACTED`].
    pub(crate) fn scrub(&self, text: &str) -> String {
        scrub(text, &self.secrets)
    }
}

/// The `rel="next"` address of a `Link` header (`<url>; rel="next", <url>; rel="last"`).
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        next.then(|| target.to_owned())
    })
}

/// The secrets of an address: its password (as written and percent-decoded), or a lone user
/// name, which may be a token.
fn url_secrets(url: &str) -> Vec<String> {
    let Some(rest) = url.split_once("://").map(|(_, rest)| rest) else {
        return Vec::new();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return Vec::new();
    };
    let secret = userinfo
        .split_once(':')
        .map(|(_, password)| password)
        .unwrap_or(userinfo);
    let mut secrets = vec![secret.to_owned()];
    let decoded = percent_decode(secret);
    if decoded != secret {
        secrets.push(decoded);
    }
    secrets
}

/// `text` with each of `secrets` (those long enough to search for) replaced.
fn scrub(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_owned();
    for secret in secrets {
        if secret.len() >= MIN_SCRUBBED_LEN && text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), REDACTED);
        }
    }
    text
}

/// What stays unescaped in a path segment: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A revision as one URL path segment (`/` in branch names escaped, as the Hub's client does).
pub(crate) fn encode_segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

/// `%XX` escapes decoded (a `%` without two hex digits after it kept).
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// `scheme://host[:port]` of `url`, without credentials.
pub(crate) fn origin_of(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return String::new();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{}://{host}", scheme.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked_and_never_shown_with_their_password() {
        let endpoint = Endpoint::parse("HTTPS://hub.example:8443/mirror/hf/").unwrap();
        assert_eq!(endpoint.base(), "https://hub.example:8443/mirror/hf");
        assert_eq!(endpoint.origin(), "https://hub.example:8443");
        for (bad, says) in [
            ("hub.example", "not an http://"),
            ("ftp://hub.example", "not an http://"),
            ("http://", "no host"),
            ("http://hub.example/?x=1", "query"),
            ("http://hub.example#top", "query"),
            ("http://hub example", "spaces"),
        ] {
            let err = Endpoint::parse(bad).err().unwrap();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let err = Endpoint::parse("http://me:s3cr3t-pw@hub.example/x")
            .err()
            .unwrap();
        assert!(
            err.contains("credentials") && err.contains("me:<redacted>@"),
            "{err}"
        );
        assert!(!err.contains("s3cr3t"), "{err}");
        let err = Endpoint::parse("http://hf_lonetoken@hub.example")
            .err()
            .unwrap();
        assert!(!err.contains("hf_lonetoken"), "{err}");
        assert_eq!(
            redact_url("me:s3cr3t@hub.example/x"),
            "<redacted>@hub.example/x"
        );
        assert_eq!(
            url_secrets("http://me:s3%40cr3t@hub.example"),
            ["s3%40cr3t", "s3@cr3t"]
        );
    }

    #[test]
    fn the_token_goes_to_the_hubs_host_as_the_client_parses_it() {
        let http = Http::new(&HubOptions {
            endpoint: Some("https://huggingface.co".into()),
            ..HubOptions::default()
        })
        .unwrap();
        assert!(http.is_on_hub("https://huggingface.co/api/datasets/a/b/tree/main?cursor=1"));
        assert!(http.is_on_hub("https://HuggingFace.co:443/x"));
        for elsewhere in [
            "https://evil.example\\@huggingface.co/x",
            "https://user@huggingface.co/x",
            "http://huggingface.co/x",
            "https://huggingface.co.evil.example/x",
            "https://huggingface.co:8443/x",
            "/relative",
        ] {
            assert!(!http.is_on_hub(elsewhere), "{elsewhere}");
        }
    }

    #[test]
    fn the_next_page_is_read_from_the_link_header() {
        let header = r#"<https://hub/api/datasets/a/b/tree/main?cursor=x>; rel="next", <https://hub/last>; rel="last""#;
        assert_eq!(
            next_link(header).as_deref(),
            Some("https://hub/api/datasets/a/b/tree/main?cursor=x")
        );
        assert_eq!(next_link(r#"<https://hub/last>; rel="last""#), None);
        assert_eq!(next_link("garbage"), None);
    }

    #[test]
    fn revisions_are_escaped_as_one_segment() {
        assert_eq!(encode_segment("main"), "main");
        assert_eq!(encode_segment("feature/x y"), "feature%2Fx%20y");
    }

    #[test]
    fn secrets_are_scrubbed_from_any_text() {
        let secrets = vec!["hf_planted".to_owned(), "pw".to_owned()];
        assert_eq!(
            scrub("token hf_planted refused; pw", &secrets),
            "token <redacted> refused; pw"
        );
    }

    #[test]
    fn slow_transfers_fail_after_the_grace_period() {
        let pace = Pace::new(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(20));
        assert!(pace.advance(1).is_err());
        assert!(pace.too_slow.get());
        let pace = Pace::new(Duration::from_secs(60));
        assert!(pace.advance(1).is_ok());
        let deadline = Deadline::new(Duration::from_secs(1), 2 * MIN_RATE);
        assert_eq!(deadline.limit, Duration::from_secs(3));
    }
}

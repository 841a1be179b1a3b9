//! `span-marker push`: a model directory published to a Hugging Face Hub repository.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use span_marker::hub::publish::{upload_folders, Folder, PushOptions};
use span_marker::hub::HubOptions;
use span_marker::SpanMarkerModel;

use crate::CliResult;

#[derive(Args)]
pub struct PushArgs {
    /// The model directory, as `train` or `save_pretrained` writes it (checked to load first).
    model_dir: PathBuf,
    /// The repository, `user/name` or `org/name`; created when missing.
    repo_id: String,
    /// Create the repository as private.
    #[arg(long)]
    private: bool,
    /// The branch to commit to, created from `main` when missing.
    #[arg(long)]
    revision: Option<String>,
    /// The commit's summary line.
    #[arg(long, short = 'm')]
    commit_message: Option<String>,
    /// The access token (default: HF_TOKEN, else the token file `huggingface-cli login` writes).
    #[arg(long)]
    token: Option<String>,
    /// The Hub's URL (default: HF_ENDPOINT, else https://huggingface.co).
    #[arg(long)]
    endpoint: Option<String>,
    /// How long each step may take, in seconds: a request and its repetitions, plus for an
    /// upload the time its size takes at 64 KiB/s (default: HF_HUB_DOWNLOAD_TIMEOUT, else 120).
    #[arg(long, value_name = "SECONDS", value_parser = span_marker::hub::parse_seconds)]
    timeout: Option<Duration>,
    /// Also publish the training checkpoints (`checkpoint-*` folders).
    #[arg(long)]
    with_checkpoints: bool,
}

pub fn run(args: PushArgs) -> CliResult {
    // A directory that is not a loadable model is refused before anything goes up.
    SpanMarkerModel::load_dir(&args.model_dir, tch::Device::Cpu).map_err(|e| {
        format!(
            "{} is not a SpanMarker model directory to publish: {e}",
            args.model_dir.display()
        )
    })?;
    let options = PushOptions {
        hub: HubOptions {
            revision: args.revision,
            endpoint: args.endpoint,
            token: args.token.map(Into::into),
            timeout: args.timeout,
            ..HubOptions::default()
        },
        private: args.private,
        commit_message: args.commit_message,
        ..PushOptions::default()
    };
    let with_checkpoints = args.with_checkpoints;
    let keep = |path: &str| with_checkpoints || !path.starts_with("checkpoint-");
    let folder = Folder {
        dir: &args.model_dir,
        path_in_repo: None,
        keep: &keep,
    };
    let commit = upload_folders(&[folder], &args.repo_id, &options)?;
    let mut out = span_marker_cli::stdout();
    if commit.files == 0 {
        writeln!(
            out,
            "nothing changed: {} already holds these files at {}",
            commit.repo_url, commit.commit_url
        )?;
    } else {
        writeln!(
            out,
            "published {} files ({} through LFS) to {}\ncommit {}",
            commit.files, commit.lfs_files, commit.repo_url, commit.commit_url
        )?;
    }
    Ok(())
}

//! `span-marker push`: a model directory published to a Hugging Face Hub repository.

use std::path::PathBuf;

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
    if commit.files == 0 {
        println!(
            "nothing changed: {} already holds these files at {}",
            commit.repo_url, commit.commit_url
        );
    } else {
        println!(
            "published {} files ({} through LFS) to {}\ncommit {}",
            commit.files, commit.lfs_files, commit.repo_url, commit.commit_url
        );
    }
    Ok(())
}

//! Publishing from the trainer (`push_to_hub`), as transformers' `Trainer` does: the repository
//! is created before the first step (so that a bad token or id fails before hours of
//! training), checkpoints go up as `hub_strategy` says, and the final model when training ends.
//! A failed push during training is a warning (the next one sends everything again); a failed
//! final push is the run's error, the model staying saved in `output_dir`.

use std::path::Path;

use crate::error::Result;
use crate::train::args::TrainingArguments;

#[cfg(feature = "hub")]
pub(crate) use enabled::HubPublisher;

#[cfg(feature = "hub")]
mod enabled {
    use super::*;
    use crate::error::Error;
    use crate::hub::publish::{self, Folder, PushOptions};
    use crate::hub::HubOptions;
    use crate::train::args::HubStrategy;
    use crate::train::trainer::{ARGS_FILE, CHECKPOINT_PREFIX, OPTIMIZER_FILE, TRAINER_STATE_FILE};

    /// Files of a checkpoint that only resuming needs, left out of the model pushed to the
    /// repository's root.
    const RESUME_ONLY: [&str; 3] = [OPTIMIZER_FILE, TRAINER_STATE_FILE, ARGS_FILE];

    /// Where and how the trainer publishes.
    pub(crate) struct HubPublisher {
        repo: String,
        options: PushOptions,
        strategy: HubStrategy,
    }

    impl HubPublisher {
        /// `None` without `push_to_hub`; else the repository, created now.
        pub(crate) fn new(args: &TrainingArguments) -> Result<Option<Self>> {
            if !args.push_to_hub {
                return Ok(None);
            }
            let options = PushOptions {
                hub: HubOptions {
                    endpoint: args.hub_endpoint.clone(),
                    token: args.hub_token.clone(),
                    ..HubOptions::default()
                },
                private: args.hub_private_repo,
                ..PushOptions::default()
            };
            let repo = match &args.hub_model_id {
                Some(id) => id.clone(),
                None => {
                    let name = args
                        .output_dir
                        .canonicalize()
                        .unwrap_or_else(|_| args.output_dir.clone());
                    let name = name
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "span-marker".into());
                    let id = format!("{}/{name}", publish::whoami(&options.hub)?);
                    crate::hub::check_repo_id(&id).map_err(|e| {
                        Error::Config(format!(
                            "`hub_model_id` is unset and the name made from the token's user \
                             and `output_dir`, {id:?}, is not a repository id: {e}; set \
                             `hub_model_id`"
                        ))
                    })?;
                    id
                }
            };
            publish::create_repo(&repo, &options)?;
            tracing::info!(repo, strategy = ?args.hub_strategy, "publishing to the Hub");
            Ok(Some(Self {
                repo,
                options,
                strategy: args.hub_strategy,
            }))
        }

        /// After checkpoint `dir` of `step` is saved: its model to the root, and the
        /// checkpoint whole where the strategy says. Failures are warnings.
        pub(crate) fn checkpoint_saved(&self, dir: &Path, step: usize) {
            let whole_into = match self.strategy {
                HubStrategy::End => return,
                HubStrategy::EverySave => None,
                HubStrategy::Checkpoint => Some("last-checkpoint".to_owned()),
                HubStrategy::AllCheckpoints => dir.file_name().map(|n| n.to_string_lossy().into()),
            };
            let message = format!("Training in progress, step {step}");
            let model_only = |path: &str| !RESUME_ONLY.contains(&path);
            let mut folders = vec![Folder {
                dir,
                path_in_repo: None,
                keep: &model_only,
            }];
            if let Some(folder) = &whole_into {
                folders.push(Folder {
                    dir,
                    path_in_repo: Some(folder),
                    keep: &|_| true,
                });
            }
            if let Err(error) = self.push(&folders, &message) {
                tracing::warn!(%error, step, "publishing the checkpoint failed; training goes on");
            }
        }

        /// The final model in `output_dir` (its checkpoints left out).
        pub(crate) fn training_ended(&self, output_dir: &Path) -> Result<()> {
            let model = |path: &str| !path.starts_with(CHECKPOINT_PREFIX);
            let folders = [Folder {
                dir: output_dir,
                path_in_repo: None,
                keep: &model,
            }];
            let result = self.push(&folders, "End of training");
            if result.is_err() {
                tracing::error!(
                    output_dir = %output_dir.display(),
                    "the model is saved but not published: push it with `span-marker push {} {}`",
                    output_dir.display(),
                    self.repo
                );
            }
            result
        }

        fn push(&self, folders: &[Folder<'_>], message: &str) -> Result<()> {
            let options = PushOptions {
                commit_message: Some(message.to_owned()),
                ..self.options.clone()
            };
            publish::upload_folders(folders, &self.repo, &options).map(drop)
        }
    }
}

/// Without the `hub` feature nothing is published (`push_to_hub` is refused by
/// [`TrainingArguments::validate`]): a publisher cannot exist.
#[cfg(not(feature = "hub"))]
pub(crate) enum HubPublisher {}

#[cfg(not(feature = "hub"))]
impl HubPublisher {
    pub(crate) fn new(_args: &TrainingArguments) -> Result<Option<Self>> {
        Ok(None)
    }

    pub(crate) fn checkpoint_saved(&self, _dir: &Path, _step: usize) {
        match *self {}
    }

    pub(crate) fn training_ended(&self, _output_dir: &Path) -> Result<()> {
        match *self {}
    }
}

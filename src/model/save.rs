//! Saving a model in the layout Python `span_marker` loads, publishing it to a Hub
//! repository, and its fingerprint.

use std::path::Path;

use tch::Tensor;

use super::load::WORD_EMBEDDINGS;
use super::{ModelCard, SpanMarkerModel};
use crate::checkpoint::{self, SAFETENSORS_FILE};
use crate::error::{Error, Result};

impl SpanMarkerModel {
    /// Saves `config.json`, `model.safetensors`, the tokenizer files (with the marker tokens)
    /// and a model card, in the layout Python `span_marker` loads.
    pub fn save_pretrained(&self, dir: impl AsRef<Path>) -> Result<()> {
        self.save_pretrained_with_card(dir, &ModelCard::default())
    }

    /// Publishes the model to the Hugging Face Hub repository `repo_id` (`user/name`), created
    /// when missing: saved as by [`save_pretrained`](Self::save_pretrained) (its card becomes
    /// the repository's README) and committed in one commit. The token comes from
    /// `options.hub.token`, `HF_TOKEN` or the Hugging Face CLI's token file, the Hub's address
    /// from `options.hub.endpoint` or `HF_ENDPOINT`.
    ///
    /// ```no_run
    /// use span_marker::hub::publish::PushOptions;
    /// let model = span_marker::SpanMarkerModel::bundled()?;
    /// let commit = model.push_to_hub("me/my-ner", &PushOptions::default())?;
    /// println!("published {}", commit.commit_url);
    /// # Ok::<(), span_marker::Error>(())
    /// ```
    #[cfg(feature = "hub")]
    pub fn push_to_hub(
        &self,
        repo_id: &str,
        options: &crate::hub::publish::PushOptions,
    ) -> Result<crate::hub::publish::CommitInfo> {
        let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
        self.save_pretrained(dir.path())?;
        crate::hub::publish::upload_folder(dir.path(), repo_id, options)
    }

    /// [`save_pretrained`](Self::save_pretrained) with metrics and a description for the card.
    pub fn save_pretrained_with_card(&self, dir: impl AsRef<Path>, card: &ModelCard) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut config = self.config.clone();
        let rows = self.encoder.vocab_rows() as usize;
        config.vocab_size = Some(rows);
        config.encoder.vocab_size = Some(rows);
        let json = config.to_json_string()? + "\n";
        crate::atomic::write(&dir.join("config.json"), json.as_bytes())?;

        let mut tensors: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        checkpoint::write_safetensors(&dir.join(SAFETENSORS_FILE), &tensors)?;
        // A stale pickle beside the new weights would shadow nothing (safetensors is read
        // first) but would confuse readers: remove it.
        let stale = dir.join(checkpoint::PICKLE_FILE);
        if stale.is_file() {
            std::fs::remove_file(&stale).map_err(|e| Error::io(&stale, e))?;
        }
        self.preprocessor.tokenizer().save(dir)?;
        let readme = card.render(&config, self.labels(), self.preprocessor.settings());
        crate::atomic::write(&dir.join("README.md"), readme.as_bytes())?;
        tracing::info!(dir = %dir.display(), "saved SpanMarker model");
        Ok(())
    }

    /// A digest of everything that decides this model's predictions: every weight (by name,
    /// dtype, shape and value), the tokenizer, the labels and the model settings. Equal for
    /// two copies of one model wherever they were loaded from; resumable jobs record it.
    ///
    /// ```
    /// let a = span_marker::SpanMarkerModel::bundled()?;
    /// let b = span_marker::SpanMarkerModel::from_pretrained("bundled")?;
    /// assert_eq!(a.fingerprint()?, b.fingerprint()?);
    /// # Ok::<(), span_marker::Error>(())
    /// ```
    pub fn fingerprint(&self) -> Result<String> {
        self.digest(false)
    }

    /// [`fingerprint`](Self::fingerprint) without the weights a new model draws at random:
    /// the head and the embedding rows from the first marker token on. What a training run
    /// records of the model it started from, so that a resumed run can check that it was
    /// given the same encoder, tokenizer, labels and settings, however it was seeded.
    pub fn encoder_fingerprint(&self) -> Result<String> {
        self.digest(true)
    }

    fn digest(&self, pretrained_only: bool) -> Result<String> {
        let tokenizer = self.preprocessor.tokenizer();
        let json = tokenizer
            .inner()
            .to_string(false)
            .map_err(Error::Tokenizer)?;
        let settings = serde_json::to_string(&self.config.settings).unwrap_or_default();
        let mut digest = crate::fingerprint::Fingerprint::new()
            .str(&json)
            .str(&self.labels().original().join("\n"))
            .str(&settings);
        let first_marker = i64::from(tokenizer.start_marker_id().min(tokenizer.end_marker_id()));
        let mut variables: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, tensor) in variables {
            let tensor = match name.as_str() {
                _ if pretrained_only && name.starts_with("classifier.") => continue,
                WORD_EMBEDDINGS if pretrained_only => tensor.narrow(0, 0, first_marker),
                _ => tensor,
            };
            digest = digest
                .str(&name)
                .str(&format!("{:?}{:?}", tensor.kind(), tensor.size()))
                .bytes(&checkpoint::tensor_bytes(&tensor)?);
        }
        Ok(digest.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_card_lists_labels_settings_and_metrics() {
        let model = SpanMarkerModel::bundled().unwrap();
        let card = ModelCard {
            dataset: Some("conll2003".into()),
            metrics: [("test_overall_f1".to_owned(), 0.91)].into(),
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        model.save_pretrained_with_card(dir.path(), &card).unwrap();
        let readme = std::fs::read_to_string(dir.path().join("README.md")).unwrap();
        for needle in [
            "library_name: span-marker",
            "| PER | B-PER, I-PER |",
            "| MISC | B-MISC, I-MISC |",
            "**Maximum entity length:** 6 words",
            "| test_overall_f1 | 0.9100 |",
            "- conll2003",
        ] {
            assert!(readme.contains(needle), "{needle:?} missing from\n{readme}");
        }
    }
}

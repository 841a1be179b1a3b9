//! The model card (`README.md`) written beside a saved model.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::config::SpanMarkerConfig;
use crate::encoding::EncodingSettings;
use crate::labels::Labels;

/// What the card says beyond the model's own configuration.
#[derive(Debug, Clone, Default)]
pub struct ModelCard {
    /// Free text placed under the title.
    pub description: Option<String>,
    /// Training dataset name.
    pub dataset: Option<String>,
    /// Evaluation results, e.g. `{"test_overall_f1": 0.91}`.
    pub metrics: BTreeMap<String, f64>,
}

impl ModelCard {
    /// Renders the card: Hub metadata, labels, settings and metrics when known.
    pub fn render(
        &self,
        config: &SpanMarkerConfig,
        labels: &Labels,
        settings: &EncodingSettings,
    ) -> String {
        let encoder = config
            .encoder
            .extra
            .get("_name_or_path")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown");
        let mut card = String::new();
        let _ = writeln!(card, "---");
        let _ = writeln!(card, "library_name: span-marker");
        let _ = writeln!(card, "pipeline_tag: token-classification");
        let _ = writeln!(
            card,
            "tags:\n- span-marker\n- token-classification\n- ner\n- named-entity-recognition"
        );
        if let Some(dataset) = &self.dataset {
            let _ = writeln!(card, "datasets:\n- {dataset}");
        }
        let _ = writeln!(card, "---\n");
        let _ = writeln!(card, "# SpanMarker model for named-entity recognition\n");
        if let Some(description) = &self.description {
            let _ = writeln!(card, "{description}\n");
        }
        let _ = writeln!(
            card,
            "A [SpanMarker](https://github.com/tomaarsen/SpanMarkerNER) model (checkpoint format of \
             `span_marker` {}), saved by span-marker-rs {}.\n",
            crate::config::REFERENCE_VERSION,
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(card, "## Model details\n");
        let _ = writeln!(
            card,
            "- **Encoder:** `{encoder}` ({})",
            config.encoder.model_type
        );
        let _ = writeln!(
            card,
            "- **Maximum sequence length:** {} tokens",
            settings.model_max_length
        );
        let _ = writeln!(
            card,
            "- **Marker pairs per sample:** {}",
            settings.marker_max_length
        );
        let _ = writeln!(
            card,
            "- **Maximum entity length:** {} words",
            settings.entity_max_length
        );
        if let Some(dataset) = &self.dataset {
            let _ = writeln!(card, "- **Training dataset:** {dataset}");
        }
        let _ = writeln!(card, "\n## Labels\n");
        let _ = writeln!(card, "| Label | Tags in the training data |\n|:--|:--|");
        for (reduced_id, label) in labels.reduced().iter().enumerate() {
            if reduced_id == labels.outside_id() {
                continue;
            }
            let tags: Vec<&str> = labels
                .original()
                .iter()
                .zip(labels.id2reduced())
                .filter(|(_, &r)| r == reduced_id)
                .map(|(tag, _)| tag.as_str())
                .collect();
            let _ = writeln!(card, "| {label} | {} |", tags.join(", "));
        }
        if !self.metrics.is_empty() {
            let _ = writeln!(card, "\n## Evaluation\n\n| Metric | Value |\n|:--|--:|");
            for (name, value) in &self.metrics {
                let _ = writeln!(card, "| {name} | {value:.4} |");
            }
        }
        let _ = writeln!(card, "\n## Uses\n\nIn Rust:\n");
        let _ = writeln!(
            card,
            "```rust\nlet model = span_marker::SpanMarkerModel::from_pretrained(\"path/to/this/model\")?;\n\
             let entities = model.predict_one(span_marker::SentenceInput::Text(\"Amelia Earhart flew to Paris.\"), &Default::default())?;\n```\n"
        );
        let _ = writeln!(
            card,
            "In Python (`pip install span_marker`):\n\n```python\nfrom span_marker import SpanMarkerModel\n\n\
             model = SpanMarkerModel.from_pretrained(\"path/to/this/model\")\n\
             entities = model.predict(\"Amelia Earhart flew to Paris.\")\n```"
        );
        card
    }
}

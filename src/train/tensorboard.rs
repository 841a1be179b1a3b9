//! TensorBoard event files, as the Python Trainer's `TensorBoardCallback` writes them
//! (`report_to = "tensorboard"`).
//!
//! An event file is a sequence of records: the length of the data as a little-endian `u64`, the
//! masked CRC32C of those 8 bytes, the data, and the masked CRC32C of the data. Each record's data
//! is an `Event` protocol buffer: the first holds the file version, each later one a summary (one
//! scalar, or one text) with its wall time and step. The few fields needed are encoded here by
//! hand. Every record is written through at once, so a killed run's file stays readable; a new
//! writer always makes a new file, so a resumed run never touches an earlier run's file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// `output_dir/runs/<Mon><DD>_<HH>-<MM>-<SS>_<hostname>` (local time, now): transformers'
/// `default_logdir`, the default of `logging_dir`.
pub fn default_logging_dir(output_dir: &Path) -> PathBuf {
    let now = chrono::Local::now().format("%b%d_%H-%M-%S");
    output_dir
        .join("runs")
        .join(format!("{now}_{}", hostname()))
}

/// The machine's name, as Python's `socket.gethostname()` (`localhost` when it is unknown).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// What a log record shows in TensorBoard, as transformers' `rewrite_logs` names it: keys
/// `eval_*` become `eval/*`, `test_*` become `test/*`, all others get a `train/` prefix. Numbers
/// are scalars; the record's own `step` (where it is written) and values of other kinds
/// (per-label score tables) are left out, as the callback leaves them out.
pub(crate) fn scalars_of(record: &Map<String, Value>) -> Vec<(String, f64)> {
    record
        .iter()
        .filter(|(key, _)| key.as_str() != "step")
        .filter_map(|(key, value)| {
            let tag = if let Some(name) = key.strip_prefix("eval_") {
                format!("eval/{name}")
            } else if let Some(name) = key.strip_prefix("test_") {
                format!("test/{name}")
            } else {
                format!("train/{key}")
            };
            value.as_f64().map(|v| (tag, v))
        })
        .collect()
}

/// An open event file.
pub(crate) struct EventWriter {
    file: File,
    path: PathBuf,
}

impl EventWriter {
    /// Creates `dir` when missing and a new event file in it, named as Python's
    /// `events.out.tfevents.<unix time>.<hostname>.<pid>.<n>`, never an existing one.
    pub(crate) fn create(dir: &Path) -> Result<Self> {
        static FILES: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        loop {
            let name = format!(
                "events.out.tfevents.{:010}.{}.{}.{}",
                unix_time() as u64,
                hostname(),
                std::process::id(),
                FILES.fetch_add(1, Ordering::Relaxed)
            );
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    let mut writer = Self { file, path };
                    let mut event = Vec::new();
                    bytes_field(&mut event, 3, b"brain.Event:2");
                    writer.write_event(unix_time(), &event)?;
                    return Ok(writer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
    }

    /// Writes each `(tag, value)` as a scalar at `step` (as 32-bit floats, as TensorBoard keeps them).
    pub(crate) fn scalars(&mut self, step: usize, scalars: &[(String, f64)]) -> Result<()> {
        for (tag, value) in scalars {
            let mut summary_value = Vec::new();
            bytes_field(&mut summary_value, 1, tag.as_bytes());
            key(&mut summary_value, 2, 5);
            summary_value.extend_from_slice(&(*value as f32).to_le_bytes());
            self.write_summary(step, &summary_value)?;
        }
        Ok(())
    }

    /// Writes `text` as the text summary `tag` at `step` (shown under `<tag>/text_summary`).
    pub(crate) fn text(&mut self, step: usize, tag: &str, text: &str) -> Result<()> {
        let mut dim = Vec::new();
        varint_field(&mut dim, 1, 1);
        let mut shape = Vec::new();
        bytes_field(&mut shape, 2, &dim);
        let mut tensor = Vec::new();
        varint_field(&mut tensor, 1, 7); // DT_STRING
        bytes_field(&mut tensor, 2, &shape);
        bytes_field(&mut tensor, 8, text.as_bytes());
        let mut plugin = Vec::new();
        bytes_field(&mut plugin, 1, b"text");
        let mut metadata = Vec::new();
        bytes_field(&mut metadata, 1, &plugin);
        let mut summary_value = Vec::new();
        bytes_field(
            &mut summary_value,
            1,
            format!("{tag}/text_summary").as_bytes(),
        );
        bytes_field(&mut summary_value, 8, &tensor);
        bytes_field(&mut summary_value, 9, &metadata);
        self.write_summary(step, &summary_value)
    }

    fn write_summary(&mut self, step: usize, summary_value: &[u8]) -> Result<()> {
        let mut summary = Vec::new();
        bytes_field(&mut summary, 1, summary_value);
        let mut event = Vec::new();
        if step > 0 {
            varint_field(&mut event, 2, step as u64);
        }
        bytes_field(&mut event, 5, &summary);
        self.write_event(unix_time(), &event)
    }

    /// Writes one `Event` (its wall time first, then `fields`) as one record, through to the file.
    fn write_event(&mut self, wall_time: f64, fields: &[u8]) -> Result<()> {
        let mut event = Vec::with_capacity(fields.len() + 9);
        key(&mut event, 1, 1);
        event.extend_from_slice(&wall_time.to_le_bytes());
        event.extend_from_slice(fields);
        self.file
            .write_all(&record(&event))
            .and_then(|()| self.file.flush())
            .map_err(|e| Error::io(&self.path, e))
    }
}

fn unix_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One record of an event file (TFRecord framing).
fn record(data: &[u8]) -> Vec<u8> {
    let length = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&length);
    out.extend_from_slice(&masked_crc32c(&length).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78).
fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |crc, &byte| {
        TABLE[((crc ^ byte as u32) & 0xff) as usize] ^ (crc >> 8)
    })
}

/// A protocol buffer field key: the field number and the wire type (0 varint, 1 64-bit,
/// 2 length-delimited, 5 32-bit).
fn key(out: &mut Vec<u8>, field: u64, wire_type: u64) {
    varint(out, field << 3 | wire_type);
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint_field(out: &mut Vec<u8>, field: u64, value: u64) {
    key(out, field, 0);
    varint(out, value);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// An event as `write_event` frames it, with a given wall time.
    fn framed(wall_time: f64, fields: &[u8]) -> String {
        let mut event = Vec::new();
        key(&mut event, 1, 1);
        event.extend_from_slice(&wall_time.to_le_bytes());
        event.extend_from_slice(fields);
        hex(&record(&event))
    }

    #[test]
    fn crc32c_and_record_framing() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        let framed = record(b"abc");
        assert_eq!(framed.len(), 8 + 4 + 3 + 4);
        assert_eq!(&framed[..8], &3u64.to_le_bytes());
        assert_eq!(
            &framed[8..12],
            &masked_crc32c(&3u64.to_le_bytes()).to_le_bytes()
        );
        assert_eq!(&framed[12..15], b"abc");
        assert_eq!(&framed[15..], &masked_crc32c(b"abc").to_le_bytes());
        let mut long = Vec::new();
        varint(&mut long, 300);
        assert_eq!(long, [0xac, 0x02]);
    }

    /// The records tensorboard's own `RecordWriter` writes for the same events (protocol
    /// buffers from `tensorboard.compat.proto`, summaries from `torch.utils.tensorboard`).
    #[test]
    fn records_match_tensorboards_writer() {
        let mut version = Vec::new();
        bytes_field(&mut version, 3, b"brain.Event:2");
        assert_eq!(
            framed(1.5, &version),
            "1800000000000000a37f4b2209000000000000f83f1a0d627261696e2e4576656e743a322a28646c"
        );

        let dir = tempfile::tempdir().unwrap();
        let mut writer = EventWriter::create(dir.path()).unwrap();
        writer
            .scalars(7, &[("train/loss".to_owned(), 0.5)])
            .unwrap();
        writer.text(0, "args", r#"{"a": 1}"#).unwrap();
        let written = std::fs::read(&writer.path).unwrap();
        // Each record with its wall time replaced by the reference's.
        let mut records = Vec::new();
        let mut at = 0;
        while at < written.len() {
            let length = u64::from_le_bytes(written[at..at + 8].try_into().unwrap()) as usize;
            records.push(written[at + 12 + 9..at + 12 + length].to_vec());
            at += 16 + length;
        }
        assert_eq!(records.len(), 3);
        assert_eq!(records[0], version);
        assert_eq!(
            framed(2.25, &records[1]),
            "200000000000000029eda95009000000000000024010072a130a110a0a747261696e2f6c6f7373150000003fed72860f"
        );
        assert_eq!(
            framed(3.0, &records[2]),
            "3e00000000000000d9d240e70900000000000008402a330a310a11617267732f746578745f73756d6d6172794212080712041202080142087b2261223a20317d4a080a060a0474657874b38b02c0"
        );
        // A second writer never reuses the file.
        let second = EventWriter::create(dir.path()).unwrap();
        assert_ne!(second.path, writer.path);
    }

    #[test]
    fn records_are_named_as_transformers_rewrites_them() {
        let record: Map<String, Value> = serde_json::from_str(
            r#"{"loss": 0.5, "grad_norm": 2, "eval_overall_f1": 0.25, "test_loss": 1.0,
                "eval_PER": {"f1": 0.1}, "step": 4}"#,
        )
        .unwrap();
        let mut scalars = scalars_of(&record);
        scalars.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            scalars,
            [
                ("eval/overall_f1".to_owned(), 0.25),
                ("test/loss".to_owned(), 1.0),
                ("train/grad_norm".to_owned(), 2.0),
                ("train/loss".to_owned(), 0.5),
            ]
        );
        let dir = default_logging_dir(Path::new("out"));
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert_eq!(dir.parent(), Some(Path::new("out/runs")));
        // `Dec06_19-22-05_host`
        assert_eq!(&name[5..6], "_");
        assert_eq!(&name[8..9], "-");
        assert!(name.ends_with(&format!("_{}", hostname())), "{name}");
    }
}

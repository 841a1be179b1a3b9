//! Weight files: reading `model.safetensors` (single or sharded) and `pytorch_model.bin` state
//! dicts, copying them into a model's variables with name and shape checks, and writing
//! `model.safetensors` atomically.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use tch::{nn::VarStore, Kind, Tensor};

use crate::error::{Error, Result};

mod torch_zip;

/// File names that hold weights, in the order they are looked for.
pub const SAFETENSORS_FILE: &str = "model.safetensors";
pub const SAFETENSORS_INDEX_FILE: &str = "model.safetensors.index.json";
pub const PICKLE_FILE: &str = "pytorch_model.bin";

/// Named tensors read from one or more weight files.
#[derive(Debug)]
pub struct StateDict {
    /// Where the weights came from (the file, or the index of a sharded checkpoint).
    pub path: PathBuf,
    pub tensors: HashMap<String, Tensor>,
}

/// The weights file of a model directory: `model.safetensors`, its sharded index, or
/// `pytorch_model.bin`.
pub fn find_weights(dir: &Path) -> Result<PathBuf> {
    [SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE, PICKLE_FILE]
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            Error::checkpoint(
                dir,
                format!(
                    "no weights found: expected `{SAFETENSORS_FILE}`, `{SAFETENSORS_INDEX_FILE}` or `{PICKLE_FILE}`"
                ),
            )
        })
}

impl StateDict {
    /// Reads a weights file; the format follows the file name.
    pub fn read(path: &Path) -> Result<Self> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let tensors = if name.ends_with(".index.json") {
            read_sharded(path)?
        } else if name.ends_with(".safetensors") {
            read_safetensors(path)?
        } else {
            read_pickle(path)?
        };
        Ok(Self {
            path: path.to_owned(),
            tensors,
        })
    }

    /// Reads safetensors bytes held in memory; `source` names them in errors.
    pub fn from_safetensors_bytes(bytes: &[u8], source: &Path) -> Result<Self> {
        Ok(Self {
            path: source.to_owned(),
            tensors: parse_safetensors(bytes, source)?,
        })
    }

    /// The tensor stored under `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// The shape of the tensor stored under `name`, or an error naming the file.
    pub fn shape(&self, name: &str) -> Result<Vec<i64>> {
        self.get(name)
            .map(Tensor::size)
            .ok_or_else(|| self.error(format!("missing weight `{name}`")))
    }

    /// An error about this checkpoint.
    pub fn error(&self, message: impl Into<String>) -> Error {
        Error::checkpoint(&self.path, message)
    }

    /// Copies the weights into every variable of `vs`.
    ///
    /// `source_name` maps a variable name to the candidate names in the file (first found wins),
    /// or to `None` for a variable that does not come from this file.
    /// A variable without weights, or whose shape differs, is an error naming both. With
    /// `partial_rows`, the named variables may have more or fewer rows than the file: the common
    /// rows are copied and the rest keep their initialisation (embedding resizing).
    pub fn load_into(
        &self,
        vs: &VarStore,
        source_name: impl Fn(&str) -> Option<Vec<String>>,
        partial_rows: &[&str],
    ) -> Result<()> {
        let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        let mut used = std::collections::HashSet::new();
        for (name, mut var) in variables {
            let Some(candidates) = source_name(&name) else {
                continue;
            };
            let Some((key, src)) = candidates
                .iter()
                .find_map(|key| self.get(key).map(|t| (key, t)))
            else {
                return Err(self.error(format!(
                    "missing weight `{}` (the model needs it with shape {:?})",
                    candidates.first().unwrap_or(&name),
                    var.size()
                )));
            };
            used.insert(key.clone());
            self.check_values(key, src)?;
            let (want, have) = (var.size(), src.size());
            let copy = if want == have {
                src.shallow_clone()
            } else if partial_rows.contains(&name.as_str())
                && want.len() == 2
                && have.len() == 2
                && want[1] == have[1]
            {
                let rows = want[0].min(have[0]);
                tch::no_grad(|| var.narrow(0, 0, rows).copy_(&src.narrow(0, 0, rows)));
                continue;
            } else {
                return Err(self.error(format!(
                    "weight `{key}` has shape {have:?} but the model expects {want:?}"
                )));
            };
            tch::no_grad(|| var.f_copy_(&copy.to_kind(var.kind())))?;
        }
        let unused: Vec<&String> = self
            .tensors
            .keys()
            .filter(|k| !used.contains(*k) && !is_buffer(k))
            .collect();
        if !unused.is_empty() {
            tracing::warn!(
                file = %self.path.display(),
                "{} weights in the checkpoint are not used by the model, e.g. {:?}",
                unused.len(),
                unused.iter().take(5).collect::<Vec<_>>()
            );
        }
        Ok(())
    }

    /// A weight must be floating point and finite: an integer tensor where a weight belongs,
    /// or a NaN or infinity among its values, would make every prediction empty or garbage.
    fn check_values(&self, key: &str, tensor: &Tensor) -> Result<()> {
        if !tensor.is_floating_point() {
            return Err(self.error(format!(
                "weight `{key}` has dtype {:?}; weights must be floating point",
                tensor.kind()
            )));
        }
        let finite = tch::no_grad(|| tensor.f_isfinite()?.f_all())?;
        if !bool::try_from(&finite)? {
            let bad = tch::no_grad(|| tensor.f_isfinite()?.logical_not().f_sum(Kind::Int64))?;
            return Err(self.error(format!(
                "weight `{key}` holds {} non-finite values (NaN or infinity) among {}: \
                 the checkpoint is corrupt or its training diverged",
                i64::try_from(&bad)?,
                tensor.numel()
            )));
        }
        Ok(())
    }
}

/// Non-trainable buffers some checkpoints carry (recomputed by the model, never loaded).
fn is_buffer(name: &str) -> bool {
    name.ends_with("position_ids") || name.ends_with("token_type_ids")
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and dropped before this function returns; every tensor is
    // copied out of it. A concurrent truncation of the file by another process is the caller's
    // responsibility, as with any memory-mapped reader.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    parse_safetensors(&mmap, path)
}

/// Copies the tensors out of safetensors bytes; `path` names their source in errors.
fn parse_safetensors(bytes: &[u8], path: &Path) -> Result<HashMap<String, Tensor>> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::checkpoint(path, format!("not a valid safetensors file: {e}")))?;
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let kind = kind_of(view.dtype()).ok_or_else(|| {
                Error::checkpoint(
                    path,
                    format!("tensor `{name}` has unsupported dtype {:?}", view.dtype()),
                )
            })?;
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            let tensor = Tensor::f_from_data_size(view.data(), &shape, kind)?;
            Ok((name, tensor))
        })
        .collect()
}

fn read_sharded(index_path: &Path) -> Result<HashMap<String, Tensor>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index_path).map_err(|e| Error::io(index_path, e))?;
    let index: Index = serde_json::from_str(&text).map_err(|e| Error::json(index_path, e))?;
    let dir = index_path.parent().unwrap_or(Path::new("."));
    let shards: std::collections::BTreeSet<&String> = index.weight_map.values().collect();
    let mut tensors = HashMap::new();
    for shard in shards {
        if Path::new(shard).components().count() != 1 {
            return Err(Error::checkpoint(
                index_path,
                format!("shard name {shard:?} must be a file name in the same directory"),
            ));
        }
        tensors.extend(read_safetensors(&dir.join(shard))?);
    }
    if let Some(missing) = index.weight_map.keys().find(|k| !tensors.contains_key(*k)) {
        return Err(Error::checkpoint(
            index_path,
            format!("weight `{missing}` is listed in the index but absent from its shard"),
        ));
    }
    Ok(tensors)
}

fn read_pickle(path: &Path) -> Result<HashMap<String, Tensor>> {
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let read = file.read(&mut magic).map_err(|e| Error::io(path, e))?;
    if read < 4 || &magic != b"PK\x03\x04" {
        return Err(Error::checkpoint(
            path,
            "not a PyTorch zip checkpoint (files saved with `torch.save` since PyTorch 1.6); \
             convert it to `model.safetensors`",
        ));
    }
    torch_zip::verify_records(path)?;
    let tensors = Tensor::loadz_multi(path)
        .map_err(|e| Error::checkpoint(path, format!("could not read the state dict: {e}")))?;
    Ok(tensors.into_iter().collect())
}

/// Writes `tensors` to `path` in safetensors format with the `{"format": "pt"}` metadata that
/// `transformers` requires. The file is written beside its destination and renamed into place,
/// so an interrupted save never leaves a truncated file.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    struct Data {
        dtype: Dtype,
        shape: Vec<usize>,
        bytes: Vec<u8>,
    }
    impl safetensors::View for &Data {
        fn dtype(&self) -> Dtype {
            self.dtype
        }
        fn shape(&self) -> &[usize] {
            &self.shape
        }
        fn data(&self) -> std::borrow::Cow<'_, [u8]> {
            (&self.bytes).into()
        }
        fn data_len(&self) -> usize {
            self.bytes.len()
        }
    }
    let mut data = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let dtype = dtype_of(tensor.kind()).ok_or_else(|| {
            Error::checkpoint(
                path,
                format!("cannot store `{name}` of kind {:?}", tensor.kind()),
            )
        })?;
        let bytes = tensor_bytes(tensor)?;
        let shape = tensor.size().iter().map(|&d| d as usize).collect();
        data.push((
            name.clone(),
            Data {
                dtype,
                shape,
                bytes,
            },
        ));
    }
    let metadata = Some(HashMap::from([("format".to_owned(), "pt".to_owned())]));
    let views = data.iter().map(|(name, d)| (name.as_str(), d));
    let bytes = safetensors::serialize(views, metadata)
        .map_err(|e| Error::checkpoint(path, format!("could not serialise: {e}")))?;
    crate::atomic::write(path, &bytes)
}

/// The values of `tensor` as bytes, in row-major order and its own dtype (copied to the host).
pub fn tensor_bytes(tensor: &Tensor) -> Result<Vec<u8>> {
    let tensor = tensor.to_device(tch::Device::Cpu).contiguous();
    let numel = tensor.numel();
    let mut bytes = vec![0u8; numel * tensor.kind().elt_size_in_bytes()];
    tensor.f_copy_data_u8(&mut bytes, numel)?;
    Ok(bytes)
}

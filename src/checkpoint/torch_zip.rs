//! Checks of a `torch.save` zip checkpoint (`pytorch_model.bin`) before libtorch reads it:
//! every storage record the pickle refers to must exist and hold exactly the bytes its
//! element type and count need. libtorch itself accepts a record cut short and leaves the
//! missing tail of the tensor undefined.
//!
//! The pickle is walked, never executed: only the opcodes `torch.save` writes (protocols 2 to
//! 5) are understood, and only the persistent ids of storages are kept.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// A value on the walker's stack: only what a storage's persistent id is made of is kept.
#[derive(Debug, Clone)]
enum Value {
    Mark,
    Str(String),
    Int(i64),
    Global(String),
    Tuple(Vec<Value>),
    Other,
}

/// A storage the pickle refers to: its record key and the bytes it needs.
#[derive(Debug, PartialEq)]
struct Storage {
    key: String,
    bytes: u64,
}

/// Checks that every storage record of the zip checkpoint at `path` is present and complete.
pub(super) fn verify_records(path: &Path) -> Result<()> {
    let bad = |message: String| Error::checkpoint(path, message);
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| bad(format!("not a readable zip archive: {e}")))?;
    let pickle_name = archive
        .file_names()
        .map(str::to_owned)
        .find(|name| name.ends_with("/data.pkl") || name == "data.pkl")
        .ok_or_else(|| bad("no `data.pkl` in the archive".into()))?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_owned();
    let mut pickle = Vec::new();
    archive
        .by_name(&pickle_name)
        .and_then(|mut entry| Ok(entry.read_to_end(&mut pickle)?))
        .map_err(|e| bad(format!("cannot read `{pickle_name}`: {e}")))?;
    let storages = storages(&pickle).map_err(|e| bad(format!("`{pickle_name}`: {e}")))?;
    let sizes: HashMap<String, u64> = (0..archive.len())
        .filter_map(|i| {
            archive
                .by_index_raw(i)
                .ok()
                .map(|e| (e.name().to_owned(), e.size()))
        })
        .collect();
    for storage in storages {
        let record = format!("{prefix}data/{}", storage.key);
        match sizes.get(&record) {
            None => return Err(bad(format!("record `{record}` is missing"))),
            Some(&size) if size != storage.bytes => {
                return Err(bad(format!(
                    "record `{record}` holds {size} bytes but its tensor storage needs {}: \
                     the file is truncated or corrupt",
                    storage.bytes
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Bytes per element of a `torch.*Storage` class.
fn element_size(class: &str) -> Option<u64> {
    Some(match class.strip_prefix("torch ")? {
        "DoubleStorage" | "LongStorage" | "ComplexFloatStorage" => 8,
        "FloatStorage" | "IntStorage" => 4,
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
        "ByteStorage" | "CharStorage" | "BoolStorage" | "QInt8Storage" | "QUInt8Storage" => 1,
        "ComplexDoubleStorage" => 16,
        _ => return None,
    })
}

/// The storages a `torch.save` pickle refers to, in order.
fn storages(pickle: &[u8]) -> std::result::Result<Vec<Storage>, String> {
    let mut walker = Walker {
        bytes: pickle,
        at: 0,
    };
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u64, Value> = HashMap::new();
    let mut found = Vec::new();
    let pop_to_mark = |stack: &mut Vec<Value>| -> std::result::Result<Vec<Value>, String> {
        let mark = stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or("MARK missing")?;
        let items = stack.split_off(mark + 1);
        stack.pop();
        Ok(items)
    };
    loop {
        let at = walker.at;
        let op = walker.u8()?;
        match op {
            b'\x80' => drop(walker.take(1)?),                          // PROTO
            b'\x95' => drop(walker.take(8)?),                          // FRAME
            b'.' => break,                                             // STOP
            b'(' => stack.push(Value::Mark),                           // MARK
            b'0' => drop(stack.pop().ok_or("POP on an empty stack")?), // POP
            b'1' => drop(pop_to_mark(&mut stack)?),                    // POP_MARK
            b'}' | b']' | b'N' | b'\x88' | b'\x89' | b'\x8f' => stack.push(Value::Other),
            b')' => stack.push(Value::Tuple(Vec::new())), // EMPTY_TUPLE
            b'K' => stack.push(Value::Int(walker.uint(1)? as i64)), // BININT1
            b'M' => stack.push(Value::Int(walker.uint(2)? as i64)), // BININT2
            b'J' => stack.push(Value::Int(walker.uint(4)? as u32 as i32 as i64)), // BININT
            b'\x8a' => {
                // LONG1: a little-endian two's-complement integer of n bytes.
                let n = walker.uint(1)? as usize;
                let bytes = walker.take(n)?;
                let value = if n <= 8 {
                    let mut buf = [if bytes.last().is_some_and(|b| b & 0x80 != 0) {
                        0xff
                    } else {
                        0
                    }; 8];
                    buf[..n].copy_from_slice(bytes);
                    Value::Int(i64::from_le_bytes(buf))
                } else {
                    Value::Other
                };
                stack.push(value);
            }
            b'G' => {
                walker.take(8)?; // BINFLOAT
                stack.push(Value::Other);
            }
            // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8: text after a 4-, 1- or 8-byte length.
            b'X' => stack.push(Value::Str(walker.text(4)?)),
            b'\x8c' => stack.push(Value::Str(walker.text(1)?)),
            b'\x8d' => stack.push(Value::Str(walker.text(8)?)),
            // SHORT_BINBYTES, BINBYTES, BINBYTES8: bytes after a 1-, 4- or 8-byte length.
            b'C' | b'B' | b'\x8e' => {
                walker.prefixed(match op {
                    b'C' => 1,
                    b'B' => 4,
                    _ => 8,
                })?;
                stack.push(Value::Other);
            }
            b'c' => {
                // GLOBAL: "module\nname\n"
                let module = walker.line()?;
                let name = walker.line()?;
                stack.push(Value::Global(format!("{module} {name}")));
            }
            b'\x93' => {
                // STACK_GLOBAL
                let name = stack.pop();
                let module = stack.pop();
                stack.push(match (module, name) {
                    (Some(Value::Str(m)), Some(Value::Str(n))) => Value::Global(format!("{m} {n}")),
                    _ => Value::Other,
                });
            }
            b'q' | b'r' | b'\x94' => {
                // BINPUT, LONG_BINPUT, MEMOIZE
                let index = match op {
                    b'q' => walker.uint(1)?,
                    b'r' => walker.uint(4)?,
                    _ => memo.len() as u64,
                };
                let top = stack.last().cloned().ok_or("memoizing an empty stack")?;
                memo.insert(index, top);
            }
            b'h' | b'j' => {
                // BINGET, LONG_BINGET
                let index = walker.uint(if op == b'h' { 1 } else { 4 })?;
                stack.push(
                    memo.get(&index)
                        .cloned()
                        .ok_or(format!("memo {index} unset"))?,
                );
            }
            b't' => {
                let items = pop_to_mark(&mut stack)?;
                stack.push(Value::Tuple(items));
            }
            b'\x85' | b'\x86' | b'\x87' => {
                // TUPLE1..3
                let n = usize::from(op - b'\x84');
                if stack.len() < n {
                    return Err(format!("TUPLE{n} at byte {at} on a short stack"));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b'Q' => {
                // BINPERSID: ('storage', torch.<T>Storage, key, location, numel)
                let Some(Value::Tuple(id)) = stack.pop() else {
                    return Err(format!("persistent id at byte {at} is not a tuple"));
                };
                match id.as_slice() {
                    [Value::Str(kind), Value::Global(class), Value::Str(key), _, Value::Int(numel)]
                        if kind == "storage" =>
                    {
                        let size = element_size(class)
                            .ok_or(format!("storage class `{class}` is not supported"))?;
                        let numel = u64::try_from(*numel)
                            .map_err(|_| format!("storage `{key}` has {numel} elements"))?;
                        found.push(Storage {
                            key: key.clone(),
                            bytes: numel.saturating_mul(size),
                        });
                    }
                    _ => return Err(format!("persistent id at byte {at} is not a storage")),
                }
                stack.push(Value::Other);
            }
            b'R' | b'\x81' | b'b' => {
                // REDUCE, NEWOBJ, BUILD: two operands in, one result.
                stack.pop();
                stack.pop();
                stack.push(Value::Other);
            }
            b's' => {
                // SETITEM
                stack.pop();
                stack.pop();
            }
            b'a' => drop(stack.pop()),                     // APPEND
            b'u' | b'e' => drop(pop_to_mark(&mut stack)?), // SETITEMS, APPENDS
            b'l' | b'd' => {
                // LIST, DICT from the items above the mark
                pop_to_mark(&mut stack)?;
                stack.push(Value::Other);
            }
            other => {
                return Err(format!(
                    "unsupported pickle opcode 0x{other:02x} at byte {at}"
                ))
            }
        }
    }
    Ok(found)
}

/// A cursor over the pickle's bytes.
struct Walker<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Walker<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| format!("ends inside an opcode at byte {}", self.at))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    /// A little-endian unsigned integer of `n` (at most 8) bytes.
    fn uint(&mut self, n: usize) -> std::result::Result<u64, String> {
        let mut buf = [0u8; 8];
        buf[..n].copy_from_slice(self.take(n)?);
        Ok(u64::from_le_bytes(buf))
    }

    /// A payload after its little-endian length of `width` bytes.
    fn prefixed(&mut self, width: usize) -> std::result::Result<&'a [u8], String> {
        let len = usize::try_from(self.uint(width)?).map_err(|_| "length out of range")?;
        self.take(len)
    }

    /// Text after its little-endian length of `width` bytes.
    fn text(&mut self, width: usize) -> std::result::Result<String, String> {
        Ok(String::from_utf8_lossy(self.prefixed(width)?).into_owned())
    }

    fn line(&mut self) -> std::result::Result<String, String> {
        let rest = &self.bytes[self.at..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("unterminated line at byte {}", self.at))?;
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.at += end + 1;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/trained/tiny-roberta/pytorch_model.bin")
    }

    /// The fixture's `data.pkl`.
    fn fixture_pickle() -> Vec<u8> {
        let file = std::fs::File::open(fixture()).unwrap();
        let mut archive = zip::ZipArchive::new(file).unwrap();
        let mut pickle = Vec::new();
        archive
            .by_name("pytorch_model/data.pkl")
            .unwrap()
            .read_to_end(&mut pickle)
            .unwrap();
        pickle
    }

    #[test]
    fn a_python_checkpoint_lists_every_storage_with_its_size() {
        let found = storages(&fixture_pickle()).unwrap();
        assert_eq!(found.len(), 41);
        // The word embeddings: 4008 x 32 float32.
        assert_eq!(
            found[0],
            Storage {
                key: "0".into(),
                bytes: 4008 * 32 * 4
            }
        );
        verify_records(&fixture()).unwrap();
    }

    #[test]
    fn a_walk_over_cut_or_flipped_pickles_never_panics() {
        let pickle = fixture_pickle();
        for cut in 0..pickle.len() {
            let _ = storages(&pickle[..cut]);
        }
        for at in 0..pickle.len() {
            let mut flipped = pickle.clone();
            flipped[at] ^= 0x5a;
            let _ = storages(&flipped);
        }
    }
}

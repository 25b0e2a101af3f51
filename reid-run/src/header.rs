//! The JSON header of a safetensors file, read without its tensors (the report, the model
//! crate's header-only readers): what a checkpoint says about itself costs a few kilobytes.

use std::io::Read;
use std::path::Path;

/// A header read: the JSON object, its length, and the file's length (the tensors' data are
/// the `file_len − 8 − header_len` bytes after it).
pub struct Header {
    pub json: serde_json::Map<String, serde_json::Value>,
    pub header_len: u64,
    pub file_len: u64,
}

impl Header {
    /// A `__metadata__` entry (safetensors metadata values are strings).
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.json.get("__metadata__")?.get(key)?.as_str()
    }
}

/// The header of the safetensors file at `path`. Nothing is allocated for a header longer than
/// safetensors' own cap (100 MB) or than the file can hold. The error says what is wrong with
/// the file (the caller names it).
pub fn read_safetensors_header(path: &Path) -> Result<Header, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let file_len = f.metadata().map_err(|e| format!("cannot read: {e}"))?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| "not a valid safetensors file: shorter than its header length".to_string())?;
    let header_len = u64::from_le_bytes(len);
    if header_len > 100_000_000 || header_len > file_len.saturating_sub(8) {
        return Err(format!(
            "not a valid safetensors file (truncated?): a header of {header_len} bytes in a \
             file of {file_len}"
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header)
        .map_err(|_| "not a valid safetensors file (truncated header)".to_string())?;
    let json: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| format!("unreadable safetensors header: {e}"))?;
    let serde_json::Value::Object(json) = json else {
        return Err("unreadable safetensors header: not a JSON object".into());
    };
    Ok(Header {
        json,
        header_len,
        file_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_the_file_cannot_hold_is_refused_before_allocating() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.safetensors");
        let mut bytes = (1u64 << 40).to_le_bytes().to_vec();
        bytes.extend(b"{}");
        std::fs::write(&p, &bytes).unwrap();
        let e = read_safetensors_header(&p).err().unwrap();
        assert!(
            e.contains("a header of 1099511627776 bytes in a file of 10"),
            "{e}"
        );
        let body = br#"{"__metadata__":{"reid.arch":"{}"}}"#;
        let mut bytes = (body.len() as u64).to_le_bytes().to_vec();
        bytes.extend(body);
        std::fs::write(&p, &bytes).unwrap();
        let h = read_safetensors_header(&p).unwrap();
        assert_eq!(h.metadata("reid.arch"), Some("{}"));
        assert_eq!(h.file_len - 8 - h.header_len, 0);
        std::fs::write(&p, b"abc").unwrap();
        assert!(read_safetensors_header(&p)
            .err()
            .unwrap()
            .contains("shorter than its header length"));
    }
}

//! Key rules. Keys never become file paths (blobs live in volumes by id), so
//! the rules are about what can travel safely in URLs, JSON and logs.

/// Longest key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// Checks a decoded key: 1..=1024 bytes of UTF-8, no NUL or other control
/// characters. Returns why not.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("key is empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "key is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        ));
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return Err(format!("key contains control character U+{:04X}", c as u32));
    }
    Ok(())
}

/// Percent-decodes a URL path segment into bytes.
pub(crate) fn percent_decode(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or("truncated %-escape")?;
            let hex = std::str::from_utf8(hex).map_err(|_| "bad %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad %-escape `%{hex}`"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(validate_key("cats/2024/tabby.jpg").is_ok());
        assert!(validate_key("ünïcode/ключ/鍵").is_ok());
        assert!(validate_key(&"k".repeat(1024)).is_ok());
        assert!(validate_key(&"k".repeat(1025)).is_err());
        assert!(validate_key("").is_err());
        assert!(validate_key("a\0b").is_err());
        assert!(validate_key("a\nb").is_err());
        assert!(validate_key("a\u{7f}b").is_err());
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%20b%2Fc").expect("ok"), b"a b/c");
        assert!(percent_decode("a%2").is_err());
        assert!(percent_decode("a%zz").is_err());
        assert_eq!(percent_decode("%FF").expect("ok"), vec![0xFF]);
    }
}

//! Base64 (RFC 4648), the one in the workspace: the standard alphabet with padding (§4: HTTP
//! Basic auth, WebSocket keys) and the url-safe alphabet without padding (§5: JWS/JWT parts,
//! JWKS keys, opaque credentials).
//!
//! Decoding is strict, because decoded bytes are compared, hashed and signed: exactly one
//! string decodes to a given value. Padding must be exactly right (and absent in the url-safe
//! form), every character must be in the alphabet (no whitespace, no mixing of alphabets) and
//! the unused low bits of the last character must be zero (§3.5, "canonical encoding").

#![forbid(unsafe_code)]

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Why a string is not canonical base64 of the expected form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// A length no encoding produces.
    Length,
    /// A character outside the alphabet (padding in the middle included).
    Character,
    /// Padding missing, excessive or, in the url-safe form, present at all.
    Padding,
    /// The last character carries non-zero bits that encode nothing.
    TrailingBits,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DecodeError::Length => "base64: invalid length",
            DecodeError::Character => "base64: invalid character",
            DecodeError::Padding => "base64: invalid padding",
            DecodeError::TrailingBits => "base64: non-canonical trailing bits",
        })
    }
}

impl std::error::Error for DecodeError {}

/// Standard base64 (RFC 4648 §4), padded.
pub fn encode(data: &[u8]) -> String {
    encode_with(data, STANDARD, true)
}

/// Url-safe base64 (RFC 4648 §5), unpadded, as JWS (RFC 7515 §2) uses it.
pub fn encode_url(data: &[u8]) -> String {
    encode_with(data, URL_SAFE, false)
}

/// Decodes standard, padded base64 (RFC 4648 §4), strictly.
pub fn decode(s: &str) -> Result<Vec<u8>, DecodeError> {
    let b = s.as_bytes();
    if b.len() % 4 != 0 {
        return Err(DecodeError::Length);
    }
    let pad = b.iter().rev().take_while(|&&c| c == b'=').count();
    if pad > 2 {
        return Err(DecodeError::Padding);
    }
    // A length that is a multiple of 4 less at most two '=' always leaves a valid tail.
    decode_with(&b[..b.len() - pad], false)
}

/// Decodes url-safe, unpadded base64 (RFC 4648 §5), strictly: padding is refused.
pub fn decode_url(s: &str) -> Result<Vec<u8>, DecodeError> {
    if s.ends_with('=') {
        return Err(DecodeError::Padding);
    }
    decode_with(s.as_bytes(), true)
}

fn encode_with(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(alphabet[(n >> (18 - 6 * i) & 63) as usize]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

fn value(c: u8, url: bool) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' if !url => 62,
        b'/' if !url => 63,
        b'-' if url => 62,
        b'_' if url => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes unpadded characters: groups of four, then a tail of 0, 2 or 3.
fn decode_with(b: &[u8], url: bool) -> Result<Vec<u8>, DecodeError> {
    if b.len() % 4 == 1 {
        return Err(DecodeError::Length);
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3 + 2);
    for group in b.chunks(4) {
        let mut n = 0u32;
        for &c in group {
            n = n << 6 | value(c, url).ok_or(DecodeError::Character)?;
        }
        // Left-align a short tail as if it were a full group.
        n <<= 6 * (4 - group.len());
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let used = group.len() - 1;
        if bytes[used..].iter().any(|&x| x != 0) {
            return Err(DecodeError::TrailingBits);
        }
        out.extend_from_slice(&bytes[..used]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4648 §10.
    const VECTORS: [(&str, &str); 7] = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];

    #[test]
    fn rfc4648_vectors_both_forms() {
        for (plain, coded) in VECTORS {
            assert_eq!(encode(plain.as_bytes()), coded);
            assert_eq!(decode(coded).unwrap(), plain.as_bytes());
            let url = coded.trim_end_matches('=');
            assert_eq!(encode_url(plain.as_bytes()), url);
            assert_eq!(decode_url(url).unwrap(), plain.as_bytes());
        }
        assert_eq!(encode(b"admin:password"), "YWRtaW46cGFzc3dvcmQ=");
    }

    #[test]
    fn alphabets_differ_in_62_and_63() {
        let data = [0xfb, 0xff, 0xbf];
        assert_eq!(encode(&data), "+/+/");
        assert_eq!(encode_url(&data), "-_-_");
        assert_eq!(decode("+/+/").unwrap(), data);
        assert_eq!(decode_url("-_-_").unwrap(), data);
        assert_eq!(decode("-_-_"), Err(DecodeError::Character));
        assert_eq!(decode_url("+/+/"), Err(DecodeError::Character));
    }

    #[test]
    fn every_length_round_trips() {
        let data: Vec<u8> = (0..=255).collect();
        for n in 0..data.len() {
            assert_eq!(decode(&encode(&data[..n])).unwrap(), &data[..n]);
            assert_eq!(decode_url(&encode_url(&data[..n])).unwrap(), &data[..n]);
        }
    }

    #[test]
    fn strict_decoding() {
        use DecodeError::*;
        for (s, e) in [
            ("Zg", Length),          // padding missing
            ("Zg=", Length),         // padding short
            ("Zg===", Length),       // not a multiple of 4
            ("Z===", Padding),       // three '='
            ("====", Padding),       // nothing but padding
            ("Zg==Zm8=", Character), // padding in the middle
            ("Zh==", TrailingBits),  // 'h' has low bits set: non-canonical "f"
            ("Zm9=", TrailingBits),
            ("Zm 9", Character), // no whitespace anywhere
            ("Zm9\n", Character),
            ("Zm9v\n", Length),
        ] {
            assert_eq!(decode(s), Err(e), "{s:?}");
        }
        for (s, e) in [
            ("Zg==", Padding),
            ("Zm8=", Padding),
            ("Z", Length),
            ("Zm9vY", Length),
            ("Zh", TrailingBits),
            ("Zm9", TrailingBits),
            ("Zm9.", Character),
            ("Zm9v!A", Character),
            ("Zm\u{e9}", Character), // two UTF-8 bytes, neither in the alphabet
        ] {
            assert_eq!(decode_url(s), Err(e), "{s:?}");
        }
    }
}

//! Access tokens: a JWT (RFC 7519) in JWS compact form (RFC 7515), signed with Ed25519
//! (`alg` `EdDSA`, RFC 8037) and nothing else.
//!
//! [`verify`] works outside in and refuses as early as it can: size, shape and the header
//! before any cryptography; the signature before the claims are read; the times last. Only
//! the header's `alg`, `kid` and `crit` are read, and `alg` must be exactly `EdDSA`: the key
//! comes from the key set, never from the token, so a token cannot pick its own algorithm
//! (`none`, or HMAC keyed with the public key).

use crate::key::{KeySet, SigningKey};
use conduit_base64::{decode_url, encode_url};
use ring::signature::{UnparsedPublicKey, ED25519};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize};

/// The longest token [`verify`] reads; ours are about 400 bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Clock skew tolerated between the manager that signs and a gateway that verifies: a token
/// is expired once `now >= exp + LEEWAY_SECS`, not yet valid while `iat > now + LEEWAY_SECS`.
pub const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Operator,
    Viewer,
}

impl Role {
    /// Parses the wire and stored form (`admin`, `operator`, `viewer`).
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "operator" => Some(Role::Operator),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }
}

/// An access token's claims. Every one is required (`cus` as `null` for platform admins, so
/// a claim left out is never read as "no customer"); claims of other names are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The customer the user belongs to; `None` for platform admins.
    #[serde(deserialize_with = "required")]
    pub cus: Option<String>,
    pub role: Role,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Expires at, unix seconds.
    pub exp: u64,
    /// The token's id.
    pub jti: String,
    /// The login session (the refresh-token family) the token was issued under.
    pub sid: String,
}

/// With `deserialize_with`, serde no longer reads a missing `Option` as `None`.
fn required<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::deserialize(d)
}

/// Why a token is refused. [`as_str`](Self::as_str) is a bounded metric label; messages never
/// quote the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Too long, not three base64url parts, a header or claims that are not the expected JSON
    /// object, or a `crit` header (no extensions are understood).
    Malformed,
    /// An `alg` other than exactly `EdDSA`.
    UnsupportedAlgorithm,
    /// No `kid`, or one the key set does not hold.
    UnknownKey,
    BadSignature,
    Expired,
    /// Issued in the future.
    NotYetValid,
    /// Never returned by [`verify`]: for callers whose revocation check (of `jti` or `sid`)
    /// refuses a token that verified.
    Revoked,
}

impl TokenError {
    pub const ALL: [TokenError; 7] = [
        TokenError::Malformed,
        TokenError::UnsupportedAlgorithm,
        TokenError::UnknownKey,
        TokenError::BadSignature,
        TokenError::Expired,
        TokenError::NotYetValid,
        TokenError::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::UnsupportedAlgorithm => "unsupported_algorithm",
            TokenError::UnknownKey => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::Revoked => "revoked",
        }
    }
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenError::Malformed => "malformed token",
            TokenError::UnsupportedAlgorithm => "token algorithm is not EdDSA",
            TokenError::UnknownKey => "token signed with an unknown key",
            TokenError::BadSignature => "bad token signature",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token issued in the future",
            TokenError::Revoked => "token revoked",
        })
    }
}

impl std::error::Error for TokenError {}

/// The header fields read. serde refuses a field given twice, so a header cannot show one
/// `alg` to us and another to a parser that keeps the first.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

/// Signs `claims` with `key`. Claims are the caller's own values, kept short: a token over
/// [`MAX_TOKEN_LEN`] would not verify.
pub fn sign(key: &SigningKey, claims: &Claims) -> String {
    // Written by hand so the header is exactly this; a kid needs no escaping (see `key`).
    let header = format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{}"}}"#, key.kid());
    // Strings, integers and a unit enum: serializing cannot fail.
    let payload = serde_json::to_vec(claims).expect("claims serialize");
    let mut token = encode_url(header.as_bytes());
    token.push('.');
    token.push_str(&encode_url(&payload));
    let signature = key.sign(token.as_bytes());
    token.push('.');
    token.push_str(&encode_url(signature.as_ref()));
    token
}

/// Verifies `token` against `keys` at `now_unix` and returns its claims.
pub fn verify(keys: &KeySet, token: &str, now_unix: u64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let part = |s| decode_url(s).map_err(|_| TokenError::Malformed);
    let (header, payload, signature) = (part(h)?, part(p)?, part(s)?);

    let header: Header = json_object(&header)?;
    if header.alg != "EdDSA" {
        return Err(TokenError::UnsupportedAlgorithm);
    }
    if header.crit {
        return Err(TokenError::Malformed);
    }
    let key = header
        .kid
        .and_then(|kid| keys.get(&kid))
        .ok_or(TokenError::UnknownKey)?;

    let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
    UnparsedPublicKey::new(&ED25519, key.x())
        .verify(signed, &signature)
        .map_err(|_| TokenError::BadSignature)?;

    let claims: Claims = json_object(&payload)?;
    check_time(&claims, now_unix)?;
    Ok(claims)
}

/// Whether claims that verified are valid at `now_unix` (expiry and issue time, with
/// [`LEEWAY_SECS`] either way).
pub(crate) fn check_time(claims: &Claims, now_unix: u64) -> Result<(), TokenError> {
    if now_unix >= claims.exp.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::Expired);
    }
    if claims.iat > now_unix.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

/// JOSE headers and claim sets are JSON objects; a derived struct alone would also take an
/// array of its fields in order.
fn json_object<T: DeserializeOwned>(json: &[u8]) -> Result<T, TokenError> {
    if json.first() != Some(&b'{') {
        return Err(TokenError::Malformed);
    }
    serde_json::from_slice(json).map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::PublicKey;
    use TokenError::*;

    const NOW: u64 = 1_700_000_000;

    fn claims() -> Claims {
        Claims {
            sub: "u-1".into(),
            cus: Some("c-9".into()),
            role: Role::Operator,
            iat: NOW,
            exp: NOW + 300,
            jti: "t-1".into(),
            sid: "s-1".into(),
        }
    }

    fn setup() -> (SigningKey, KeySet) {
        let key = SigningKey::generate("k1").unwrap();
        let mut keys = KeySet::new();
        keys.insert(key.public());
        (key, keys)
    }

    /// A token from raw parts, for the ones `sign` would never make.
    fn raw(header: &str, payload: &str, sig: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let input = format!(
            "{}.{}",
            encode_url(header.as_bytes()),
            encode_url(payload.as_bytes())
        );
        format!("{input}.{}", encode_url(&sig(input.as_bytes())))
    }

    fn ed(key: &SigningKey) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
        |input| key.sign(input).as_ref().to_vec()
    }

    const HEADER: &str = r#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#;

    #[test]
    fn round_trip() {
        let (key, keys) = setup();
        let token = sign(&key, &claims());
        let header = decode_url(token.split('.').next().unwrap()).unwrap();
        assert_eq!(header, HEADER.as_bytes());
        assert_eq!(verify(&keys, &token, NOW).unwrap(), claims());

        let admin = Claims {
            cus: None,
            role: Role::Admin,
            ..claims()
        };
        let token = sign(&key, &admin);
        assert!(
            String::from_utf8(decode_url(token.split('.').nth(1).unwrap()).unwrap())
                .unwrap()
                .contains(r#""cus":null"#)
        );
        assert_eq!(verify(&keys, &token, NOW).unwrap(), admin);
    }

    #[test]
    fn algorithms_other_than_eddsa_are_refused() {
        let (key, keys) = setup();
        let payload = serde_json::to_string(&claims()).unwrap();
        let none = raw(
            r#"{"alg":"none","typ":"JWT","kid":"k1"}"#,
            &payload,
            |_| vec![],
        );
        assert!(none.ends_with('.'));
        assert_eq!(verify(&keys, &none, NOW), Err(UnsupportedAlgorithm));

        // The classic confusion: HMAC keyed with the public key, which a verifier that lets
        // the token choose the algorithm would accept.
        let hmac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.public().x());
        let hs256 = raw(
            r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#,
            &payload,
            |input| ring::hmac::sign(&hmac, input).as_ref().to_vec(),
        );
        assert_eq!(verify(&keys, &hs256, NOW), Err(UnsupportedAlgorithm));

        for alg in [
            "RS256", "ES256", "eddsa", "EDDSA", "EdDSA ", "Ed25519", "", "None",
        ] {
            let header = format!(r#"{{"alg":"{alg}","kid":"k1"}}"#);
            let token = raw(&header, &payload, ed(&key));
            assert_eq!(
                verify(&keys, &token, NOW),
                Err(UnsupportedAlgorithm),
                "{alg}"
            );
        }
    }

    #[test]
    fn headers_that_are_not_ours() {
        let (key, keys) = setup();
        let payload = serde_json::to_string(&claims()).unwrap();
        for (header, e) in [
            (r#"["EdDSA","k1"]"#, Malformed),
            (r#""EdDSA""#, Malformed),
            ("", Malformed),
            (r#"{"kid":"k1"}"#, Malformed),
            (r#"{"alg":"EdDSA","kid":"k1","crit":["exp"]}"#, Malformed),
            (r#"{"alg":"EdDSA","kid":"k1","crit":null}"#, Malformed),
            (r#"{"alg":"none","alg":"EdDSA","kid":"k1"}"#, Malformed),
            (r#"{"alg":"EdDSA","kid":7}"#, Malformed),
            (r#"{"alg":"EdDSA"}"#, UnknownKey),
            (r#"{"alg":"EdDSA","kid":"k2"}"#, UnknownKey),
        ] {
            let token = raw(header, &payload, ed(&key));
            assert_eq!(verify(&keys, &token, NOW), Err(e), "{header}");
        }
        // Header fields we do not read are no reason to refuse.
        let token = raw(
            r#"{"alg":"EdDSA","kid":"k1","x5u":"x"}"#,
            &payload,
            ed(&key),
        );
        assert_eq!(verify(&keys, &token, NOW), Ok(claims()));
    }

    #[test]
    fn signatures_that_do_not_match() {
        let (_, keys) = setup();
        let impostor = SigningKey::generate("k1").unwrap();
        assert_eq!(
            verify(&keys, &sign(&impostor, &claims()), NOW),
            Err(BadSignature)
        );

        let (key, keys) = setup();
        let token = sign(&key, &claims());
        let [h, _, s] = <[&str; 3]>::try_from(token.split('.').collect::<Vec<_>>()).unwrap();
        let admin = Claims {
            role: Role::Admin,
            cus: None,
            ..claims()
        };
        let p = encode_url(&serde_json::to_vec(&admin).unwrap());
        assert_eq!(
            verify(&keys, &format!("{h}.{p}.{s}"), NOW),
            Err(BadSignature)
        );
        assert_eq!(verify(&keys, &format!("{h}.{p}."), NOW), Err(BadSignature));
    }

    #[test]
    fn times() {
        let (key, keys) = setup();
        let token = sign(&key, &claims());
        let exp = claims().exp;
        assert!(verify(&keys, &token, exp + LEEWAY_SECS - 1).is_ok());
        assert_eq!(verify(&keys, &token, exp + LEEWAY_SECS), Err(Expired));
        assert_eq!(verify(&keys, &token, u64::MAX), Err(Expired));
        assert!(verify(&keys, &token, NOW - LEEWAY_SECS).is_ok());
        assert_eq!(
            verify(&keys, &token, NOW - LEEWAY_SECS - 1),
            Err(NotYetValid)
        );
        let forever = Claims {
            exp: u64::MAX,
            ..claims()
        };
        assert!(verify(&keys, &sign(&key, &forever), NOW).is_ok());
    }

    #[test]
    fn shapes() {
        let (key, keys) = setup();
        let token = sign(&key, &claims());
        let huge = format!("{token}{}", "A".repeat(MAX_TOKEN_LEN));
        for bad in [
            "",
            "..",
            &token[..token.rfind('.').unwrap()],
            &token[..token.len() - 1],
            &format!("{token}."),
            &format!("{token}.AAAA"),
            &format!("{token}="),
            &token.replacen('.', "!.", 1),
            &token.replace('.', " ."),
            &huge,
        ] {
            assert_eq!(verify(&keys, bad, NOW), Err(Malformed), "{bad}");
        }
    }

    #[test]
    fn claims_are_all_required_and_others_tolerated() {
        let (key, keys) = setup();
        let full = serde_json::to_value(claims()).unwrap();
        for name in ["sub", "cus", "role", "iat", "exp", "jti", "sid"] {
            let mut less = full.clone();
            less.as_object_mut().unwrap().remove(name);
            let token = raw(HEADER, &less.to_string(), ed(&key));
            assert_eq!(verify(&keys, &token, NOW), Err(Malformed), "{name}");
        }
        let mut more = full.clone();
        more["aud"] = "gateway".into();
        assert_eq!(
            verify(&keys, &raw(HEADER, &more.to_string(), ed(&key)), NOW),
            Ok(claims())
        );
        let mut root = full;
        root["role"] = "root".into();
        let token = raw(HEADER, &root.to_string(), ed(&key));
        assert_eq!(verify(&keys, &token, NOW), Err(Malformed));
        let array = r#"["u-1","c-9","operator",1700000000,1700000300,"t-1","s-1"]"#;
        assert_eq!(
            verify(&keys, &raw(HEADER, array, ed(&key)), NOW),
            Err(Malformed)
        );
    }

    #[test]
    fn rotation() {
        let (old, new) = (
            SigningKey::generate("k1").unwrap(),
            SigningKey::generate("k2").unwrap(),
        );
        let mut keys = KeySet::new();
        keys.insert(old.public());
        keys.insert(new.public());
        let keys = KeySet::from_jwks(&keys.to_jwks()).unwrap();
        let (t_old, t_new) = (sign(&old, &claims()), sign(&new, &claims()));
        assert!(verify(&keys, &t_old, NOW).is_ok() && verify(&keys, &t_new, NOW).is_ok());
        let mut keys = keys;
        keys.remove("k1");
        assert_eq!(verify(&keys, &t_old, NOW), Err(UnknownKey));
        assert!(verify(&keys, &t_new, NOW).is_ok());
        // Replaced under the same id: the old key's tokens no longer verify.
        keys.insert(PublicKey::new("k2", *old.public().x()).unwrap());
        assert_eq!(verify(&keys, &t_new, NOW), Err(BadSignature));
    }

    #[test]
    fn no_single_byte_change_verifies() {
        let (key, keys) = setup();
        let token = sign(&key, &claims());
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut checked = 0;
        for i in 0..token.len() {
            for _ in 0..8 {
                // xorshift: a fixed, repeatable spread of replacement bytes.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let mut bytes = token.clone().into_bytes();
                bytes[i] = match seed % 4 {
                    0 => bytes[i] ^ (1 << ((seed >> 8) % 8)),
                    1 => b"-_.=A0a "[(seed >> 8) as usize % 8],
                    _ => (seed >> 8) as u8,
                };
                if bytes[i] == token.as_bytes()[i] {
                    continue;
                }
                if let Ok(changed) = String::from_utf8(bytes) {
                    assert!(verify(&keys, &changed, NOW).is_err(), "byte {i}: {changed}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 4 * token.len(), "{checked}");
    }

    #[test]
    fn labels_and_messages() {
        let labels = TokenError::ALL.map(TokenError::as_str).join(" ");
        let expected = "malformed unsupported_algorithm unknown_key bad_signature expired";
        assert_eq!(labels, format!("{expected} not_yet_valid revoked"));
        assert_eq!(UnknownKey.to_string(), "token signed with an unknown key");
    }

    /// What faces the network: tokens mutated (characters replaced, dropped, duplicated,
    /// parts swapped or re-encoded around changed JSON) and random strings. `verify` must
    /// answer every one without panicking, and accept none but the token that was signed.
    #[test]
    fn mutated_and_random_tokens_never_panic_and_never_verify() {
        let (key, keys) = setup();
        let jwt = sign(&key, &claims());
        let parts: Vec<&str> = jwt.split('.').collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n.max(1) as u64) as usize
        };
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ {}\"";
        let json_edits = [
            ("\"EdDSA\"", "\"none\""),
            ("\"EdDSA\"", "\"HS256\""),
            ("\"k1\"", "\"k2\""),
            ("\"operator\"", "\"admin\""),
            ("\"c-9\"", "null"),
            ("}", ",\"crit\":[\"x\"]}"),
            ("{", "["),
        ];
        for round in 0..20_000 {
            let mut t = jwt.clone().into_bytes();
            match round % 5 {
                0 => {
                    let i = next(t.len());
                    t[i] = alphabet[next(alphabet.len())];
                }
                1 => {
                    let (a, b) = (next(t.len()), next(t.len()));
                    t.drain(a.min(b)..a.max(b));
                }
                2 => {
                    let i = next(t.len());
                    let copy = t[i..(i + next(40)).min(t.len())].to_vec();
                    t.splice(i..i, copy);
                }
                3 => {
                    // valid base64url around edited JSON, the original signature kept
                    let which = next(2);
                    let (from, to) = json_edits[next(json_edits.len())];
                    let decoded = String::from_utf8(decode_url(parts[which]).unwrap()).unwrap();
                    let mut p = parts.clone();
                    let edited = encode_url(decoded.replacen(from, to, 1).as_bytes());
                    p[which] = &edited;
                    t = p.join(".").into_bytes();
                }
                _ => {
                    t = (0..next(300))
                        .map(|_| alphabet[next(alphabet.len())])
                        .collect();
                }
            }
            let t = String::from_utf8(t).unwrap();
            match verify(&keys, &t, NOW) {
                Ok(c) => assert_eq!((t.as_str(), c), (jwt.as_str(), claims()), "round {round}"),
                Err(_) => assert_ne!(t, jwt, "round {round}"),
            }
        }
    }
}

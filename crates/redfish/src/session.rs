//! What a session login's answer means, as a pure function of its status and headers (the
//! client does the I/O).

/// The longest `X-Auth-Token` taken: real tokens are tens of bytes; a longer one is not a token
/// we would want to echo on every request.
const MAX_TOKEN: usize = 1024;

/// What to authenticate with after the `POST` to the Sessions collection.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Login {
    /// A session: send this `X-Auth-Token`.
    Session {
        /// The token.
        token: String,
    },
    /// No usable session: HTTP Basic on every request.
    Basic,
    /// The credentials were refused.
    Refused,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        match self {
            Login::Session { .. } => f.write_str("Session"),
            Login::Basic => f.write_str("Basic"),
            Login::Refused => f.write_str("Refused"),
        }
    }
}

/// Judges the answer to the session `POST`.
///
/// A success is a session only with a token: some services answer every `POST` with `204` and
/// nothing else (sushy-tools' static mockup server does), which means they keep no sessions,
/// so Basic auth it is, as when the service offers no SessionService. Any status other than
/// success or a refusal (404, 405, 501, 5xx) means the same.
pub(crate) fn judge(status: u16, token: Option<&str>) -> Login {
    match status {
        200..=299 => match token.map(str::trim) {
            Some(t) if !t.is_empty() && t.len() <= MAX_TOKEN => Login::Session {
                token: t.to_owned(),
            },
            _ => Login::Basic,
        },
        401 | 403 => Login::Refused,
        _ => Login::Basic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(t: &str) -> Login {
        Login::Session { token: t.into() }
    }

    #[test]
    fn created_or_no_content_with_a_token_is_a_session() {
        assert_eq!(judge(201, Some("abc")), session("abc"));
        assert_eq!(judge(204, Some("abc")), session("abc"));
        assert_eq!(judge(200, Some(" abc ")), session("abc"));
    }

    #[test]
    fn success_without_a_usable_token_is_basic_auth() {
        assert_eq!(judge(204, None), Login::Basic);
        assert_eq!(judge(201, Some("")), Login::Basic);
        assert_eq!(judge(201, Some(&"x".repeat(MAX_TOKEN + 1))), Login::Basic);
    }

    #[test]
    fn refusals_and_other_statuses() {
        assert_eq!(judge(401, Some("abc")), Login::Refused);
        assert_eq!(judge(403, None), Login::Refused);
        for status in [404, 405, 500, 501, 302] {
            assert_eq!(judge(status, Some("abc")), Login::Basic, "{status}");
        }
    }

    #[test]
    fn debug_hides_the_token() {
        assert_eq!(format!("{:?}", session("secret-token")), "Session");
    }
}

//! What a session login's answer means, as pure functions of its status and headers (the client
//! does the I/O): the token to send, and the session's `Location` to delete when done with it.
//!
//! The `Location` is taken only when it names this very service: a path (`/redfish/v1/...`) or
//! an absolute URL whose scheme and host:port are the client's own. Anything else (another
//! host, another scheme, a relative reference, userinfo) is ignored, so neither the token nor
//! the credentials are ever sent elsewhere because a BMC said so; that session is then left to
//! expire.

/// The longest `X-Auth-Token` taken: real tokens are tens of bytes; a longer one is not a token
/// we would want to echo on every request.
const MAX_TOKEN: usize = 1024;

/// The longest session `Location` path taken.
const MAX_LOCATION: usize = 1024;

/// Where the client talks: the scheme and the authority as it writes `Host` (the port left out
/// when it is the scheme's default).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// `host` or `host:port`; an IPv6 host in brackets.
    pub authority: &'a str,
}

impl Origin<'_> {
    fn default_port(&self) -> &'static str {
        if self.scheme == "https" {
            "443"
        } else {
            "80"
        }
    }
}

/// The path to use for a session's `Location` header, when it names the client's own origin.
pub(crate) fn same_origin_path(location: &str, origin: Origin<'_>) -> Option<String> {
    let location = location.trim();
    let location = location.split('#').next().unwrap_or_default();
    let path = if location.starts_with('/') {
        location
    } else {
        let (scheme, rest) = location.split_once("://")?;
        if !scheme.eq_ignore_ascii_case(origin.scheme) {
            return None;
        }
        let (authority, path) = rest.split_at(rest.find('/')?);
        if authority.contains('@') {
            return None;
        }
        // An explicit default port is the same origin as none.
        let authority = authority
            .strip_suffix(origin.default_port())
            .and_then(|a| a.strip_suffix(':'))
            .unwrap_or(authority);
        if !authority.eq_ignore_ascii_case(origin.authority) {
            return None;
        }
        path
    };
    let bad = path.starts_with("//")
        || path.contains('@')
        || path.len() > MAX_LOCATION
        || path.bytes().any(|b| b <= b' ' || b == 0x7f);
    (!bad).then(|| path.to_owned())
}

/// What to authenticate with after the `POST` to the Sessions collection.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Login {
    /// A session: send this `X-Auth-Token`.
    Session {
        /// The token.
        token: String,
        /// The session's own path, to delete it; `None` when the service gave none on its
        /// own origin.
        location: Option<String>,
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

/// Judges the answer to the session `POST` (its status, `X-Auth-Token` and `Location`).
///
/// A success is a session only with a token: some services answer every `POST` with `204` and
/// nothing else (sushy-tools' static mockup server does), which means they keep no sessions,
/// so Basic auth it is, as when the service offers no SessionService. Any status other than
/// success or a refusal (404, 405, 501, 5xx) means the same.
pub(crate) fn judge(
    status: u16,
    token: Option<&str>,
    location: Option<&str>,
    origin: Origin<'_>,
) -> Login {
    match status {
        200..=299 => match token.map(str::trim) {
            Some(t) if !t.is_empty() && t.len() <= MAX_TOKEN => Login::Session {
                token: t.to_owned(),
                location: location.and_then(|l| same_origin_path(l, origin)),
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

    const HTTPS: Origin<'static> = Origin {
        scheme: "https",
        authority: "10.0.4.17",
    };
    const HTTP_8000: Origin<'static> = Origin {
        scheme: "http",
        authority: "127.0.0.1:8000",
    };

    fn judge(status: u16, token: Option<&str>) -> Login {
        super::judge(status, token, None, HTTPS)
    }

    fn session(t: &str) -> Login {
        Login::Session {
            token: t.into(),
            location: None,
        }
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

    #[test]
    fn the_location_is_kept_as_a_path() {
        let l = |loc: &str| super::judge(201, Some("t"), Some(loc), HTTPS);
        assert_eq!(
            l("/redfish/v1/SessionService/Sessions/7"),
            Login::Session {
                token: "t".into(),
                location: Some("/redfish/v1/SessionService/Sessions/7".into())
            }
        );
        assert_eq!(
            l("https://evil.example/redfish/v1/SessionService/Sessions/7"),
            session("t"),
            "another host: no location, still a session"
        );
    }

    #[test]
    fn same_origin_paths() {
        let p = |loc: &str, o| same_origin_path(loc, o);
        let sess = "/redfish/v1/SessionService/Sessions/7";
        let want = Some(sess.to_owned());
        for loc in [
            sess.to_owned(),
            format!(" {sess} "),
            format!("{sess}#frag"),
            format!("https://10.0.4.17{sess}"),
            format!("HTTPS://10.0.4.17:443{sess}"),
        ] {
            assert_eq!(p(&loc, HTTPS), want, "{loc}");
        }
        assert_eq!(p(&format!("http://127.0.0.1:8000{sess}"), HTTP_8000), want);
        let v6 = Origin {
            scheme: "https",
            authority: "[fd00::7]:8443",
        };
        assert_eq!(p(&format!("https://[FD00::7]:8443{sess}"), v6), want);
        assert_eq!(
            p("/redfish/v1/SessionService/Sessions?id=7", HTTPS).as_deref(),
            Some("/redfish/v1/SessionService/Sessions?id=7")
        );
    }

    #[test]
    fn other_origins_and_odd_references_are_ignored() {
        let sess = "/redfish/v1/SessionService/Sessions/7";
        for (loc, origin) in [
            (format!("https://10.0.4.18{sess}"), HTTPS),
            (format!("https://10.0.4.17:8443{sess}"), HTTPS),
            (format!("http://10.0.4.17{sess}"), HTTPS),
            (format!("https://admin:pw@10.0.4.17{sess}"), HTTPS),
            (format!("https://10.0.4.17@evil.example{sess}"), HTTPS),
            (format!("//evil.example{sess}"), HTTPS),
            ("https://10.0.4.17".to_owned(), HTTPS),
            ("Sessions/7".to_owned(), HTTPS),
            ("javascript:alert(1)".to_owned(), HTTPS),
            (format!("http://127.0.0.1{sess}"), HTTP_8000),
            (format!("http://127.0.0.1:80{sess}"), HTTP_8000),
            (format!("http://127.0.0.1:18000{sess}"), HTTP_8000),
            (format!("http://127.0.0.1:800{sess}"), HTTP_8000),
            (format!("/a/@b{sess}"), HTTPS),
            ("/a b".to_owned(), HTTPS),
            (format!("/{}", "x".repeat(MAX_LOCATION)), HTTPS),
            (String::new(), HTTPS),
        ] {
            assert_eq!(same_origin_path(&loc, origin), None, "{loc} vs {origin:?}");
        }
    }
}

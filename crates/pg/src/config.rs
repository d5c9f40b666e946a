//! Where and how to connect, parsed from a `postgres://` URL. The password lives only here and
//! in the SCRAM exchange: `Debug`, [`Config::redacted`] and every parse error leave it out.

use std::fmt;
use std::time::Duration;

use crate::Error;

/// A connection's target, credentials and timeouts.
#[derive(Clone)]
pub struct Config {
    /// A host name or an IP literal (IPv6 without brackets).
    pub host: String,
    /// TCP port, 5432 unless the URL names one.
    pub port: u16,
    /// The role to log in as.
    pub user: String,
    password: String,
    /// The database; the user's name when the URL has none (as libpq does).
    pub dbname: String,
    /// Bounds TCP connect, startup and authentication together.
    pub connect_timeout: Duration,
    /// Bounds every socket read and write after startup.
    pub io_timeout: Duration,
    /// Sent as the `statement_timeout` startup parameter, so the server cancels long queries.
    pub statement_timeout: Option<Duration>,
    /// Shown in `pg_stat_activity`.
    pub application_name: String,
    /// Whether the password may be sent as cleartext or md5 when the server asks (URL
    /// `auth=password`). Off by default: without TLS, anyone posing as the server could ask
    /// for cleartext and get the password; SCRAM proves the server knows it too.
    pub password_auth: bool,
}

impl Config {
    /// `postgres://user:password@host:port/dbname?connect_timeout=SECS&statement_timeout=MS&io_timeout=SECS&application_name=NAME&auth=scram|password`
    /// (or `postgresql://`). User, password, database and parameter values are
    /// percent-decoded; the host may be a name, an IPv4 literal or a bracketed IPv6 literal.
    pub fn parse(url: &str) -> Result<Config, Error> {
        let bad = |m: &str| Error::Config(format!("postgres URL: {m}"));
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| bad("must start with postgres:// or postgresql://"))?;
        // The authority ends at the first '/' or '?' after the last '@' (a password may hold
        // unencoded '/' or '?', a host may not).
        let at = rest.rfind('@');
        let after_at = at.map_or(0, |i| i + 1);
        let end = rest[after_at..]
            .find(['/', '?', '#'])
            .map_or(rest.len(), |i| i + after_at);
        let (authority, tail) = rest.split_at(end);
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (u, h),
            None => return Err(bad("missing user (postgres://user:password@host/db)")),
        };
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let user = decode(user).ok_or_else(|| bad("invalid percent-encoding in the user"))?;
        if user.is_empty() {
            return Err(bad("missing user"));
        }
        let password =
            decode(password).ok_or_else(|| bad("invalid percent-encoding in the password"))?;
        let (host, port) = host_port(hostport).map_err(|m| bad(&m))?;

        let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
        if path.contains('#') || query.contains('#') {
            return Err(bad("a fragment (#) is not allowed"));
        }
        let dbname = match path.strip_prefix('/') {
            Some(db) if !db.is_empty() => {
                decode(db).ok_or_else(|| bad("invalid percent-encoding in the database name"))?
            }
            _ => user.clone(),
        };
        let mut cfg = Config {
            host,
            port,
            user,
            password,
            dbname,
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(30),
            statement_timeout: None,
            application_name: "conduit".into(),
            password_auth: false,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value =
                decode(value).ok_or_else(|| bad(&format!("invalid percent-encoding in {key}")))?;
            let number = |unit: &str| {
                value
                    .parse::<u64>()
                    .map_err(|_| bad(&format!("{key} must be a whole number of {unit}")))
            };
            match key {
                "connect_timeout" => match number("seconds")? {
                    0 => return Err(bad("connect_timeout must be positive")),
                    n => cfg.connect_timeout = Duration::from_secs(n),
                },
                "io_timeout" => match number("seconds")? {
                    0 => return Err(bad("io_timeout must be positive")),
                    n => cfg.io_timeout = Duration::from_secs(n),
                },
                "statement_timeout" => {
                    cfg.statement_timeout = match number("milliseconds")? {
                        0 => None,
                        n => Some(Duration::from_millis(n)),
                    }
                }
                "application_name" => cfg.application_name = value,
                "auth" => {
                    cfg.password_auth = match value.as_str() {
                        "scram" => false,
                        "password" => true,
                        _ => return Err(bad("auth must be scram (the default) or password")),
                    }
                }
                "sslmode" if matches!(value.as_str(), "disable" | "allow" | "prefer") => {}
                "sslmode" => return Err(bad("TLS is not supported yet (sslmode=disable)")),
                // the key only: a value might be a secret
                _ => return Err(bad(&format!("unknown parameter {key:?}"))),
            }
        }
        Ok(cfg)
    }

    /// The password (sent only to the server, in the SCRAM proof or as cleartext if asked).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Replaces the password (for one read from a file rather than the URL).
    pub fn set_password(&mut self, password: impl Into<String>) {
        self.password = password.into();
    }

    /// `postgres://user:***@host:port/db`, for logs.
    pub fn redacted(&self) -> String {
        self.to_string()
    }

    /// `host:port`, bracketing an IPv6 literal.
    pub(crate) fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = if self.password.is_empty() { "" } else { ":***" };
        write!(
            f,
            "postgres://{}{secret}@{}/{}",
            self.user,
            self.address(),
            self.dbname
        )
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or("an IPv6 host needs its closing ']'")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{host:?} is not an IPv6 address"));
        }
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or("junk after ']'")?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    if host.contains(':') && !s.starts_with('[') {
        return Err("an IPv6 host must be in brackets: [::1]".into());
    }
    let port = match port {
        None => 5432,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("port {p:?} is not a number from 1 to 65535")),
        },
    };
    Ok((host.to_string(), port))
}

/// Percent-decodes `s` into UTF-8; None for a bad escape or bytes that are not UTF-8.
fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_url() {
        let c = Config::parse(
            "postgres://conduit:s3cr%3At%40x@db.example:6543/manager?connect_timeout=3&statement_timeout=2500&application_name=conduit%20manager",
        )
        .unwrap();
        assert_eq!(c.user, "conduit");
        assert_eq!(c.password(), "s3cr:t@x");
        assert_eq!(c.host, "db.example");
        assert_eq!(c.port, 6543);
        assert_eq!(c.dbname, "manager");
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.statement_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(c.application_name, "conduit manager");
        assert_eq!(c.io_timeout, Duration::from_secs(30));
        assert_eq!(
            c.redacted(),
            "postgres://conduit:***@db.example:6543/manager"
        );
        assert_eq!(format!("{c:?}"), c.redacted());
    }

    #[test]
    fn defaults_and_literals() {
        let c = Config::parse("postgresql://u@10.1.2.3").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.dbname.as_str()),
            ("10.1.2.3", 5432, "u")
        );
        assert_eq!(c.password(), "");
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.statement_timeout, None);
        assert_eq!(c.redacted(), "postgres://u@10.1.2.3:5432/u");
        let c = Config::parse("postgres://u:p@[::1]:5433/d").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 5433));
        assert_eq!(c.redacted(), "postgres://u:***@[::1]:5433/d");
        let c = Config::parse("postgres://u:p@[fe80::1]/d").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("fe80::1", 5432));
        // an unencoded '@' or '/' in the password: the last '@' ends the user info
        let c = Config::parse("postgres://u:a@b/c@h/d").unwrap();
        assert_eq!(
            (c.password(), c.host.as_str(), c.dbname.as_str()),
            ("a@b/c", "h", "d")
        );
    }

    #[test]
    fn errors_name_the_part_not_the_secret() {
        let secret = "hunter2";
        for url in [
            "mysql://u:hunter2@h/d",
            "postgres://hunter2@",
            "postgres://u:hunter2@h:99999/d",
            "postgres://u:hunter2@h:x/d",
            "postgres://u:hunter2%zz@h/d",
            "postgres://u:hunter2%4@h/d",
            "postgres://u:hunter2@/d",
            "postgres://u:hunter2@[::1/d",
            "postgres://u:hunter2@::1/d",
            "postgres://u:hunter2@h/d?connect_timeout=abc",
            "postgres://u:hunter2@h/d?connect_timeout=0",
            "postgres://u:hunter2@h/d?password=hunter2",
            "postgres://u:hunter2@h/d?sslmode=require",
            "postgres://u:hunter2@h/d#frag",
            "postgres://h/d",
            "postgres://:hunter2@h/d",
        ] {
            let e = Config::parse(url).expect_err(url);
            assert!(matches!(e, Error::Config(_)), "{url}: {e:?}");
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(secret), "{url}: {shown}");
        }
        let e = Config::parse("postgres://u:p@h:99999/d").unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(decode("a%20b%2Fc%25").as_deref(), Some("a b/c%"));
        assert_eq!(decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(decode("%"), None);
        assert_eq!(decode("%4"), None);
        assert_eq!(decode("%g0"), None);
        assert_eq!(decode("%FF"), None); // not UTF-8
        let c = Config::parse("postgres://us%65r:p%40ss@h/d%2Db").unwrap();
        assert_eq!(
            (c.user.as_str(), c.password(), c.dbname.as_str()),
            ("user", "p@ss", "d-b")
        );
    }
}

//! The revocation rule, one definition for every verifier: a token is refused when its `jti`
//! or `sid` is listed, or its `sub` is listed with a time at or after the token's `iat`.

use std::collections::{HashMap, HashSet};

use crate::token::Claims;

/// A revocation list as a verifier holds it.
#[derive(Debug, Default, Clone)]
pub struct Revocations {
    /// (`token` | `session` | `agent`, id).
    ids: HashSet<(String, String)>,
    /// User id → revoked at: their tokens issued until then are refused.
    users: HashMap<String, i64>,
}

impl Revocations {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one entry of `kind` (`token`, `session`, `agent` or `user`); a user's entries keep
    /// the latest time.
    pub fn insert(&mut self, kind: &str, id: String, revoked_at: i64) {
        if kind == "user" {
            let at = self.users.entry(id).or_insert(revoked_at);
            *at = (*at).max(revoked_at);
        } else {
            self.ids.insert((kind.to_owned(), id));
        }
    }

    /// Whether an entry of `kind` names `id`.
    pub fn contains(&self, kind: &str, id: &str) -> bool {
        self.ids.contains(&(kind.to_owned(), id.to_owned()))
    }

    /// When `user_id`'s tokens were last revoked.
    pub fn user_revoked_at(&self, user_id: &str) -> Option<i64> {
        self.users.get(user_id).copied()
    }

    /// Whether these claims are refused.
    pub fn revokes(&self, claims: &Claims) -> bool {
        self.contains("token", &claims.jti)
            || self.contains("session", &claims.sid)
            || self
                .users
                .get(&claims.sub)
                .is_some_and(|at| claims.iat as i64 <= *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Role;

    #[test]
    fn tokens_sessions_and_users_up_to_a_time_are_refused() {
        let c = |sub: &str, iat| Claims {
            sub: sub.into(),
            cus: None,
            role: Role::Viewer,
            iat,
            exp: iat + 60,
            jti: format!("j-{sub}-{iat}"),
            sid: format!("s-{sub}"),
        };
        let mut r = Revocations::new();
        assert!(!r.revokes(&c("u", 10)));
        r.insert("user", "u".into(), 10);
        r.insert("user", "u".into(), 5); // an older entry does not shorten it
        assert!(r.revokes(&c("u", 10)));
        assert!(!r.revokes(&c("u", 11)));
        r.insert("session", "s-v".into(), 0);
        assert!(r.revokes(&c("v", 99)));
        r.insert("token", "j-w-1".into(), 0);
        assert!(r.revokes(&c("w", 1)) && !r.revokes(&c("w", 2)));
        r.insert("agent", "a1".into(), 0);
        assert!(r.contains("agent", "a1") && !r.contains("token", "a1"));
    }
}

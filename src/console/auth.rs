//! The console's login: the one place that decides whether a request may read.
//!
//! Today it is a configured token, sent as `Authorization: Bearer TOKEN` or as the password of HTTP Basic
//! authentication (the browser's own login prompt: no form, no cookie, no POST), compared in constant time. When the
//! APIs gain user identities with roles, [`Login::permits`] is what becomes "this user holds the `viewer` role"
//! (docs/console.md).

use crate::Failure;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Who may read the console.
pub(crate) struct Login {
    token_sha256: [u8; 32],
}

/// What a request presents.
pub(crate) struct Presented<'a> {
    /// The `Authorization` header's value.
    pub authorization: Option<&'a str>,
}

fn sha(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl Login {
    /// A login by `token`; refuses a token shorter than 16 characters (exit 2, naming the flag).
    pub(crate) fn new(token: &str) -> Result<Login, Failure> {
        if token.chars().count() < 16 {
            return Err(Failure {
                code: 2,
                message: "--console-token (SOVRA_CONSOLE_TOKEN): give a token of at least 16 characters; the console \
                          refuses every request without it"
                    .into(),
            });
        }
        Ok(Login { token_sha256: sha(token) })
    }

    /// Whether a token typed into the login form is the console's.
    pub(crate) fn token_ok(&self, token: &str) -> bool {
        sha(token).ct_eq(&self.token_sha256).into()
    }

    /// Whether the request may read the console: the token as a bearer token or as a Basic password.
    pub(crate) fn permits(&self, p: &Presented) -> bool {
        use base64::Engine as _;
        let Some(a) = p.authorization else { return false };
        if let Some(t) = a.strip_prefix("Bearer ") {
            return self.token_ok(t.trim());
        }
        let Some(b) = a.strip_prefix("Basic ") else { return false };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b.trim()) else { return false };
        let text = String::from_utf8_lossy(&raw);
        // Any user name: the password is the token.
        text.split_once(':').is_some_and(|(_, password)| self.token_ok(password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_is_let_in() {
        use base64::Engine as _;
        assert!(matches!(Login::new("short"), Err(f) if f.code == 2));
        let Ok(l) = Login::new("0123456789abcdef-console") else { panic!("a 24-character token is accepted") };
        let with = |a: &str| l.permits(&Presented { authorization: Some(a) });
        assert!(!l.permits(&Presented { authorization: None }));
        assert!(with("Bearer 0123456789abcdef-console"));
        assert!(!with("Bearer 0123456789abcdef-consolX"));
        assert!(!with("0123456789abcdef-console"));
        let basic = |u: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(u));
        assert!(with(&basic("viewer:0123456789abcdef-console")));
        assert!(!with(&basic("0123456789abcdef-console")));
        assert!(!with(&basic("viewer:nope")));
        assert!(!with("Basic !!!"));
    }
}

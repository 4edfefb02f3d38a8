//! API tokens: what a token is, what it may do, and how its secret is checked.
//!
//! A token reads `shoal_<id>_<secret>`: `<id>` is the token's id (32 hex digits, public, the
//! key its row is found by) and `<secret>` 32 random bytes from the operating system's CSPRNG
//! (64 hex digits). The server stores the SHA-256 of the secret only, and compares it in
//! constant time (`subtle`); see `docs/adr/0011-api-tokens.md` for why a plain hash is right
//! for a random secret. Each token has a name, recorded as the actor of every command it
//! issues, and [`Scope`]s.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Read jobs, tasks, history and analytics (GraphQL queries and subscriptions, REST GETs).
    Read,
    /// Submit jobs (`submitJob`, `POST /api/v1/jobs`).
    Submit,
    /// Act on jobs: cancel, retry failed tasks, redrive dead letters (and list them).
    Operate,
    /// Report task transitions as an external worker (`POST /api/v1/tasks/{id}/...`).
    Worker,
    /// Everything above.
    Admin,
}

impl Scope {
    /// Every scope, in the order the docs list them.
    pub const ALL: [Scope; 5] = [
        Scope::Read,
        Scope::Submit,
        Scope::Operate,
        Scope::Worker,
        Scope::Admin,
    ];

    /// The name on the command line and in the log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Submit => "submit",
            Scope::Operate => "operate",
            Scope::Worker => "worker",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope name that is not one of [`Scope::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?}: expected read, submit, operate, worker or admin")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownScope(s.to_owned()))
    }
}

/// Who is calling: the name of the token the request carried, and its scopes. Handlers find it
/// in the request's extensions (REST) or the GraphQL context data; it is absent when the API
/// runs without tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name: the actor recorded on the commands it issues.
    pub name: String,
    /// What it may do.
    pub scopes: BTreeSet<Scope>,
}

impl Principal {
    /// Whether the token may do what `scope` covers (`admin` covers everything).
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

/// Where a token's text ends and its parts begin.
const PREFIX: &str = "shoal_";
/// Bytes of randomness in a secret.
const SECRET_BYTES: usize = 32;

/// A newly made token: the text to hand to its user (shown once, never stored), and what the
/// server keeps.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The token's id.
    pub token_id: Uuid,
    /// `shoal_<id>_<secret>`: what a client sends as `Authorization: Bearer ...`.
    pub text: String,
    /// Lower-case hex SHA-256 of the secret: what the server stores.
    pub secret_sha256: String,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token_id", &self.token_id)
            .finish_non_exhaustive()
    }
}

impl IssuedToken {
    /// A fresh token with a random id and secret.
    pub fn generate() -> Self {
        let token_id = Uuid::new_v4();
        let mut secret = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut secret);
        let secret = hex::encode(secret);
        IssuedToken {
            token_id,
            text: format!("{PREFIX}{}_{secret}", token_id.simple()),
            secret_sha256: secret_sha256(&secret),
        }
    }
}

/// A token as a client presented it, split into its id and secret; `None` when the text does
/// not have a token's shape (then no row is looked up).
#[derive(Clone, PartialEq, Eq)]
pub struct PresentedToken {
    pub token_id: Uuid,
    secret: String,
}

impl fmt::Debug for PresentedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedToken")
            .field("token_id", &self.token_id)
            .finish_non_exhaustive()
    }
}

impl PresentedToken {
    /// Parses `shoal_<32 hex>_<64 hex>`.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.trim().strip_prefix(PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        if id.len() != 32 || secret.len() != SECRET_BYTES * 2 {
            return None;
        }
        if !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let token_id = Uuid::try_parse(id).ok()?;
        Some(PresentedToken {
            token_id,
            secret: secret.to_ascii_lowercase(),
        })
    }

    /// Parses the value of an `Authorization` header: `Bearer <token>` (the scheme in any
    /// case).
    pub fn from_authorization(value: &str) -> Option<Self> {
        let (scheme, token) = value.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| Self::parse(token))
            .flatten()
    }

    /// Whether the secret hashes to `stored` (lower-case hex SHA-256), compared in constant
    /// time.
    pub fn matches(&self, stored: &str) -> bool {
        let Ok(stored) = hex::decode(stored) else {
            return false;
        };
        let presented = Sha256::digest(self.secret.as_bytes());
        presented.as_slice().ct_eq(&stored).into()
    }
}

/// Lower-case hex SHA-256 of a secret.
fn secret_sha256(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Parses scope names (each may also be comma-separated); at least one.
pub fn parse_scopes<S: AsRef<str>>(values: &[S]) -> Result<BTreeSet<Scope>, UnknownScope> {
    let scopes = values
        .iter()
        .flat_map(|v| v.as_ref().split(','))
        .filter(|s| !s.trim().is_empty())
        .map(str::parse)
        .collect::<Result<BTreeSet<_>, _>>()?;
    if scopes.is_empty() {
        return Err(UnknownScope(String::new()));
    }
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_and_matches_only_its_own_hash() {
        let issued = IssuedToken::generate();
        let presented = PresentedToken::parse(&issued.text).unwrap();
        assert_eq!(presented.token_id, issued.token_id);
        assert!(presented.matches(&issued.secret_sha256));
        let other = IssuedToken::generate();
        assert!(!presented.matches(&other.secret_sha256));
        assert!(!presented.matches("not hex"));
        assert!(!presented.matches(""));
        assert!(!format!("{issued:?}").contains(&issued.text[40..]));
    }

    #[test]
    fn the_authorization_header_takes_a_bearer_token() {
        let issued = IssuedToken::generate();
        let header = format!("Bearer {}", issued.text);
        assert!(PresentedToken::from_authorization(&header).is_some());
        assert!(PresentedToken::from_authorization(&format!("bearer {}", issued.text)).is_some());
        assert!(PresentedToken::from_authorization(&format!("Basic {}", issued.text)).is_none());
        assert!(PresentedToken::from_authorization("Bearer shoal_abc_def").is_none());
        assert!(PresentedToken::parse(&issued.text.replace("shoal_", "xoal_")).is_none());
    }

    #[test]
    fn scopes_parse_and_admin_covers_all() {
        let scopes = parse_scopes(&["read,submit", "Operate"]).unwrap();
        assert_eq!(
            scopes.iter().copied().collect::<Vec<_>>(),
            [Scope::Read, Scope::Submit, Scope::Operate]
        );
        assert!(parse_scopes(&["reed"]).is_err());
        assert!(parse_scopes::<&str>(&[]).is_err());
        let admin = Principal {
            name: "root".into(),
            scopes: [Scope::Admin].into(),
        };
        assert!(Scope::ALL.iter().all(|s| admin.allows(*s)));
        let reader = Principal {
            name: "r".into(),
            scopes: [Scope::Read].into(),
        };
        assert!(reader.allows(Scope::Read) && !reader.allows(Scope::Submit));
    }
}

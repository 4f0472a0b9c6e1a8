//! Users and roles: who may hold money and who may administer the bank, and the rules for their credentials.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Shortest allowed username, in characters.
pub const USERNAME_CHARS_MIN: usize = 3;
/// Longest allowed username, in characters.
pub const USERNAME_CHARS_MAX: usize = 50;
/// Shortest allowed password, in characters.
pub const PASSWORD_CHARS_MIN: usize = 8;
/// Longest allowed password, in characters (bounds the cost of hashing it).
pub const PASSWORD_CHARS_MAX: usize = 128;
/// Longest allowed email address, in bytes (RFC 5321's path limit).
pub const EMAIL_BYTES_MAX: usize = 254;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Holds wallets and moves their own money.
    User,
    /// Administers users and may see and roll back any transaction.
    Admin,
}

impl Role {
    /// The role's name as the API and the database spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Self::User),
            "admin" => Ok(Self::Admin),
            _ => Err("must be \"user\" or \"admin\"".to_owned()),
        }
    }
}

/// A registered user, as every layer sees it (the password hash stays in storage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Stable identifier.
    pub id: Uuid,
    /// Unique (case-insensitively) display name.
    pub username: String,
    /// Unique email, stored lower-case.
    pub email: String,
    /// What the user may do.
    pub role: Role,
    /// False once deactivated (soft-deleted); such a user cannot log in and their tokens stop working.
    pub is_active: bool,
    /// When the user registered.
    pub created_at: DateTime<Utc>,
    /// When the user last changed.
    pub updated_at: DateTime<Utc>,
    /// Access tokens issued at or before this instant are refused: logout, a reused refresh token and
    /// deactivation end the sessions they concern at once, not when their access tokens expire.
    pub sessions_revoked_at: Option<DateTime<Utc>>,
}

/// Checks a username: 3–50 characters of `[A-Za-z0-9_]`.
pub fn parse_username(raw: &str) -> Result<String, String> {
    let chars = raw.chars().count();
    if !(USERNAME_CHARS_MIN..=USERNAME_CHARS_MAX).contains(&chars) {
        return Err(format!("must be {USERNAME_CHARS_MIN} to {USERNAME_CHARS_MAX} characters long"));
    }
    if !raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("may contain only letters, digits and underscores".to_owned());
    }
    Ok(raw.to_owned())
}

/// Checks a password's length: 8–128 characters. Any character is allowed; it is never stored, only its hash.
pub fn parse_password(raw: &str) -> Result<String, String> {
    let chars = raw.chars().count();
    if !(PASSWORD_CHARS_MIN..=PASSWORD_CHARS_MAX).contains(&chars) {
        return Err(format!("must be {PASSWORD_CHARS_MIN} to {PASSWORD_CHARS_MAX} characters long"));
    }
    Ok(raw.to_owned())
}

/// Checks an email address and returns it lower-cased, the form in which it is stored and compared.
///
/// The check is the practical subset of RFC 5322 that mail systems accept: a dot-atom local part, and a domain of
/// at least two DNS labels. Quoted local parts and IP-literal domains are refused.
pub fn parse_email(raw: &str) -> Result<String, String> {
    const INVALID: &str = "must be a valid email address";
    if raw.len() > EMAIL_BYTES_MAX {
        return Err(format!("must be at most {EMAIL_BYTES_MAX} characters long"));
    }
    let (local, domain) = raw.rsplit_once('@').ok_or(INVALID)?;
    if !is_valid_local_part(local) || !is_valid_domain(domain) {
        return Err(INVALID.to_owned());
    }
    Ok(raw.to_ascii_lowercase())
}

fn is_valid_local_part(local: &str) -> bool {
    const SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-";
    !local.is_empty()
        && local.len() <= 64
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(|c| c.is_ascii_alphanumeric() || SPECIALS.contains(c)))
}

fn is_valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        && labels.last().is_some_and(|tld| tld.chars().all(|c| c.is_ascii_alphabetic()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_of_allowed_characters_and_length_are_accepted() {
        for name in ["abc", "sefa", "Kerem_42", &"x".repeat(50)] {
            assert_eq!(parse_username(name).as_deref(), Ok(name), "{name}");
        }
    }

    #[test]
    fn usernames_too_short_too_long_or_with_other_characters_are_rejected() {
        for name in ["", "ab", &"x".repeat(51), "with space", "dash-ed", "dot.ted", "émile", "a@b"] {
            assert!(parse_username(name).is_err(), "{name}");
        }
    }

    #[test]
    fn passwords_are_bounded_by_characters_not_bytes() {
        assert!(parse_password("1234567").is_err());
        assert!(parse_password("12345678").is_ok());
        assert!(parse_password(&"é".repeat(128)).is_ok());
        assert!(parse_password(&"é".repeat(129)).is_err());
        assert!(parse_password("ééééééé").is_err());
    }

    #[test]
    fn emails_are_lower_cased() {
        assert_eq!(parse_email("Sefa@Example.COM").as_deref(), Ok("sefa@example.com"));
    }

    #[test]
    fn valid_emails_are_accepted() {
        for email in ["a@b.co", "first.last@sub.example.org", "x+tag@example.com", "o'neil@example.ie"] {
            assert!(parse_email(email).is_ok(), "{email}");
        }
    }

    #[test]
    fn invalid_emails_are_rejected() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let too_long = format!("a@{}.com", "b".repeat(250));
        for email in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@localhost",
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a b@example.com",
            "a@-example.com",
            "a@example-.com",
            "a@example.c0m",
            "a@exa_mple.com",
            "a@@example.com",
            "a@example..com",
            &long_local,
            &too_long,
        ] {
            assert!(parse_email(email).is_err(), "{email}");
        }
    }

    #[test]
    fn roles_parse_from_their_api_names_only() {
        assert_eq!("user".parse::<Role>(), Ok(Role::User));
        assert_eq!("admin".parse::<Role>(), Ok(Role::Admin));
        assert!("Admin".parse::<Role>().is_err());
        assert!("root".parse::<Role>().is_err());
        assert_eq!(Role::Admin.to_string(), "admin");
    }
}

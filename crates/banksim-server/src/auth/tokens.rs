//! Access tokens (JWT, HS256) and refresh tokens (random, stored hashed).

use std::sync::Arc;

use banksim_core::user::{Role, User};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{ApiError, ErrorCode};

/// Allowed clock difference between issuer and verifier, in seconds.
const CLOCK_LEEWAY_SECS: u64 = 5;
/// Random bytes in a refresh token (256 bits).
const REFRESH_TOKEN_BYTES: usize = 32;
/// Most verified access tokens remembered: a client sends the same token with every call until it expires, and
/// checking its signature and claims again is most of what authenticating a request costs.
const VERIFIED_TOKENS_MAX: u64 = 10_000;

/// What a token is for; only `access` tokens authorise API calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Authorises API calls for a short time.
    Access,
    /// Obtains new tokens. (Ours are opaque, but a JWT claiming to be one must still be refused.)
    Refresh,
}

/// The claims of an access token, as API.md lists them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user's id (also in `sub`).
    pub user_id: Uuid,
    /// The user's name when the token was issued.
    pub username: String,
    /// The user's email when the token was issued.
    pub email: String,
    /// The user's role when the token was issued (the server checks the current one).
    pub role: Role,
    /// Must be `access`.
    #[serde(rename = "type")]
    pub kind: TokenKind,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Subject: the user id.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Not valid before, Unix seconds.
    pub nbf: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Issued at, Unix microseconds: `iat` has whole seconds, and a session revoked within the second a token was
    /// issued must still tell whether the token came before or after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat_us: Option<i64>,
    /// Unique token id.
    pub jti: Uuid,
}

impl AccessClaims {
    /// Whether the token was issued at or before `instant` (a revocation of its user's sessions).
    pub fn issued_by(&self, instant: DateTime<Utc>) -> bool {
        self.iat_us.unwrap_or(self.iat.saturating_mul(1_000_000)) <= instant.timestamp_micros()
    }
}

/// Issues and checks access tokens with one pinned algorithm (HS256), issuer and audience.
#[derive(Clone)]
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    access_ttl: chrono::Duration,
    /// Tokens that passed every check, by their text, until they expire.
    verified: moka::sync::Cache<String, Arc<AccessClaims>>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer").field("issuer", &self.issuer).field("audience", &self.audience).finish()
    }
}

impl TokenIssuer {
    /// An issuer signing with `secret`.
    pub fn new(secret: &[u8], issuer: &str, audience: &str, access_ttl: std::time::Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = CLOCK_LEEWAY_SECS;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            access_ttl: chrono::Duration::from_std(access_ttl).unwrap_or(chrono::Duration::minutes(15)),
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_TOKENS_MAX)
                .time_to_live(access_ttl + std::time::Duration::from_secs(CLOCK_LEEWAY_SECS))
                .build(),
        }
    }

    /// Seconds an access token lives (`expires_in`).
    pub fn access_ttl_secs(&self) -> i64 {
        self.access_ttl.num_seconds()
    }

    /// A signed access token for `user`, issued at `now`.
    pub fn issue_access(&self, user: &User, now: DateTime<Utc>) -> Result<String, ApiError> {
        let claims = AccessClaims {
            user_id: user.id,
            username: user.username.clone(),
            email: user.email.clone(),
            role: user.role,
            kind: TokenKind::Access,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user.id.to_string(),
            exp: (now + self.access_ttl).timestamp(),
            nbf: now.timestamp(),
            iat: now.timestamp(),
            iat_us: Some(now.timestamp_micros()),
            jti: Uuid::new_v4(),
        };
        self.sign(&claims)
    }

    /// Signs arbitrary claims with this issuer's key (tests use it to forge expired or mistyped tokens).
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding).map_err(ApiError::internal)
    }

    /// The claims of a valid access token: signed by us with HS256, unexpired, for our issuer and audience, of
    /// type `access`. Anything else is `unauthorized` (or `token_expired`). A token seen before is not checked
    /// again, only its expiry (with the same leeway).
    pub fn verify_access(&self, token: &str) -> Result<Arc<AccessClaims>, ApiError> {
        if let Some(claims) = self.verified.get(token) {
            return unexpired(claims, jsonwebtoken::get_current_timestamp());
        }
        let claims = Arc::new(self.check_access(token)?);
        self.verified.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }

    /// Every check of [`TokenIssuer::verify_access`], from the token's text.
    fn check_access(&self, token: &str) -> Result<AccessClaims, ApiError> {
        let data =
            jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => ApiError::new(ErrorCode::TokenExpired),
                    _ => ApiError::new(ErrorCode::Unauthorized).with_message("invalid access token"),
                }
            })?;
        if data.claims.kind != TokenKind::Access || data.claims.sub != data.claims.user_id.to_string() {
            return Err(ApiError::new(ErrorCode::Unauthorized).with_message("not an access token"));
        }
        Ok(data.claims)
    }
}

/// `claims` while they have not expired at `now` (Unix seconds), by the rule `jsonwebtoken` applies.
fn unexpired(claims: Arc<AccessClaims>, now: u64) -> Result<Arc<AccessClaims>, ApiError> {
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    if claims.exp.saturating_add(CLOCK_LEEWAY_SECS as i64) < now {
        return Err(ApiError::new(ErrorCode::TokenExpired));
    }
    Ok(claims)
}

/// A new refresh token: the text handed to the client once, and the hash that is stored.
#[derive(Debug, Clone)]
pub struct RefreshToken {
    /// URL-safe text of 256 random bits.
    pub token: String,
    /// SHA-256 of `token`.
    pub hash: Vec<u8>,
}

impl RefreshToken {
    /// A fresh random token.
    pub fn generate() -> Self {
        let mut bytes = [0u8; REFRESH_TOKEN_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let hash = Self::hash(&token);
        Self { token, hash }
    }

    /// The stored form of a presented token.
    pub fn hash(token: &str) -> Vec<u8> {
        Sha256::digest(token.as_bytes()).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(&[7u8; 32], "banksim", "banksim-api", std::time::Duration::from_secs(900))
    }

    fn user() -> User {
        let now = Utc::now();
        User {
            id: Uuid::new_v4(),
            username: "sefa".into(),
            email: "sefa@example.com".into(),
            role: Role::User,
            is_active: true,
            created_at: now,
            updated_at: now,
            sessions_revoked_at: None,
        }
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let user = user();
        let token = issuer().issue_access(&user, Utc::now()).expect("issue");
        let claims = issuer().verify_access(&token).expect("verify");
        assert_eq!(claims.user_id, user.id);
        assert_eq!(claims.kind, TokenKind::Access);
        assert_eq!(claims.exp - claims.iat, 900);
    }

    #[test]
    fn tokens_of_another_key_issuer_or_audience_are_refused() {
        let token = issuer().issue_access(&user(), Utc::now()).expect("issue");
        let ttl = std::time::Duration::from_secs(900);
        for other in [
            TokenIssuer::new(&[8u8; 32], "banksim", "banksim-api", ttl),
            TokenIssuer::new(&[7u8; 32], "evil", "banksim-api", ttl),
            TokenIssuer::new(&[7u8; 32], "banksim", "other-api", ttl),
        ] {
            assert_eq!(other.verify_access(&token).expect_err("refused").code(), ErrorCode::Unauthorized);
        }
    }

    #[test]
    fn expired_tokens_are_refused_as_expired() {
        let token = issuer().issue_access(&user(), Utc::now() - chrono::Duration::hours(1)).expect("issue");
        assert_eq!(issuer().verify_access(&token).expect_err("expired").code(), ErrorCode::TokenExpired);
    }

    #[test]
    fn a_verified_token_is_remembered_until_it_expires_and_a_refused_one_is_not() {
        let issuer = issuer();
        let token = issuer.issue_access(&user(), Utc::now()).expect("issue");
        let first = issuer.verify_access(&token).expect("verify");
        let again = issuer.verify_access(&token).expect("verify again");
        assert!(Arc::ptr_eq(&first, &again), "the second call answers from memory");
        let last_second = u64::try_from(first.exp).expect("positive") + CLOCK_LEEWAY_SECS;
        assert!(unexpired(first.clone(), last_second).is_ok());
        let after = unexpired(first.clone(), last_second + 1).expect_err("expired");
        assert_eq!(after.code(), ErrorCode::TokenExpired);
        // A remembered token whose time has passed is refused by `verify_access` itself.
        let lapsed = AccessClaims { exp: Utc::now().timestamp() - CLOCK_LEEWAY_SECS as i64 - 1, ..(*first).clone() };
        issuer.verified.insert(token.clone(), Arc::new(lapsed));
        assert_eq!(issuer.verify_access(&token).expect_err("lapsed").code(), ErrorCode::TokenExpired);

        let expired = issuer.issue_access(&user(), Utc::now() - chrono::Duration::hours(1)).expect("issue");
        for _ in 0..2 {
            assert_eq!(issuer.verify_access(&expired).expect_err("expired").code(), ErrorCode::TokenExpired);
        }
        assert!(issuer.verified.get(expired.as_str()).is_none());
        let tampered = format!("{token}x");
        assert_eq!(issuer.verify_access(&tampered).expect_err("tampered").code(), ErrorCode::Unauthorized);
    }

    #[test]
    fn a_token_is_revoked_by_a_revocation_at_or_after_its_issue_to_the_microsecond() {
        let issued = Utc::now();
        let claims = issuer().verify_access(&issuer().issue_access(&user(), issued).expect("issue")).expect("verify");
        assert!(claims.issued_by(issued));
        assert!(claims.issued_by(issued + chrono::Duration::microseconds(1)));
        assert!(!claims.issued_by(issued - chrono::Duration::microseconds(1)), "a later session survives");
    }

    #[test]
    fn refresh_tokens_are_random_and_hash_stably() {
        let (a, b) = (RefreshToken::generate(), RefreshToken::generate());
        assert_ne!(a.token, b.token);
        assert_eq!(RefreshToken::hash(&a.token), a.hash);
        assert_eq!(a.hash.len(), 32);
    }
}

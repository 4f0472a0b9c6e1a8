//! Authentication: password hashing, access tokens, refresh tokens, and the extractors that let handlers ask
//! "who is calling?".

mod extract;
mod password;
mod tokens;

pub(crate) use extract::bearer;
pub use extract::{AdminUser, AuthUser, CallerSlot, MaybeAuthUser};
pub use password::PasswordHasher;
pub use tokens::{AccessClaims, RefreshToken, TokenIssuer, TokenKind};

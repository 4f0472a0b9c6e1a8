//! Errors of the domain layer: broken business rules, with no notion of HTTP.

use serde::Serialize;

/// One invalid field of an input, reported to the caller next to every other invalid field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field's name as the client spelled it (`email`, `to_user_id`).
    pub field: String,
    /// What is wrong with it, in words a client can show to a person.
    pub message: String,
}

impl FieldError {
    /// An error for `field` saying `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// A broken domain rule.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CoreError {
    /// One or more fields of an input are invalid; every invalid field is listed.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
}

/// Collects every invalid field of an input before giving up, so a client learns all its mistakes at once.
#[derive(Debug, Default)]
pub struct Validation {
    errors: Vec<FieldError>,
}

impl Validation {
    /// A collector with no errors yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the value of a successful check, or records its message against `field`.
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.errors.push(FieldError::new(field, message))).ok()
    }

    /// Records a plain error against `field`.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// Whether no error has been recorded so far.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok(())` when every check passed, else every recorded error.
    pub fn finish(self) -> Result<(), CoreError> {
        if self.errors.is_empty() { Ok(()) } else { Err(CoreError::Validation(self.errors)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_reports_every_failed_field() {
        let mut v = Validation::new();
        assert_eq!(v.check("a", Ok::<_, String>(1)), Some(1));
        assert_eq!(v.check::<()>("b", Err("bad b".into())), None);
        v.add("c", "bad c");
        let Err(CoreError::Validation(errors)) = v.finish() else { panic!("expected errors") };
        assert_eq!(errors, vec![FieldError::new("b", "bad b"), FieldError::new("c", "bad c")]);
    }

    #[test]
    fn validation_without_errors_finishes_ok() {
        assert_eq!(Validation::new().finish(), Ok(()));
    }
}

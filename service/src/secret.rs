//! A setting that must never be printed: passwords, shared keys.
//!
//! Settings types derive `Debug` and get logged at start-up or in errors;
//! a `Secret` field keeps its value out of all of that. The value is reached
//! only through [`Secret::expose`], so every use is a deliberate one.

use std::fmt;
use std::str::FromStr;

/// A string that prints as `***`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that needs it (a login, a key).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"***\"")
        }
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Secret(value.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_never_shows_the_value() {
        let secret: Secret = "hunter2".parse().unwrap();
        assert_eq!(format!("{secret:?}"), "\"***\"");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(\"***\")");
        assert_eq!(secret.expose(), "hunter2");
        // An empty one says so: "no password set" is worth seeing.
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
    }
}

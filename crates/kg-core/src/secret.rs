//! [`Secret`]: a string that is never printed.
//!
//! Passwords and API keys travel through configuration structs that get
//! logged and debug-printed; wrapping them makes that safe by construction.
//! `Debug` and `Display` print `***`; the value comes out only through
//! [`Secret::expose`], at the one place that sends it (a Bolt handshake, an
//! `Authorization` header).
//!
//! ```
//! use kg_core::Secret;
//! let key = Secret::new("sk-live-123");
//! assert_eq!(format!("{key} {key:?}"), "*** Secret(***)");
//! assert_eq!(key.expose(), "sk-live-123");
//! ```

use std::fmt;

/// A string that is never printed: `Debug` and `Display` show `***`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_string())
    }
}

/// `url` with any user info (`user:password@`) replaced by `***@`, for
/// messages: a credential written into a URL never reaches a log.
///
/// ```
/// use kg_core::secret::redact_url;
/// assert_eq!(redact_url("https://bob:pw@example.com/v1"), "https://***@example.com/v1");
/// assert_eq!(redact_url("bolt://localhost:7687"), "bolt://localhost:7687");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}://***@{}", &url[..scheme_end], &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        for shown in [format!("{s}"), format!("{s:?}"), format!("{:?}", Some(&s))] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }

    #[test]
    fn user_info_is_redacted_wherever_it_sits() {
        for (url, want) in [
            ("http://k:secret@h:8080/v1", "http://***@h:8080/v1"),
            ("http://secret@h/", "http://***@h/"),
            (
                "bolt+s://neo4j:pw@db.example.com:7687",
                "bolt+s://***@db.example.com:7687",
            ),
            ("http://h/path@notuserinfo", "http://h/path@notuserinfo"),
            ("http://h:1/v1?x=a@b", "http://h:1/v1?x=a@b"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}

//! Errors at an API's edge: a client gets a generic answer, the log gets the whole cause.

use std::error::Error;
use std::fmt;

/// An error and its causes (`source()`, recursively) as one line, `outer: inner: innermost`,
/// for the log line written once at an API's edge. A cause whose message the previous one
/// already ends with (an error that prints its source as well as returning it) is not
/// repeated.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut previous = self.0.to_string();
        f.write_str(&previous)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let message = error.to_string();
            if !message.is_empty() && !previous.ends_with(&message) {
                write!(f, ": {message}")?;
            }
            previous = message;
            cause = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("innermost")]
    struct Innermost;

    #[derive(Debug, thiserror::Error)]
    #[error("middle: {0}")]
    struct Middle(#[source] Innermost);

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[test]
    fn every_cause_once() {
        let error = Outer(Middle(Innermost));
        assert_eq!(Chain(&error).to_string(), "outer: middle: innermost");
        assert_eq!(Chain(&Innermost).to_string(), "innermost");
    }
}

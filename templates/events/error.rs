{{ header }}
//! Errors of publishing, consuming and handling.

/// What can go wrong when publishing or running the subscriber.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The payload does not match the event's JSON Schema.
    Invalid {
        /// Event name.
        event: ::std::string::String,
        /// One message per violation, with its JSON pointer.
        errors: ::std::vec::Vec<::std::string::String>,
    },
    /// The event is not one this service publishes.
    UnknownEvent(::std::string::String),
    /// The payload could not be encoded.
    Encode(::serde_json::Error),
    /// The broker is unreachable or refused an operation.
    Broker(::std::string::String),
    /// The broker did not acknowledge a published message.
    NotConfirmed(::std::string::String),
    /// The database (outbox, inbox) failed.
    Database(::std::string::String),
}

impl ::std::fmt::Display for Error {
    fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
        match self {
            Error::Invalid { event, errors } => {
                write!(
                    f,
                    "`{event}` does not match its schema: {}",
                    errors.join("; ")
                )
            }
            Error::UnknownEvent(e) => write!(f, "`{e}` is not an event this service publishes"),
            Error::Encode(e) => write!(f, "cannot encode the event: {e}"),
            Error::Broker(e) => write!(f, "broker: {e}"),
            Error::NotConfirmed(e) => write!(f, "the broker did not confirm the message: {e}"),
            Error::Database(e) => write!(f, "database: {e}"),
        }
    }
}

impl ::std::error::Error for Error {}

impl ::std::convert::From<::serde_json::Error> for Error {
    fn from(e: ::serde_json::Error) -> Self {
        Error::Encode(e)
    }
}

/// The outcome of a failed handler.
///
/// `?` on any error makes it retryable; use [`HandlerError::permanent`] for
/// a failure that no retry can fix: the message goes to the dead-letter
/// queue at once.
#[derive(Debug)]
pub enum HandlerError {
    /// Try again later, with backoff, up to the catalog's `max_attempts`.
    Retryable(::std::boxed::Box<dyn ::std::error::Error + Send + Sync>),
    /// Never retry: dead-letter now.
    Permanent(::std::boxed::Box<dyn ::std::error::Error + Send + Sync>),
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn retryable(
        e: impl ::std::convert::Into<::std::boxed::Box<dyn ::std::error::Error + Send + Sync>>,
    ) -> Self {
        HandlerError::Retryable(e.into())
    }

    /// A failure no retry can fix.
    pub fn permanent(
        e: impl ::std::convert::Into<::std::boxed::Box<dyn ::std::error::Error + Send + Sync>>,
    ) -> Self {
        HandlerError::Permanent(e.into())
    }
}

impl ::std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
        match self {
            HandlerError::Retryable(e) => write!(f, "retryable: {e}"),
            HandlerError::Permanent(e) => write!(f, "permanent: {e}"),
        }
    }
}

impl<E: ::std::error::Error + Send + Sync + 'static> ::std::convert::From<E> for HandlerError {
    fn from(e: E) -> Self {
        HandlerError::Retryable(::std::boxed::Box::new(e))
    }
}

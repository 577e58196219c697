//! [`HandleError`]: why an operation asked through a [`Handle`](super::Handle) gave no result.

use crate::behaviour::{NoKnownPeers, ProvideError, PutValueError, StartProvideError};
use crate::routing::{QueryError, QueryFailure};
use crate::store::StoreError;

/// Why an operation asked through a [`Handle`](super::Handle) failed. `P` is what a failed
/// query had found when it stopped (see [`QueryFailure`]): the closest peers for lookups,
/// the providers for [`find_providers`](super::Handle::find_providers), how many peers stored
/// the record for writes and bootstrap; `()` for operations that run no query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError<P = ()> {
    /// The command queue holds [`Config::with_handle_queue`](crate::Config::with_handle_queue)
    /// commands the behaviour has not taken yet: nothing was asked. Returned at once, never
    /// waited for; try again once earlier operations were taken (the swarm is polled).
    #[error("the DHT handle's command queue is full")]
    QueueFull,
    /// The [`Behaviour`](crate::Behaviour) is gone (its swarm was dropped) before it answered.
    #[error("the DHT behaviour is gone")]
    Closed,
    /// The application cancelled the query through
    /// [`Behaviour::cancel_query`](crate::Behaviour::cancel_query).
    #[error("the query was cancelled")]
    Cancelled,
    /// [`Behaviour::provide`](crate::Behaviour::provide) refused at once.
    #[error(transparent)]
    Provide(#[from] ProvideError),
    /// [`Behaviour::put_value`](crate::Behaviour::put_value) refused the record.
    #[error(transparent)]
    PutValue(#[from] PutValueError),
    /// [`Behaviour::start_providing`](crate::Behaviour::start_providing) refused.
    #[error(transparent)]
    StartProvide(#[from] StartProvideError),
    /// The store failed ([`stop_providing`](crate::Behaviour::stop_providing),
    /// [`provided_keys`](crate::Behaviour::provided_keys)).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// [`Behaviour::bootstrap`](crate::Behaviour::bootstrap) has no peer to start from.
    #[error(transparent)]
    NoKnownPeers(#[from] NoKnownPeers),
    /// The query ran and failed: why, with what it had found (as
    /// [`Event::QueryFinished`](crate::Event::QueryFinished) reports it).
    #[error(transparent)]
    Query(#[from] QueryFailure<P>),
}

impl<P> HandleError<P> {
    /// The failed query, with its partial result, when this is [`HandleError::Query`].
    pub fn failure(&self) -> Option<&QueryFailure<P>> {
        match self {
            HandleError::Query(failure) => Some(failure),
            _ => None,
        }
    }

    /// Why the query failed, when this is [`HandleError::Query`].
    pub fn query_error(&self) -> Option<&QueryError> {
        self.failure().map(|f| &f.error)
    }

    /// The same error with the partial result of a failed query replaced by `map`'s.
    pub fn map_found<Q>(self, map: impl FnOnce(P) -> Q) -> HandleError<Q> {
        match self {
            HandleError::QueueFull => HandleError::QueueFull,
            HandleError::Closed => HandleError::Closed,
            HandleError::Cancelled => HandleError::Cancelled,
            HandleError::Provide(e) => HandleError::Provide(e),
            HandleError::PutValue(e) => HandleError::PutValue(e),
            HandleError::StartProvide(e) => HandleError::StartProvide(e),
            HandleError::Store(e) => HandleError::Store(e),
            HandleError::NoKnownPeers(e) => HandleError::NoKnownPeers(e),
            HandleError::Query(QueryFailure { error, found }) => HandleError::Query(QueryFailure {
                error,
                found: map(found),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_failure_keeps_what_it_found() {
        let error: HandleError<usize> = QueryFailure {
            error: QueryError::Timeout,
            found: 3,
        }
        .into();
        assert_eq!(error.query_error(), Some(&QueryError::Timeout));
        assert_eq!(error.failure().map(|f| f.found), Some(3));
        assert_eq!(error.to_string(), "query timed out");
        let mapped = error.map_found(|n| vec![(); n]);
        assert_eq!(mapped.failure().map(|f| f.found.len()), Some(3));
        let boxed: Box<dyn std::error::Error> = Box::new(HandleError::<()>::QueueFull);
        assert!(boxed.to_string().contains("full"));
        assert_eq!(HandleError::<()>::Closed.failure(), None);
    }
}

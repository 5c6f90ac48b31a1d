//! Per-upstream state: one value per `scheme://host:port`, shared by every clone of a client.
//!
//! The circuit breaker and the hedge tracker both keep what they learn per upstream host: a
//! host that is down says nothing about another, and latencies differ by host. The lookup
//! borrows the origin straight out of the URL, so a request costs one short lock and no
//! allocation once its host is known (a URL with user-info costs one: the key leaves it out),
//! and no hashing when it is the host asked for last.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use url::{Position, Url};

/// More distinct hosts than this and the memory starts over (a client addressing jobs by
/// full URL on many hosts must not grow without bound).
const MAX_HOSTS: usize = 1024;

/// One `T` per upstream origin, made on first use.
pub(crate) struct PerHost<T> {
    hosts: Mutex<Hosts<T>>,
    make: Box<dyn Fn(&str) -> T + Send + Sync>,
}

struct Hosts<T> {
    by_origin: HashMap<Arc<str>, Arc<T>>,
    /// The origin asked for last, checked before hashing: a client usually talks to one host.
    last: Option<(Arc<str>, Arc<T>)>,
}

impl<T> PerHost<T> {
    /// `make` builds the value for a new host from its label (`host:port`).
    pub(crate) fn new(make: impl Fn(&str) -> T + Send + Sync + 'static) -> Self {
        PerHost {
            hosts: Mutex::new(Hosts {
                by_origin: HashMap::new(),
                last: None,
            }),
            make: Box::new(make),
        }
    }

    /// The value of the URL's origin.
    pub(crate) fn get(&self, url: &Url) -> Arc<T> {
        let origin = origin(url);
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((last, value)) = &hosts.last
            && **last == *origin
        {
            return Arc::clone(value);
        }
        let (key, value) = match hosts.by_origin.get_key_value(origin.as_ref()) {
            Some((key, value)) => (Arc::clone(key), Arc::clone(value)),
            None => {
                if hosts.by_origin.len() >= MAX_HOSTS {
                    hosts.by_origin.clear();
                }
                let value = Arc::new((self.make)(label(url)));
                let key: Arc<str> = Arc::from(origin.as_ref());
                hosts.by_origin.insert(Arc::clone(&key), Arc::clone(&value));
                (key, value)
            }
        };
        hosts.last = Some((key, Arc::clone(&value)));
        value
    }

    /// The value of the URL's origin, if it was ever made.
    pub(crate) fn peek(&self, url: &Url) -> Option<Arc<T>> {
        let origin = origin(url);
        let hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        hosts.by_origin.get(origin.as_ref()).map(Arc::clone)
    }
}

impl<T> fmt::Debug for PerHost<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("PerHost")
            .field("hosts", &hosts.by_origin.len())
            .finish_non_exhaustive()
    }
}

/// `scheme://host:port` as written in the URL, without user-info: credentials in a URL
/// neither split an upstream's memory nor end up in a key.
fn origin(url: &Url) -> Cow<'_, str> {
    if url.username().is_empty() && url.password().is_none() {
        Cow::Borrowed(&url[..Position::AfterPort])
    } else {
        Cow::Owned(format!(
            "{}{}",
            &url[..Position::BeforeUsername],
            &url[Position::BeforeHost..Position::AfterPort]
        ))
    }
}

/// `host:port` as written in the URL (the port only when it is explicit): the metric label.
pub(crate) fn label(url: &Url) -> &str {
    &url[Position::BeforeHost..Position::AfterPort]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_value_per_origin() {
        let hosts = PerHost::new(|label| label.to_owned());
        let a = Url::parse("http://127.0.0.1:8080/v1/jobs/a/status").unwrap();
        let b = Url::parse("http://127.0.0.1:8080/status?job=b").unwrap();
        let c = Url::parse("http://127.0.0.1:9090/status").unwrap();
        let d = Url::parse("https://127.0.0.1:8080/status").unwrap();
        assert!(Arc::ptr_eq(&hosts.get(&a), &hosts.get(&b)));
        assert!(!Arc::ptr_eq(&hosts.get(&a), &hosts.get(&c)));
        assert!(
            !Arc::ptr_eq(&hosts.get(&a), &hosts.get(&d)),
            "scheme matters"
        );
        assert_eq!(*hosts.get(&a), "127.0.0.1:8080");
        let f = Url::parse("http://user:pw@127.0.0.1:8080/status").unwrap();
        assert!(Arc::ptr_eq(&hosts.get(&a), &hosts.get(&f)), "user-info");
        assert_eq!(label(&f), "127.0.0.1:8080");
        let e = Url::parse("http://example.com/status").unwrap();
        assert_eq!(*hosts.get(&e), "example.com");
        assert!(hosts.peek(&Url::parse("http://other/").unwrap()).is_none());
    }
}

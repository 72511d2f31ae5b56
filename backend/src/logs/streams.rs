//! Places for live-tail streams (`GET /api/logs/stream`): at most `log.streams_max` open at
//! once, and at most `log.streams_per_operator_max` of them held by one operator (a session's
//! or an API key's actor), so one viewer — many tabs, a looping script — cannot take them all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct StreamPlaces {
    all: Arc<Semaphore>,
    per_operator_max: usize,
    /// Places held per operator; an operator holding none has no entry (so at most
    /// `streams_max` entries).
    held: Arc<Mutex<HashMap<String, usize>>>,
}

/// Why no place was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoPlace {
    #[error("this operator holds log.streams_per_operator_max live log streams")]
    Operator,
    #[error("as many live log streams are open as log.streams_max allows")]
    Everyone,
}

/// One stream's place, given back when dropped.
pub struct StreamPlace {
    _all: OwnedSemaphorePermit,
    operator: String,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

impl StreamPlaces {
    pub fn new(streams_max: usize, per_operator_max: usize) -> Self {
        Self {
            all: Arc::new(Semaphore::new(streams_max)),
            per_operator_max,
            held: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A place for a stream of `operator`'s.
    pub fn take(&self, operator: &str) -> Result<StreamPlace, NoPlace> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.get(operator).copied().unwrap_or(0) >= self.per_operator_max {
            return Err(NoPlace::Operator);
        }
        let all = Arc::clone(&self.all)
            .try_acquire_owned()
            .map_err(|_| NoPlace::Everyone)?;
        *held.entry(operator.to_owned()).or_insert(0) += 1;
        Ok(StreamPlace {
            _all: all,
            operator: operator.to_owned(),
            held: Arc::clone(&self.held),
        })
    }
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.operator) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.operator);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_operator_holds_at_most_its_share_and_everyone_the_total() {
        let places = StreamPlaces::new(3, 2);
        let a1 = places.take("admin:a").unwrap();
        let _a2 = places.take("admin:a").unwrap();
        assert_eq!(places.take("admin:a").err(), Some(NoPlace::Operator));
        let _b1 = places.take("key:b").unwrap();
        assert_eq!(places.take("key:c").err(), Some(NoPlace::Everyone));
        drop(a1);
        let _a3 = places.take("admin:a").unwrap();
        assert_eq!(places.take("admin:a").err(), Some(NoPlace::Operator));
        assert_eq!(places.held.lock().unwrap().len(), 2, "{:?}", places.held);
    }
}

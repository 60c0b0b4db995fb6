//! How many queries each client connection may have answered. A query is unsigned and
//! costs a ledger read on the consensus thread, so a connection gets a budget: a
//! bucket of `burst` queries refilled at `per_sec` (issue 23, item 5). A query over
//! budget is dropped and reported as a strike, so a flooding connection is soon
//! disconnected and its address refused for a while.

use pbft_transport::ClientId;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The query budgets of the open client connections.
pub struct QueryBudget {
    per_sec: u32,
    burst: u32,
    buckets: HashMap<ClientId, (f64, Instant)>,
}

impl QueryBudget {
    /// Budgets of `burst` queries refilled at `per_sec` per connection.
    pub fn new(per_sec: u32, burst: u32) -> QueryBudget {
        QueryBudget {
            per_sec,
            burst: burst.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Whether `conn` may have a query answered at `now` (and spends it if so).
    pub fn allow(&mut self, conn: ClientId, now: Instant) -> bool {
        let burst = f64::from(self.burst);
        let (tokens, last) = self.buckets.entry(conn).or_insert((burst, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * f64::from(self.per_sec)).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// `conn` closed.
    pub fn closed(&mut self, conn: ClientId) {
        self.buckets.remove(&conn);
    }

    /// Connections with a budget (for tests and metrics).
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no connection has a budget.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// How long a connection that spent its budget waits for its next query.
    pub fn refill(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.per_sec.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flood gets the burst and then the refill rate; another connection keeps its
    /// own budget; a closed connection's budget is forgotten.
    #[test]
    fn a_flood_of_queries_gets_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = QueryBudget::new(10, 20);
        let answered = (0..1000).filter(|_| b.allow(ClientId(1), t0)).count();
        assert_eq!(answered, 20, "the burst, at once");
        // one second later: ten more
        let t1 = t0 + Duration::from_secs(1);
        let answered = (0..1000).filter(|_| b.allow(ClientId(1), t1)).count();
        assert_eq!(answered, 10);
        assert!(
            b.allow(ClientId(2), t1),
            "another connection is not held back"
        );
        b.closed(ClientId(1));
        b.closed(ClientId(2));
        assert!(b.is_empty());
        assert_eq!(b.refill(), Duration::from_millis(100));
    }
}

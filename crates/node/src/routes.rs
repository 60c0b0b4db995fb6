//! Where a client's replies go. Any verified request names its client, and every
//! validator sees every client's signed requests inside batches, so whoever holds one
//! can replay it on a connection of its own: the route for a client must not move to
//! whoever replayed last (issue 23, item 4).
//!
//! The rule: a client's replies go to each of up to [`MAX_ROUTES`] open connections.
//! A request with a higher request id than any seen from the client before (its next
//! request: only the client can sign it, and it sends it first) adds its connection,
//! evicting the one used least recently if all are taken. A request at or below that
//! id (a retransmission, or a replay) adds its connection only while there is room: a
//! replayer can take copies of the replies, never the client's own route. A closed
//! connection leaves every route, so a client that reconnects and retransmits is
//! routed again if there is room.
//!
//! Known gap (docs/protocol.md): a backup sees the client's next request first inside a
//! pre-prepare, so a stranger replaying it there early counts as fresh and can evict
//! the client's connection; routing by connections authenticated with the account key
//! is the fix.

use pbft_crypto::PublicKey;
use pbft_transport::ClientId;
use std::collections::HashMap;

/// Most connections a client's replies are sent to.
pub const MAX_ROUTES: usize = 4;

#[derive(Default)]
struct Route {
    /// Most recently used first.
    conns: Vec<ClientId>,
    /// The highest request id seen from the client.
    highest: u64,
}

/// Reply routes of every client, and the clients each connection is a route of.
#[derive(Default)]
pub struct Routes {
    routes: HashMap<PublicKey, Route>,
    by_conn: HashMap<ClientId, Vec<PublicKey>>,
}

impl Routes {
    /// A verified request `request_id` of `client` arrived on `conn`.
    pub fn request(&mut self, client: PublicKey, request_id: u64, conn: ClientId) {
        let route = self.routes.entry(client).or_default();
        let fresh = request_id > route.highest;
        route.highest = route.highest.max(request_id);
        if let Some(i) = route.conns.iter().position(|c| *c == conn) {
            let c = route.conns.remove(i);
            route.conns.insert(0, c);
            return;
        }
        if route.conns.len() >= MAX_ROUTES {
            if !fresh {
                return;
            }
            if let Some(old) = route.conns.pop() {
                Self::unlink(&mut self.by_conn, old, &client);
            }
        }
        route.conns.insert(0, conn);
        self.by_conn.entry(conn).or_default().push(client);
    }

    /// The connections `client`'s replies go to.
    pub fn of(&self, client: &PublicKey) -> &[ClientId] {
        self.routes.get(client).map_or(&[], |r| r.conns.as_slice())
    }

    /// `conn` closed: it is no one's route any more.
    pub fn closed(&mut self, conn: ClientId) {
        let Some(clients) = self.by_conn.remove(&conn) else {
            return;
        };
        for client in clients {
            if let Some(route) = self.routes.get_mut(&client) {
                route.conns.retain(|c| *c != conn);
            }
        }
    }

    fn unlink(by_conn: &mut HashMap<ClientId, Vec<PublicKey>>, conn: ClientId, client: &PublicKey) {
        if let Some(list) = by_conn.get_mut(&conn) {
            list.retain(|k| k != client);
            if list.is_empty() {
                by_conn.remove(&conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbft_crypto::Keypair;

    fn client(i: u8) -> PublicKey {
        Keypair::from_seed(&[i; 32]).expect("key").public()
    }

    /// A stranger replays the client's latest request on connections of its own: the
    /// client's connection keeps getting the replies.
    #[test]
    fn a_replayed_request_does_not_take_the_clients_replies() {
        let mut r = Routes::default();
        let alice = client(1);
        r.request(alice, 7, ClientId(1));
        for stranger in 100..110 {
            r.request(alice, 7, ClientId(stranger));
            assert!(
                r.of(&alice).contains(&ClientId(1)),
                "after replay {stranger}"
            );
        }
        assert_eq!(r.of(&alice).len(), MAX_ROUTES, "copies are bounded");
        // an old request replayed is no better
        r.request(alice, 3, ClientId(200));
        assert!(r.of(&alice).contains(&ClientId(1)));
        assert!(!r.of(&alice).contains(&ClientId(200)));
    }

    /// The client's next request moves its connection first, and a reconnecting client
    /// is routed again once its old connection closed, even with an old request id.
    #[test]
    fn the_clients_own_connections_are_routed() {
        let mut r = Routes::default();
        let alice = client(1);
        r.request(alice, 1, ClientId(1));
        for stranger in 100..104 {
            r.request(alice, 1, ClientId(stranger));
        }
        r.request(alice, 2, ClientId(2));
        assert_eq!(
            r.of(&alice)[0],
            ClientId(2),
            "a fresh request is routed first"
        );
        assert!(r.of(&alice).len() <= MAX_ROUTES);
        r.closed(ClientId(2));
        assert!(!r.of(&alice).contains(&ClientId(2)));
        // reconnects on 3 and retransmits request 2: there is room again
        r.request(alice, 2, ClientId(3));
        assert!(r.of(&alice).contains(&ClientId(3)));
        // a connection closing leaves no trace in the index
        for c in r.of(&alice).to_vec() {
            r.closed(c);
        }
        assert!(r.of(&alice).is_empty());
        assert!(r.by_conn.is_empty());
    }

    /// Other clients' routes are their own.
    #[test]
    fn routes_are_per_client() {
        let mut r = Routes::default();
        let (alice, bob) = (client(1), client(2));
        r.request(alice, 1, ClientId(1));
        r.request(bob, 1, ClientId(2));
        r.request(bob, 1, ClientId(1));
        assert_eq!(r.of(&alice), &[ClientId(1)]);
        assert_eq!(r.of(&bob), &[ClientId(1), ClientId(2)]);
        r.closed(ClientId(1));
        assert!(r.of(&alice).is_empty());
        assert_eq!(r.of(&bob), &[ClientId(2)]);
    }
}

//! Where a client's replies go. Any verified request names its client, and every
//! validator sees every client's signed requests inside batches, so whoever holds one
//! can replay it on a connection of its own: the route for a client must not move to
//! whoever replayed last (issue 23, item 4).
//!
//! A connection bound to the client's account (its hello carried a signature by the
//! account key over that connection's TLS session, see the transport) is the client's
//! own, and a replayer cannot make one. So a client's replies go, first, to each of up
//! to [`MAX_ROUTES`] bound connections, from the moment each is admitted (a client
//! whose quiet connection was closed and redialed gets its next replies at once),
//! the most recently used first; no anonymous connection ever takes their place.
//!
//! Anonymous connections (status tools, relays) get copies under a weaker rule,
//! in a list of their own of up to [`MAX_ROUTES`]: a request with a higher request id
//! than any seen from the client before adds its connection, evicting the one used
//! least recently if all are taken; a request at or below that id (a retransmission,
//! or a replay) adds its connection only while there is room. A stranger who replays a
//! client's requests can take these copies, never the bound route. A closed connection
//! leaves every route.

use pbft_crypto::PublicKey;
use pbft_transport::ClientId;
use std::collections::HashMap;

/// Most connections of each kind (bound, anonymous) a client's replies are sent to.
pub const MAX_ROUTES: usize = 4;

#[derive(Default)]
struct Route {
    /// Connections bound to the client, most recently used first.
    bound: Vec<ClientId>,
    /// Anonymous connections, most recently used first.
    copies: Vec<ClientId>,
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
    /// A verified request `request_id` of `client` arrived on `conn`, which is bound to
    /// `client` if `bound`.
    pub fn request(&mut self, client: PublicKey, request_id: u64, conn: ClientId, bound: bool) {
        let route = self.routes.entry(client).or_default();
        let fresh = request_id > route.highest;
        route.highest = route.highest.max(request_id);
        let list = if bound {
            &mut route.bound
        } else {
            &mut route.copies
        };
        if let Some(i) = list.iter().position(|c| *c == conn) {
            let c = list.remove(i);
            list.insert(0, c);
            return;
        }
        if list.len() >= MAX_ROUTES {
            if !bound && !fresh {
                return;
            }
            if let Some(old) = list.pop() {
                Self::unlink(&mut self.by_conn, old, &client);
            }
        }
        list.insert(0, conn);
        self.by_conn.entry(conn).or_default().push(client);
    }

    /// `conn`, bound to `client`, was admitted: it is the client's route before it
    /// sends anything (a client whose connection was closed while it was quiet gets
    /// the replies to its next request at once).
    pub fn opened(&mut self, client: PublicKey, conn: ClientId) {
        let route = self.routes.entry(client).or_default();
        if route.bound.contains(&conn) {
            return;
        }
        if route.bound.len() >= MAX_ROUTES {
            if let Some(old) = route.bound.pop() {
                Self::unlink(&mut self.by_conn, old, &client);
            }
        }
        route.bound.insert(0, conn);
        self.by_conn.entry(conn).or_default().push(client);
    }

    /// The connections `client`'s replies go to: bound ones first.
    pub fn of(&self, client: &PublicKey) -> impl Iterator<Item = ClientId> + '_ {
        self.routes
            .get(client)
            .into_iter()
            .flat_map(|r| r.bound.iter().chain(r.copies.iter()).copied())
    }

    /// `conn` closed: it is no one's route any more.
    pub fn closed(&mut self, conn: ClientId) {
        let Some(clients) = self.by_conn.remove(&conn) else {
            return;
        };
        for client in clients {
            if let Some(route) = self.routes.get_mut(&client) {
                route.bound.retain(|c| *c != conn);
                route.copies.retain(|c| *c != conn);
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

    fn of(r: &Routes, k: &PublicKey) -> Vec<ClientId> {
        r.of(k).collect()
    }

    fn client(i: u8) -> PublicKey {
        Keypair::from_seed(&[i; 32]).expect("key").public()
    }

    /// A stranger replays the client's latest request on connections of its own: the
    /// client's connection keeps getting the replies.
    #[test]
    fn a_replayed_request_does_not_take_the_clients_replies() {
        let mut r = Routes::default();
        let alice = client(1);
        r.request(alice, 7, ClientId(1), false);
        for stranger in 100..110 {
            r.request(alice, 7, ClientId(stranger), false);
            assert!(
                of(&r, &alice).contains(&ClientId(1)),
                "after replay {stranger}"
            );
        }
        assert_eq!(of(&r, &alice).len(), MAX_ROUTES, "copies are bounded");
        // an old request replayed is no better
        r.request(alice, 3, ClientId(200), false);
        assert!(of(&r, &alice).contains(&ClientId(1)));
        assert!(!of(&r, &alice).contains(&ClientId(200)));
    }

    /// The client's next request moves its connection first, and a reconnecting client
    /// is routed again once its old connection closed, even with an old request id.
    #[test]
    fn the_clients_own_connections_are_routed() {
        let mut r = Routes::default();
        let alice = client(1);
        r.request(alice, 1, ClientId(1), false);
        for stranger in 100..104 {
            r.request(alice, 1, ClientId(stranger), false);
        }
        r.request(alice, 2, ClientId(2), false);
        assert_eq!(
            of(&r, &alice)[0],
            ClientId(2),
            "a fresh request is routed first"
        );
        assert!(of(&r, &alice).len() <= MAX_ROUTES);
        r.closed(ClientId(2));
        assert!(!of(&r, &alice).contains(&ClientId(2)));
        // reconnects on 3 and retransmits request 2: there is room again
        r.request(alice, 2, ClientId(3), false);
        assert!(of(&r, &alice).contains(&ClientId(3)));
        // a connection closing leaves no trace in the index
        for c in of(&r, &alice) {
            r.closed(c);
        }
        assert!(of(&r, &alice).is_empty());
        assert!(r.by_conn.is_empty());
    }

    /// The gap the anonymous rule leaves: a backup sees the client's next request
    /// first inside a pre-prepare, so a stranger replaying it there counts as fresh.
    /// A connection bound to the client is its route whatever strangers replay, and
    /// reconnecting with an old request id routes it again at once.
    #[test]
    fn a_bound_connection_keeps_the_replies_whatever_strangers_replay() {
        let mut r = Routes::default();
        let alice = client(1);
        r.request(alice, 1, ClientId(1), true);
        // strangers see request 2 before alice's own copy arrives
        for stranger in 100..110 {
            r.request(alice, 2, ClientId(stranger), false);
            r.request(alice, 3 + stranger, ClientId(stranger), false);
        }
        r.request(alice, 2, ClientId(1), true);
        let routes = of(&r, &alice);
        assert_eq!(routes[0], ClientId(1), "the bound connection comes first");
        assert_eq!(
            routes.len(),
            1 + MAX_ROUTES,
            "one bound, the copies bounded"
        );
        // alice reconnects and retransmits an old request: routed at once
        r.closed(ClientId(1));
        assert!(!of(&r, &alice).contains(&ClientId(1)));
        r.request(alice, 2, ClientId(2), true);
        assert_eq!(of(&r, &alice)[0], ClientId(2));
        // more bound connections than the bound list holds: the least recent leaves
        for c in 3..3 + MAX_ROUTES as u64 {
            r.request(alice, 2, ClientId(c), true);
        }
        let routes = of(&r, &alice);
        assert!(!routes.contains(&ClientId(2)));
        assert_eq!(routes[0], ClientId(2 + MAX_ROUTES as u64));
        for c in routes {
            r.closed(c);
        }
        assert!(r.by_conn.is_empty());
    }

    /// A bound connection is a route from its admission, before any request, and the
    /// bound list stays bounded.
    #[test]
    fn a_bound_connection_is_a_route_from_its_admission() {
        let mut r = Routes::default();
        let (alice, bob) = (client(1), client(2));
        r.opened(alice, ClientId(1));
        r.opened(bob, ClientId(1));
        assert_eq!(of(&r, &alice), &[ClientId(1)]);
        assert_eq!(of(&r, &bob), &[ClientId(1)]);
        r.opened(alice, ClientId(1));
        assert_eq!(of(&r, &alice), &[ClientId(1)], "once");
        for c in 2..10 {
            r.opened(alice, ClientId(c));
        }
        assert_eq!(of(&r, &alice).len(), MAX_ROUTES);
        assert_eq!(of(&r, &alice)[0], ClientId(9));
        assert_eq!(of(&r, &bob), &[ClientId(1)]);
        for c in 1..10 {
            r.closed(ClientId(c));
        }
        assert!(r.by_conn.is_empty());
    }

    /// Other clients' routes are their own.
    #[test]
    fn routes_are_per_client() {
        let mut r = Routes::default();
        let (alice, bob) = (client(1), client(2));
        r.request(alice, 1, ClientId(1), false);
        r.request(bob, 1, ClientId(2), false);
        r.request(bob, 1, ClientId(1), false);
        assert_eq!(of(&r, &alice), &[ClientId(1)]);
        assert_eq!(of(&r, &bob), &[ClientId(1), ClientId(2)]);
        r.closed(ClientId(1));
        assert!(of(&r, &alice).is_empty());
        assert_eq!(of(&r, &bob), &[ClientId(2)]);
    }
}

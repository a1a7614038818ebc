//! The runtime's half of "persist before send": a message an engine sends after asking for a
//! persist may leave only once that persist is durable. The gate remembers the newest persist
//! issued and the newest known durable, lets sends through when nothing is pending, and holds
//! the rest, in order, until their persist completes. The simulator and the server share it.

use std::collections::VecDeque;

use crate::engine::PersistId;
use crate::ids::NodeId;

/// Sends waiting for the persists issued before them.
#[derive(Debug)]
pub struct SendGate<M> {
    issued: u64,
    durable: u64,
    /// (persist that must be durable first, to, message), oldest first.
    held: VecDeque<(u64, NodeId, M)>,
}

impl<M> Default for SendGate<M> {
    fn default() -> Self {
        SendGate {
            issued: 0,
            durable: 0,
            held: VecDeque::new(),
        }
    }
}

impl<M> SendGate<M> {
    /// The engine asked for persist `id`.
    pub fn issued(&mut self, id: PersistId) {
        self.issued = id.0;
    }

    /// A send the engine asked for: returned when it may leave now, held otherwise.
    pub fn send(&mut self, to: NodeId, message: M) -> Option<(NodeId, M)> {
        if self.issued > self.durable {
            self.held.push_back((self.issued, to, message));
            None
        } else {
            Some((to, message))
        }
    }

    /// Every persist through `id` is durable: the held sends now free to leave, in order.
    pub fn durable(&mut self, id: PersistId) -> Vec<(NodeId, M)> {
        self.durable = id.0;
        let mut released = Vec::new();
        while self
            .held
            .front()
            .is_some_and(|(needs, _, _)| *needs <= id.0)
        {
            released.extend(self.held.pop_front().map(|(_, to, m)| (to, m)));
        }
        released
    }

    /// How many sends wait.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Forgets everything, for a node that crashed or restarts: held sends never leave.
    pub fn reset(&mut self) {
        *self = SendGate::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_wait_for_the_persists_issued_before_them_and_leave_in_order() {
        let mut gate = SendGate::default();
        assert_eq!(gate.send(NodeId(2), "free"), Some((NodeId(2), "free")));
        gate.issued(PersistId(1));
        assert_eq!(gate.send(NodeId(2), "a"), None);
        gate.issued(PersistId(2));
        assert_eq!(gate.send(NodeId(3), "b"), None);
        assert_eq!(gate.send(NodeId(2), "c"), None);
        assert_eq!(gate.held(), 3);
        assert_eq!(gate.durable(PersistId(1)), vec![(NodeId(2), "a")]);
        assert_eq!(
            gate.send(NodeId(2), "d"),
            None,
            "persist 2 is still pending"
        );
        assert_eq!(
            gate.durable(PersistId(2)),
            vec![(NodeId(3), "b"), (NodeId(2), "c"), (NodeId(2), "d")]
        );
        assert_eq!(gate.send(NodeId(2), "e"), Some((NodeId(2), "e")));
        gate.issued(PersistId(3));
        assert_eq!(gate.send(NodeId(2), "lost"), None);
        gate.reset();
        assert_eq!(gate.held(), 0);
        assert_eq!(gate.send(NodeId(2), "after"), Some((NodeId(2), "after")));
    }
}

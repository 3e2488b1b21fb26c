//! The plan: who each connection is (its id, room, role) and what every room expects.
//!
//! A plan is a pure function of the scenario and the agent id: connection `i` of agent `a` is
//! named `a{a}.c{i}`; the first `rooms × members_per_room` connections are members, assigned to
//! rooms round-robin so consecutive connections (and, later, agents) spread over every room; the
//! first `senders_per_room` members of each room send; a seeded share of the other members are
//! slow consumers that stop reading. Nothing here does I/O, so it is unit-tested exactly.

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::scenario::Scenario;

/// What a connection does during the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// In a room, sends on the schedule and reads everything.
    Sender,
    /// In a room, reads everything.
    Receiver,
    /// In a room, stops reading once joined: exercises the server's slow-consumer policy.
    Slow,
    /// In no room: holds the connection open (memory per connection).
    Idle,
}

/// One connection of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnPlan {
    /// Index within this agent (the `c` part of the id).
    pub index: u32,
    /// Room index, for members.
    pub room: Option<u32>,
    /// What it does.
    pub role: Role,
    /// For senders: which of the room's senders it is (0-based), used by receivers to track
    /// sequence numbers per sender.
    pub sender_slot: Option<u32>,
}

/// The whole plan for one agent.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Agent id (the `a` part of every connection id).
    pub agent: u32,
    /// Every connection, indexed by `index`.
    pub conns: Vec<ConnPlan>,
    /// Number of rooms.
    pub rooms: u32,
    /// Senders per room.
    pub senders_per_room: u32,
}

impl Plan {
    /// Builds the plan of agent `agent` for the scenario.
    pub fn new(scenario: &Scenario, agent: u32) -> Plan {
        let rooms = scenario.rooms;
        let members = u64::from(rooms) * u64::from(scenario.members_per_room);
        let mut conns: Vec<ConnPlan> = (0..scenario.connections)
            .map(|i| {
                if u64::from(i) < members {
                    let room = i % rooms;
                    let slot = i / rooms; // position of this member within its room
                    let sender = slot < scenario.senders_per_room;
                    ConnPlan {
                        index: i,
                        room: Some(room),
                        role: if sender { Role::Sender } else { Role::Receiver },
                        sender_slot: sender.then_some(slot),
                    }
                } else {
                    ConnPlan {
                        index: i,
                        room: None,
                        role: Role::Idle,
                        sender_slot: None,
                    }
                }
            })
            .collect();
        // Slow consumers: a seeded choice among each room's receivers, leaving at least one
        // normal receiver per room (the scenario validation guarantees there is room for it).
        if scenario.slow_consumer_share > 0.0 && rooms > 0 {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(scenario.seed ^ 0x5105_c0de);
            let receivers_per_room = scenario
                .members_per_room
                .saturating_sub(scenario.senders_per_room);
            let slow_per_room = ((f64::from(receivers_per_room) * scenario.slow_consumer_share)
                .round() as u32)
                .min(receivers_per_room.saturating_sub(1));
            for room in 0..rooms {
                let mut idx: Vec<usize> = conns
                    .iter()
                    .filter(|c| c.room == Some(room) && c.role == Role::Receiver)
                    .map(|c| c.index as usize)
                    .collect();
                idx.shuffle(&mut rng);
                for &i in idx.iter().take(slow_per_room as usize) {
                    conns[i].role = Role::Slow;
                }
            }
        }
        Plan {
            agent,
            conns,
            rooms,
            senders_per_room: scenario.senders_per_room,
        }
    }

    /// The id a connection puts in the `from` field.
    pub fn conn_id(&self, index: u32) -> String {
        format!("a{}.c{}", self.agent, index)
    }

    /// Number of connections in rooms that read (senders and receivers), per room.
    pub fn readers_per_room(&self) -> Vec<u32> {
        let mut v = vec![0; self.rooms as usize];
        for c in &self.conns {
            if let (Some(r), Role::Sender | Role::Receiver) = (c.room, c.role) {
                v[r as usize] += 1;
            }
        }
        v
    }

    /// Number of slow consumers.
    pub fn slow_count(&self) -> usize {
        self.conns.iter().filter(|c| c.role == Role::Slow).count()
    }

    /// Number of senders.
    pub fn sender_count(&self) -> usize {
        self.conns.iter().filter(|c| c.role == Role::Sender).count()
    }
}

/// Parses a `from` id of the form `a{agent}.c{index}`.
pub fn parse_conn_id(from: &str) -> Option<(u32, u32)> {
    let rest = from.strip_prefix('a')?;
    let (agent, conn) = rest.split_once(".c")?;
    Some((agent.parse().ok()?, conn.parse().ok()?))
}

/// The wire name of room `i`.
pub fn room_name(i: u32) -> String {
    format!("r{i}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(text: &str) -> Scenario {
        Scenario::parse(text, "test").expect("valid scenario")
    }

    #[test]
    fn members_spread_round_robin_with_senders_first() {
        let s =
            scenario("name='t'\nconnections=10\nrooms=2\nmembers_per_room=4\nsenders_per_room=1\n");
        let p = Plan::new(&s, 3);
        assert_eq!(p.conns[0].room, Some(0));
        assert_eq!(p.conns[1].room, Some(1));
        assert_eq!(p.conns[0].role, Role::Sender);
        assert_eq!(p.conns[1].role, Role::Sender);
        assert_eq!(p.conns[2].role, Role::Receiver);
        assert_eq!(p.conns[8].role, Role::Idle);
        assert_eq!(p.readers_per_room(), vec![4, 4]);
        assert_eq!(p.conn_id(7), "a3.c7");
        assert_eq!(parse_conn_id("a3.c7"), Some((3, 7)));
        assert_eq!(parse_conn_id("x3.c7"), None);
    }

    #[test]
    fn slow_consumers_leave_a_reader_in_every_room() {
        let s = scenario(
            "name='t'\nconnections=40\nrooms=4\nmembers_per_room=10\nsenders_per_room=1\nslow_consumer_share=0.5\n",
        );
        let p = Plan::new(&s, 0);
        assert_eq!(p.slow_count(), 4 * 5); // round(9 * 0.5) = 5 per room (4.5 rounds to 5)
        for readers in p.readers_per_room() {
            assert_eq!(readers, 5);
        }
        // deterministic for a seed
        assert_eq!(Plan::new(&s, 0).conns, p.conns);
    }
}

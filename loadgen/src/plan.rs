//! The plan: who each connection is (its id, room, role, target) and what every room expects.
//!
//! A plan is a pure function of the scenario and the [`Layout`] (how many agents and targets,
//! and the target policy). The run's connections are numbered globally: the first
//! `rooms × members_per_room` are members, assigned to rooms round-robin (global connection `g`
//! joins room `g % rooms` as its member number `slot = g / rooms`); the first
//! `senders_per_room` members of each room send; a seeded share of the other members are slow
//! consumers that stop reading; the rest are idle.
//!
//! Agents: member `slot` of room `r` belongs to agent `(slot + r) % agents`, so every room spans
//! agents (when it has at least as many members as there are agents) and senders spread over
//! them even with one sender per room (room `r`'s first sender is on agent `r % agents`).
//! With the scenario's room-affine `placement = "room"`, room `r`'s members are all on agent
//! `r % agents` instead. Idle connections go round-robin. Each agent's plan keeps only its own connections,
//! renumbered `0..n` (connection `i` of agent `a` is named `a{a}.c{i}`).
//!
//! Targets: with [`TargetPolicy::Span`] an agent's members of a room go round-robin over the
//! targets (`(slot / agents) % targets`), so every room has members on every target; with
//! [`TargetPolicy::Partition`] room `r` lives on target `r % targets`. Nothing here does I/O,
//! so it is unit-tested exactly.

use rand::seq::SliceRandom;
use rand::SeedableRng;

use chatbench_model::scenario::{Placement, Scenario, TargetPolicy};

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
    /// Index in the whole run (across agents): `{conn}` and the feeder row.
    pub global: u32,
    /// Room index, for members.
    pub room: Option<u32>,
    /// What it does.
    pub role: Role,
    /// For senders: which of the room's senders it is (0-based), used by receivers to track
    /// sequence numbers per sender.
    pub sender_slot: Option<u32>,
    /// Which target (index into the run's target list) it connects to.
    pub target: u32,
}

/// Most agents in one run (`run --agents local:N` and `auto` stay within it; an agent refuses a
/// setup naming more).
pub const MAX_AGENTS: u32 = 1024;

/// How a run is spread: agents, targets, and the target policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Agent processes (1 for a single-process run).
    pub agents: u32,
    /// Targets (1 for a single server).
    pub targets: u32,
    /// How rooms spread over the targets.
    pub policy: TargetPolicy,
}

impl Layout {
    /// One process, one target.
    pub const SINGLE: Layout = Layout {
        agents: 1,
        targets: 1,
        policy: TargetPolicy::Span,
    };

    /// Why this layout cannot run the scenario, if it cannot: a partitioned run with fewer rooms
    /// than targets would leave a target without a room.
    pub fn problem(&self, scenario: &Scenario) -> Option<String> {
        if self.agents == 0 || self.targets == 0 {
            return Some("a run needs at least one agent and one target".into());
        }
        if self.policy == TargetPolicy::Partition
            && self.targets > 1
            && scenario.rooms < self.targets
        {
            return Some(format!(
                "target_policy = \"partition\" puts each room on one target, but the scenario has {} room(s) \
                 for {} targets: some targets would get none; raise `rooms` to at least {} or use \
                 target_policy = \"span\"",
                scenario.rooms, self.targets, self.targets
            ));
        }
        None
    }
}

/// The whole plan for one agent.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Agent id (the `a` part of every connection id).
    pub agent: u32,
    /// Every connection of this agent, indexed by `index`.
    pub conns: Vec<ConnPlan>,
    /// Number of rooms (of the whole run).
    pub rooms: u32,
    /// Senders per room (of the whole run).
    pub senders_per_room: u32,
}

impl Plan {
    /// The plan of a single-process, single-target run, with agent id `agent`.
    pub fn new(scenario: &Scenario, agent: u32) -> Plan {
        Plan {
            agent,
            ..Plan::for_agent(scenario, 0, &Layout::SINGLE)
        }
    }

    /// The plan of agent `agent` under `layout`.
    pub fn for_agent(scenario: &Scenario, agent: u32, layout: &Layout) -> Plan {
        let mut all = global(scenario, layout);
        all.retain(|(a, _)| *a == agent);
        let conns = all
            .into_iter()
            .enumerate()
            .map(|(i, (_, c))| ConnPlan {
                index: i as u32,
                ..c
            })
            .collect();
        Plan {
            agent,
            conns,
            rooms: scenario.rooms,
            senders_per_room: scenario.senders_per_room,
        }
    }

    /// Connections agent `agent` holds under `layout`, counted without building any plan (in
    /// time proportional to the number of agents): an agent checks its share against its
    /// limits with it before it allocates anything. Agrees with [`Plan::counts_per_agent`].
    pub fn count_for_agent(scenario: &Scenario, agent: u32, layout: &Layout) -> u64 {
        let agents = u64::from(layout.agents.max(1));
        let a = u64::from(agent);
        if a >= agents {
            return 0;
        }
        // Values in 0..n that are ≡ x (mod agents).
        let count = |n: u64, x: u64| n / agents + u64::from(x < n % agents);
        let (rooms, per_room) = if scenario.rooms == 0 {
            (0, 0)
        } else {
            (
                u64::from(scenario.rooms),
                u64::from(scenario.members_per_room),
            )
        };
        let members: u64 = match scenario.placement {
            // Member `slot` of room `r` belongs to agent `(slot + r) % agents`.
            Placement::Spread => (0..agents)
                .map(|x| count(per_room, x) * count(rooms, (a + agents - x) % agents))
                .sum(),
            // Room `r` belongs to agent `r % agents`.
            Placement::Room => per_room * count(rooms, a),
        };
        let idle = u64::from(scenario.connections).saturating_sub(rooms * per_room);
        members + count(idle, a)
    }

    /// Connections per agent under `layout` (index = agent id).
    pub fn counts_per_agent(scenario: &Scenario, layout: &Layout) -> Vec<u64> {
        let mut v = vec![0u64; layout.agents.max(1) as usize];
        for (a, _) in global(scenario, layout) {
            v[a as usize] += 1;
        }
        v
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

/// The whole run's connections in global order, each with its agent; `index` is the global one.
fn global(scenario: &Scenario, layout: &Layout) -> Vec<(u32, ConnPlan)> {
    let rooms = scenario.rooms;
    let agents = layout.agents.max(1);
    let targets = layout.targets.max(1);
    let members = u64::from(rooms) * u64::from(scenario.members_per_room);
    let mut conns: Vec<(u32, ConnPlan)> = (0..scenario.connections)
        .map(|i| {
            if u64::from(i) < members {
                let room = i % rooms;
                let slot = i / rooms; // position of this member within its room
                let sender = slot < scenario.senders_per_room;
                let agent = match scenario.placement {
                    Placement::Spread => (slot + room) % agents,
                    Placement::Room => room % agents,
                };
                let target = match layout.policy {
                    TargetPolicy::Span => (slot / agents) % targets,
                    TargetPolicy::Partition => room % targets,
                };
                (
                    agent,
                    ConnPlan {
                        index: i,
                        global: i,
                        room: Some(room),
                        role: if sender { Role::Sender } else { Role::Receiver },
                        sender_slot: sender.then_some(slot),
                        target,
                    },
                )
            } else {
                // Bounded by `connections` (a u32), so the cast cannot truncate.
                let k = (u64::from(i) - members) as u32;
                (
                    k % agents,
                    ConnPlan {
                        index: i,
                        global: i,
                        room: None,
                        role: Role::Idle,
                        sender_slot: None,
                        target: (k / agents) % targets,
                    },
                )
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
        let slow_per_room = ((f64::from(receivers_per_room) * scenario.slow_consumer_share).round()
            as u32)
            .min(receivers_per_room.saturating_sub(1));
        let mut by_room: Vec<Vec<usize>> = vec![Vec::new(); rooms as usize];
        for (i, (_, c)) in conns.iter().enumerate() {
            if let (Some(r), Role::Receiver) = (c.room, c.role) {
                by_room[r as usize].push(i);
            }
        }
        for mut idx in by_room {
            idx.shuffle(&mut rng);
            for &i in idx.iter().take(slow_per_room as usize) {
                conns[i].1.role = Role::Slow;
            }
        }
    }
    conns
}

/// Parses a `from` id of the form `a{agent}.c{index}`.
pub fn parse_conn_id(from: &str) -> Option<(u32, u32)> {
    // Plain loops: every delivery the generator judges reads its sender here, and the gate
    // counts the debug build. Exactly `a{u32}.c{u32}` as `str::parse` reads a `u32`.
    let b = from.as_bytes();
    if b.first() != Some(&b'a') {
        return None;
    }
    let mut dot = 1;
    while dot + 1 < b.len() && !(b[dot] == b'.' && b[dot + 1] == b'c') {
        dot += 1;
    }
    if dot + 1 >= b.len() {
        return None;
    }
    Some((decimal_u32(&b[1..dot])?, decimal_u32(&b[dot + 2..])?))
}

/// A `u32` as `str::parse` reads one: an optional `+`, then at least one digit, no overflow.
fn decimal_u32(b: &[u8]) -> Option<u32> {
    let digits = match b.first() {
        Some(b'+') => &b[1..],
        _ => b,
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: u32 = 0;
    let mut i = 0;
    while i < digits.len() {
        let d = digits[i];
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u32::from(d - b'0'))?;
        i += 1;
    }
    Some(v)
}

/// The wire name of room `i`.
pub fn room_name(i: u32) -> String {
    format!("r{i}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `parse_conn_id` must answer: the `str` methods' reading.
    fn reference_conn_id(from: &str) -> Option<(u32, u32)> {
        let rest = from.strip_prefix('a')?;
        let (agent, conn) = rest.split_once(".c")?;
        Some((agent.parse().ok()?, conn.parse().ok()?))
    }

    proptest! {
        #[test]
        fn conn_ids_read_as_the_str_methods_read_them(from in "a?[0-9+.c-]{0,14}") {
            prop_assert_eq!(parse_conn_id(&from), reference_conn_id(&from));
        }

        #[test]
        fn any_text_reads_as_the_str_methods_read_it(from in ".{0,12}") {
            prop_assert_eq!(parse_conn_id(&from), reference_conn_id(&from));
        }
    }

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
        for from in [
            "",
            "a",
            "a.c",
            "a1.c",
            "a.c1",
            "a+1.c+2",
            "a+.c1",
            "a-1.c2",
            "a1.c2.c3",
            "a1.x.c2",
            "a01.c002",
            "a4294967295.c0",
            "a4294967296.c0",
            "a1.c4294967296",
            "a1 .c2",
            "aé.c1",
            "a1.cc2",
            "a1..c2",
        ] {
            assert_eq!(parse_conn_id(from), reference_conn_id(from), "{from:?}");
        }
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

    fn layout(agents: u32, targets: u32, policy: TargetPolicy) -> Layout {
        Layout {
            agents,
            targets,
            policy,
        }
    }

    #[test]
    fn room_affine_placement_keeps_each_room_on_one_agent() {
        // 5 rooms of 6, 2 agents, 7 idle connections.
        let s = scenario(
            "name='t'\nconnections=37\nrooms=5\nmembers_per_room=6\nsenders_per_room=2\nplacement='room'\n",
        );
        let l = layout(2, 1, TargetPolicy::Span);
        // Rooms 0, 2, 4 on agent 0 (18 members + 4 idle), rooms 1, 3 on agent 1 (12 + 3).
        assert_eq!(Plan::counts_per_agent(&s, &l), vec![22, 15]);
        for a in 0..2u32 {
            let p = Plan::for_agent(&s, a, &l);
            assert_eq!(Plan::count_for_agent(&s, a, &l), p.conns.len() as u64);
            for (room, readers) in p.readers_per_room().into_iter().enumerate() {
                let mine = room as u32 % 2 == a;
                assert_eq!(readers, if mine { 6 } else { 0 }, "agent {a} room {room}");
            }
        }
    }

    #[test]
    fn span_puts_every_room_on_every_target_and_agent() {
        // 4 rooms of 12, 3 agents, 2 targets, 20 idle connections.
        let s = scenario(
            "name='t'\nconnections=68\nrooms=4\nmembers_per_room=12\nsenders_per_room=3\n",
        );
        let l = layout(3, 2, TargetPolicy::Span);
        assert_eq!(Plan::counts_per_agent(&s, &l), vec![23, 23, 22]);
        let plans: Vec<Plan> = (0..3).map(|a| Plan::for_agent(&s, a, &l)).collect();
        for p in &plans {
            // renumbered densely
            assert!(p
                .conns
                .iter()
                .enumerate()
                .all(|(i, c)| c.index as usize == i));
            for room in 0..4 {
                for target in 0..2 {
                    let n = p
                        .conns
                        .iter()
                        .filter(|c| c.room == Some(room) && c.target == target)
                        .count();
                    assert_eq!(n, 2, "agent {} room {room} target {target}", p.agent);
                }
                // one sender per agent per room (senders are slots 0, 1, 2)
                let senders = p
                    .conns
                    .iter()
                    .filter(|c| c.room == Some(room) && c.role == Role::Sender)
                    .count();
                assert_eq!(senders, 1);
            }
        }
        let idle: usize = plans
            .iter()
            .map(|p| p.conns.iter().filter(|c| c.role == Role::Idle).count())
            .sum();
        assert_eq!(idle, 20);
    }

    #[test]
    fn one_sender_per_room_still_spreads_over_agents() {
        let s = scenario("name='t'\nconnections=60\nrooms=6\nmembers_per_room=10\n");
        let l = layout(3, 1, TargetPolicy::Span);
        for a in 0..3 {
            let p = Plan::for_agent(&s, a, &l);
            let rooms: Vec<u32> = p
                .conns
                .iter()
                .filter(|c| c.role == Role::Sender)
                .filter_map(|c| c.room)
                .collect();
            assert_eq!(rooms, vec![a, a + 3], "room r's sender is on agent r % 3");
        }
    }

    #[test]
    fn partition_keeps_each_room_on_one_target() {
        let s = scenario(
            "name='t'\nconnections=60\nrooms=6\nmembers_per_room=10\nsenders_per_room=1\n",
        );
        let l = layout(2, 3, TargetPolicy::Partition);
        for a in 0..2 {
            let p = Plan::for_agent(&s, a, &l);
            for c in &p.conns {
                assert_eq!(c.target, c.room.expect("member") % 3);
            }
        }
        assert!(l.problem(&s).is_none());
        let few = scenario("name='t'\nconnections=20\nrooms=2\nmembers_per_room=10\n");
        let msg = l.problem(&few).expect("2 rooms for 3 targets");
        assert!(msg.contains("rooms") && msg.contains("span"), "{msg}");
    }

    #[test]
    fn single_layout_is_the_one_process_plan() {
        let s = scenario(
            "name='t'\nconnections=40\nrooms=4\nmembers_per_room=10\nsenders_per_room=1\nslow_consumer_share=0.5\n",
        );
        let p = Plan::new(&s, 0);
        assert!(p.conns.iter().all(|c| c.target == 0));
        assert_eq!(Plan::counts_per_agent(&s, &Layout::SINGLE), vec![40]);
        // slow consumers survive the split: the same global choice, whatever the agent count
        let split: usize = (0..3)
            .map(|a| Plan::for_agent(&s, a, &layout(3, 1, TargetPolicy::Span)).slow_count())
            .sum();
        assert_eq!(split, p.slow_count());
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2000))]

        /// The share an agent checks before allocating is the share its plan will have.
        #[test]
        fn the_counted_share_is_the_planned_share(
            rooms in 0u32..12,
            per_room in 2u32..12,
            idle in 0u32..40,
            agents in 1u32..9,
            extra in 0u32..3,
        ) {
            let members = if rooms == 0 { 0 } else { rooms * per_room };
            let s = scenario(&format!(
                "name='t'\nconnections={}\nrooms={rooms}\nmembers_per_room={per_room}\n",
                (members + idle).max(1)
            ));
            let l = layout(agents, 1, TargetPolicy::Span);
            let counts = Plan::counts_per_agent(&s, &l);
            for a in 0..agents + extra {
                let expected = counts.get(a as usize).copied().unwrap_or(0);
                proptest::prop_assert_eq!(Plan::count_for_agent(&s, a, &l), expected);
            }
        }
    }

    #[test]
    fn the_counted_share_of_a_huge_run_costs_nothing() {
        let s = scenario("name='t'\nconnections=16777216\nrooms=1000\nmembers_per_room=16000\n");
        let l = layout(MAX_AGENTS, 1, TargetPolicy::Span);
        let total: u64 = (0..MAX_AGENTS)
            .map(|a| Plan::count_for_agent(&s, a, &l))
            .sum();
        assert_eq!(total, 16_777_216);
    }

    /// A value of a scenario field for the property tests: ordinary, at a bound, or far out.
    fn number() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            (0u32..50).prop_map(|n| n.to_string()),
            (0u32..3000).prop_map(|n| n.to_string()),
            Just("4294967295".to_owned()),
            Just("16777216".to_owned()),
            Just("-1".to_owned()),
            Just("0.5".to_owned()),
            Just("1e300".to_owned()),
            Just("1e-300".to_owned()),
            Just("nan".to_owned()),
            Just("inf".to_owned()),
            Just("0.001".to_owned()),
            Just("100000".to_owned()),
            Just("1e9".to_owned()),
            Just("1e-6".to_owned()),
        ]
    }

    /// A rate: mostly ordinary, sometimes at or beyond a bound.
    fn rate() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            20 => (1u32..100_000).prop_map(|n| format!("{}", f64::from(n) / 100.0)),
            1 => number(),
        ]
    }

    fn duration() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            30 => (1u64..5000).prop_map(|n| format!("\"{n}ms\"")),
            1 => Just("\"0s\"".to_owned()),
            1 => Just("\"30days\"".to_owned()),
            1 => Just("\"31days\"".to_owned()),
            1 => Just("\"500000000000years\"".to_owned()),
            1 => Just("\"584942417355years\"".to_owned()),
            1 => Just("\"1ns\"".to_owned()),
        ]
    }

    /// Every scenario the parser accepts runs: its plan builds for any agent layout, its
    /// timeline fits the clock, and its send schedules start, without a panic. Scenarios the
    /// parser rejects are rejected with a message, never a panic.
    fn accepted_scenario_runs(text: &str, agents: u32, targets: u32) -> bool {
        let Ok(s) = Scenario::parse(text, "prop.toml") else {
            return false;
        };
        let n = u64::from(s.connections);
        let now = std::time::Instant::now();
        let end = now
            .checked_add(s.connect_deadline(n, s.max_ramp_hold(n)))
            .and_then(|t| t.checked_add(s.total_duration()))
            .and_then(|t| t.checked_add(s.reconnect.deadline + s.reconnect.max_backoff));
        assert!(end.is_some(), "the timeline of {text} overflows the clock");
        let layout = Layout {
            agents,
            targets,
            policy: s.target_policy,
        };
        if layout.problem(&s).is_some() || n > 4000 {
            return false;
        }
        let counts = Plan::counts_per_agent(&s, &layout);
        for a in 0..agents {
            let p = Plan::for_agent(&s, a, &layout);
            assert_eq!(p.conns.len() as u64, counts[a as usize]);
            assert_eq!(Plan::count_for_agent(&s, a, &layout), counts[a as usize]);
            let _ = (p.readers_per_room(), p.slow_count(), p.sender_count());
        }
        if s.sender_count() > 0 {
            let sched = crate::schedule::Schedule::new(s.arrival, s.rate_per_sender, s.measure, 1);
            assert!(sched.take(1000).count() <= 1000);
        }
        true
    }

    #[test]
    fn every_accepted_scenario_builds_a_plan() {
        use proptest::prelude::*;
        let fields = (
            (number(), number(), number(), number(), rate(), rate()),
            (
                proptest::sample::select(vec![
                    "0", "0", "0", "0", "0.1", "0.5", "0.99", "1", "-0.1", "nan",
                ]),
                duration(),
                duration(),
                duration(),
                duration(),
            ),
            (
                proptest::sample::select(vec!["uniform", "poisson"]),
                proptest::sample::select(vec!["span", "partition"]),
                1u32..5,
                1u32..4,
                proptest::sample::select(vec!["spread", "room"]),
            ),
        );
        // Small counts more often, so that a good share of the cases is accepted.
        let small = (1u32..300, 0u32..20, 2u32..15, 0u32..4);
        let accepted = std::sync::atomic::AtomicU32::new(0);
        let mut runner =
            proptest::test_runner::TestRunner::new(proptest::test_runner::Config::with_cases(3000));
        runner
            .run(&(fields, small, any::<bool>()), |(f, small, use_small)| {
                let ((mut conns, mut rooms, mut members, mut senders, rate, ramp), d, o) = f;
                let (slow, measure, settle, timeout, backoff) = d;
                let (arrival, policy, agents, targets, placement) = o;
                if use_small {
                    conns = small.0.to_string();
                    rooms = small.1.to_string();
                    members = small.2.to_string();
                    senders = small.3.to_string();
                }
                let text = format!(
                    "name = \"p\"\nconnections = {conns}\nrooms = {rooms}\n\
                     members_per_room = {members}\nsenders_per_room = {senders}\n\
                     rate_per_sender = {rate}\nramp_rate = {ramp}\nslow_consumer_share = {slow}\n\
                     measure = {measure}\nsettle = {settle}\nconnect_timeout = {timeout}\n\
                     arrival = \"{arrival}\"\ntarget_policy = \"{policy}\"\nplacement = \"{placement}\"\n\
                     [reconnect]\nmax_backoff = {backoff}\n"
                );
                if accepted_scenario_runs(&text, agents, targets) {
                    accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(())
            })
            .expect("every accepted scenario runs");
        // Not vacuous: a good share of the generated scenarios was accepted and planned.
        let accepted = accepted.into_inner();
        eprintln!("{accepted} of 3000 generated scenarios accepted and planned");
        assert!(
            accepted >= 100,
            "only {accepted} of 3000 scenarios were accepted"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(3000))]

        #[test]
        fn any_text_is_a_scenario_or_an_error(text in "(?s).{0,200}") {
            let _ = accepted_scenario_runs(&text, 2, 1);
        }
    }
}

//! Every delivery judged across agents. In a fleet (`run --agents`) a receiver on one agent gets
//! messages from senders on the others; loss and duplicates need no clock to judge them, only
//! what every sender sent. Each agent keeps a [`Ledger`]: per sender of another agent, how many
//! of its receivers got each sequence number (duplicates already removed per receiver), sent
//! at the end as runs ([`CrossRuns`]: first seq, length, count — one run per sender when
//! nothing is lost). Each agent also reports, per own sender, the sequence numbers it sent in
//! its window ([`SenderWindow`]). The coordinator [`reconcile`]s: deliveries of in-window
//! messages across agents, added to each agent's own judged ones, against the one loss formula
//! over the fleet's rooms (`model::summary::expected_deliveries`).
//!
//! Within an agent, each receiver keeps the last sequence number it got from each sender of
//! its room ([`LastSeqs`]): the duplicate check of every delivery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

const SHARDS: usize = 16;
/// Most runs an agent sends (≈ 30 bytes each in its final message, far below the control
/// protocol's line limit); a ledger that needs more is sent incomplete and says so.
pub const MAX_RUNS: usize = 200_000;

/// Per sender `(agent, index)`: receivers that got each seq (index `seq − 1`).
type BySender = HashMap<(u32, u32), Vec<u32>>;

/// One sender's in-window sequence numbers, inclusive (`lo == 0`: none in the window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderWindow {
    /// The sender's index on its agent (the `c` of `a{agent}.c{index}`).
    pub index: u32,
    /// Its room.
    pub room: u32,
    /// First sequence number sent in the window (0: none).
    pub lo: u64,
    /// Last sequence number sent in the window.
    pub hi: u64,
}

/// What this agent's receivers got from one sender of another agent, as runs of equal counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrossRuns {
    /// The sender's agent.
    pub agent: u32,
    /// The sender's index on its agent.
    pub index: u32,
    /// `(first seq, length, receivers that got each)`; seqs not covered: nobody here got them.
    pub runs: Vec<(u64, u64, u32)>,
}

/// Per sender of another agent: receivers here that got each seq (index `seq − 1`).
#[derive(Debug, Default)]
pub struct Ledger {
    shards: Vec<Mutex<BySender>>,
    /// Highest sequence number a sender can have (its schedule's length): a higher one is a bad
    /// frame, so a peer cannot grow the ledger without bound.
    max_seq: u64,
    /// Most senders kept (the run's senders): a `from` beyond them is a bad frame.
    max_senders: usize,
    senders: AtomicUsize,
}

impl Ledger {
    /// An empty ledger for at most `max_senders` senders of at most `max_seq` messages each.
    pub fn new(max_senders: u64, max_seq: u64) -> Ledger {
        Ledger {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            max_seq,
            max_senders: usize::try_from(max_senders).unwrap_or(usize::MAX),
            senders: AtomicUsize::new(0),
        }
    }

    /// Counts one receiver's first delivery of `(agent, index, seq)`; `false` when `seq` is out
    /// of range (a bad frame).
    pub fn record(&self, agent: u32, index: u32, seq: u64) -> bool {
        if seq == 0 || seq > self.max_seq {
            return false;
        }
        let shard = &self.shards[(index as usize ^ agent as usize) % SHARDS];
        let mut m = shard.lock().unwrap_or_else(|p| p.into_inner());
        if !m.contains_key(&(agent, index))
            && self.senders.fetch_add(1, Ordering::Relaxed) >= self.max_senders
        {
            self.senders.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        let counts = m.entry((agent, index)).or_default();
        let i = (seq - 1) as usize;
        if counts.len() <= i {
            counts.resize(i + 1, 0);
        }
        counts[i] += 1;
        true
    }

    /// Everything recorded, as runs sorted by sender, and whether it is all there: `false`
    /// when it took more than [`MAX_RUNS`] runs (then the ledger is left out whole).
    pub fn runs(&self) -> (Vec<CrossRuns>, bool) {
        let mut out = Vec::new();
        let mut total = 0usize;
        for shard in &self.shards {
            let m = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (&(agent, index), counts) in m.iter() {
                let runs = to_runs(counts);
                total += runs.len();
                if total > MAX_RUNS {
                    return (Vec::new(), false);
                }
                out.push(CrossRuns { agent, index, runs });
            }
        }
        out.sort_by_key(|c| (c.agent, c.index));
        (out, true)
    }
}

/// Counts per seq (index `seq − 1`) as `(first seq, length, count)` runs, zeros left out.
fn to_runs(counts: &[u32]) -> Vec<(u64, u64, u32)> {
    let mut runs: Vec<(u64, u64, u32)> = Vec::new();
    for (i, &c) in counts.iter().enumerate() {
        let seq = i as u64 + 1;
        match runs.last_mut() {
            Some((first, len, count)) if *count == c && *first + *len == seq => *len += 1,
            _ if c > 0 => runs.push((seq, 1, c)),
            _ => {}
        }
    }
    runs
}

/// One agent's share of the fleet-wide judgement.
#[derive(Debug, Clone, Copy)]
pub struct AgentBooks<'a> {
    /// The agent's id.
    pub agent: u32,
    /// Per room: its in-window messages sent plus those that fell due on downed connections.
    pub room_due: &'a [u64],
    /// Per room: its readers.
    pub room_readers: &'a [u64],
    /// Per room: its own senders' in-window messages its receivers got (unique).
    pub room_delivered_own: &'a [u64],
    /// Its senders' windows.
    pub senders: &'a [SenderWindow],
    /// What its receivers got from other agents' senders.
    pub cross: &'a [CrossRuns],
}

/// The fleet's judgement: expected over every room's readers on every agent, delivered within
/// and across agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Judged {
    /// Σ rooms due × (readers on every agent − 1).
    pub expected: u64,
    /// Unique in-window deliveries, within and across agents.
    pub delivered: u64,
    /// Of which across agents.
    pub delivered_cross: u64,
}

/// Judges every in-window delivery of the fleet exactly (see the module doc).
pub fn reconcile(books: &[AgentBooks<'_>]) -> Judged {
    let rooms = books.iter().map(|b| b.room_due.len()).max().unwrap_or(0);
    let mut due = vec![0u64; rooms];
    let mut readers = vec![0u64; rooms];
    let mut windows: HashMap<(u32, u32), (u64, u64)> = HashMap::new();
    let mut delivered = 0u64;
    for b in books {
        for (r, d) in b.room_due.iter().enumerate() {
            due[r] += d;
        }
        for (r, n) in b.room_readers.iter().enumerate() {
            readers[r] += n;
        }
        delivered += b.room_delivered_own.iter().sum::<u64>();
        for s in b.senders.iter().filter(|s| s.lo > 0) {
            windows.insert((b.agent, s.index), (s.lo, s.hi));
        }
    }
    let mut cross = 0u64;
    for b in books {
        for c in b.cross.iter().filter(|c| c.agent != b.agent) {
            let Some(&(lo, hi)) = windows.get(&(c.agent, c.index)) else {
                continue; // a sender with nothing in the window, or of a lost agent
            };
            for &(first, len, count) in &c.runs {
                let last = first + len.saturating_sub(1);
                let overlap = hi.min(last).saturating_sub(lo.max(first)) + 1;
                if lo.max(first) <= hi.min(last) {
                    cross += overlap * u64::from(count);
                }
            }
        }
    }
    Judged {
        expected: chatbench_model::summary::expected_deliveries(due, readers),
        delivered: delivered + cross,
        delivered_cross: cross,
    }
}

/// Senders per room whose last sequence numbers a [`LastSeqs`] keeps inline (every shipped
/// scenario has one or two). Two keep it as small as the `Vec` it replaced (24 bytes): every
/// idle connection's task holds one.
pub const INLINE_SENDERS: usize = 2;

/// A receiver's last sequence number from each sender of its room, by the sender's slot
/// (`ConnPlan::sender_slot`): the duplicate check of every delivery. Up to
/// [`INLINE_SENDERS`] senders it is kept inline, in the connection's own state, so the check
/// reads no separate allocation (at 20,000 deliveries/s over 2,000 receivers that allocation
/// was a cache miss per delivery, most of what judging one cost:
/// docs/notes/2026-12-07-receive-user-space.md); larger rooms keep it on the heap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastSeqs {
    /// Rooms of up to [`INLINE_SENDERS`] senders: the first `len` entries are used.
    Inline {
        /// Senders in the room.
        len: u8,
        /// Last seq per slot (0: nothing yet).
        seqs: [u64; INLINE_SENDERS],
    },
    /// Larger rooms.
    Heap(Box<[u64]>),
}

impl LastSeqs {
    /// Nothing seen yet from any of `senders` senders.
    pub fn new(senders: usize) -> LastSeqs {
        match u8::try_from(senders) {
            Ok(len) if senders <= INLINE_SENDERS => LastSeqs::Inline {
                len,
                seqs: [0; INLINE_SENDERS],
            },
            _ => LastSeqs::Heap(vec![0; senders].into_boxed_slice()),
        }
    }

    /// The last seq seen from the sender in `slot`; `None` past the room's senders.
    pub fn get_mut(&mut self, slot: usize) -> Option<&mut u64> {
        match self {
            LastSeqs::Inline { len, seqs } if slot < usize::from(*len) => seqs.get_mut(slot),
            LastSeqs::Inline { .. } => None,
            LastSeqs::Heap(seqs) => seqs.get_mut(slot),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_compact_and_exact() {
        let l = Ledger::new(4, 100);
        for seq in 1..=50 {
            for _ in 0..3 {
                assert!(l.record(1, 7, seq));
            }
        }
        // seq 20 reached only 2 of the 3 receivers; seq 30 none of them... then 31 again.
        let l2 = Ledger::new(4, 100);
        for seq in 1..=50u64 {
            let n = match seq {
                20 => 2,
                30 => 0,
                _ => 3,
            };
            for _ in 0..n {
                l2.record(1, 7, seq);
            }
        }
        assert_eq!(l.runs().0[0].runs, vec![(1, 50, 3)]);
        assert_eq!(
            l2.runs().0[0].runs,
            vec![(1, 19, 3), (20, 1, 2), (21, 9, 3), (31, 20, 3)]
        );
        assert!(!l.record(1, 7, 101), "past the schedule: refused");
        assert!(!l.record(1, 7, 0));
    }

    #[test]
    fn a_peer_cannot_grow_the_ledger_past_its_bounds() {
        let l = Ledger::new(2, 10);
        assert!(l.record(1, 1, 1) && l.record(1, 2, 1));
        assert!(!l.record(1, 3, 1), "a third sender in a run of two");
        assert!(l.record(1, 1, 2), "known senders still count");
        // Every other seq: one run each, past the cap the ledger says it is incomplete.
        let many = Ledger::new(1, 2 * MAX_RUNS as u64 + 2);
        for seq in (1..=2 * MAX_RUNS as u64 + 2).step_by(2) {
            assert!(many.record(0, 0, seq));
        }
        let (runs, complete) = many.runs();
        assert!(!complete && runs.is_empty());
        assert!(l.runs().1);
    }

    #[test]
    fn one_message_dropped_to_one_member_on_another_agent_is_caught() {
        // Room 0: agent 0 has the sender (a0.c0) and 1 reader more; agent 1 has 3 readers.
        // The sender sent seqs 1..=40, 11..=30 in the window; agent 1's receivers got all but
        // seq 15 for one of them.
        let mut runs = vec![(1, 14, 3), (15, 1, 2), (16, 25, 3)];
        let books = |runs: &[(u64, u64, u32)]| -> Judged {
            let cross = [CrossRuns {
                agent: 0,
                index: 0,
                runs: runs.to_vec(),
            }];
            let senders = [SenderWindow {
                index: 0,
                room: 0,
                lo: 11,
                hi: 30,
            }];
            reconcile(&[
                AgentBooks {
                    agent: 0,
                    room_due: &[20],
                    room_readers: &[2],
                    room_delivered_own: &[20],
                    senders: &senders,
                    cross: &[],
                },
                AgentBooks {
                    agent: 1,
                    room_due: &[0],
                    room_readers: &[3],
                    room_delivered_own: &[0],
                    senders: &[],
                    cross: &cross,
                },
            ])
        };
        let j = books(&runs);
        assert_eq!(j.expected, 20 * 4);
        assert_eq!(j.delivered_cross, 20 * 3 - 1);
        assert_eq!(j.expected - j.delivered, 1, "exactly one lost");
        runs[1].2 = 3;
        let j = books(&runs);
        assert_eq!(j.delivered, j.expected, "nothing lost");
    }

    #[test]
    fn last_seqs_keep_one_entry_per_sender_inline_or_not() {
        for senders in [0usize, 1, 2, INLINE_SENDERS, INLINE_SENDERS + 1, 300] {
            let mut l = LastSeqs::new(senders);
            assert_eq!(
                matches!(l, LastSeqs::Inline { .. }),
                senders <= INLINE_SENDERS,
                "{senders}"
            );
            for slot in 0..senders {
                assert_eq!(l.get_mut(slot).copied(), Some(0), "{senders} {slot}");
                *l.get_mut(slot).expect("in range") = slot as u64 + 7;
            }
            for slot in 0..senders {
                assert_eq!(l.get_mut(slot).copied(), Some(slot as u64 + 7));
            }
            // Past the room's senders: none, even where the inline array has room.
            assert_eq!(l.get_mut(senders), None, "{senders}");
            assert_eq!(l.get_mut(usize::MAX), None);
        }
    }
}

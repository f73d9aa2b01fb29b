//! The pure model of dispatch order: start-time fair queuing across teams, then
//! priority (higher first), then FIFO within a team.
//!
//! Each team (a [`Lane`]) has a finish tag. To pick, take the backlogged lane whose
//! start tag — `max(finish tag, virtual time)` — is smallest (ties by lane order);
//! the virtual time becomes that start tag and the lane's finish tag advances by
//! `1 / weight`. While teams are backlogged, each one's share of picks follows its
//! weight; a team returning from idle starts at the current virtual time, so it gets
//! no burst for the time it was away, and its unused share went to the others.
//!
//! [`Queue::lease`](super::Queue::lease) runs this model over the ready tasks it
//! loaded, then persists the tags and the virtual time in the same transaction.

use std::cmp::Reverse;
use std::collections::VecDeque;

/// A task waiting in a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<K> {
    /// What identifies the task to the caller.
    pub key: K,
    /// 1–100, higher first.
    pub priority: u8,
    /// Submission order, lower first among equal priorities.
    pub seq: i64,
}

/// One team's share of the queue.
#[derive(Debug, Clone)]
pub struct Lane<K> {
    weight: u32,
    finish: f64,
    capacity: usize,
    items: VecDeque<Candidate<K>>,
}

impl<K> Lane<K> {
    /// A lane of `weight` (at least 1) whose finish tag is `finish`, that may take at
    /// most `capacity` more tasks, holding `items` (in any order).
    pub fn new(weight: u32, finish: f64, capacity: usize, items: Vec<Candidate<K>>) -> Self {
        let mut items = items;
        items.sort_by_key(|c| (Reverse(c.priority), c.seq));
        Self {
            weight: weight.max(1),
            finish,
            capacity,
            items: items.into(),
        }
    }

    /// Adds a task that arrived later, keeping priority-then-FIFO order.
    pub fn push(&mut self, item: Candidate<K>) {
        let at = self.items.partition_point(|c| {
            (Reverse(c.priority), c.seq) <= (Reverse(item.priority), item.seq)
        });
        self.items.insert(at, item);
    }

    /// The lane's finish tag.
    pub fn finish(&self) -> f64 {
        self.finish
    }

    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Tasks still waiting in the lane.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether the lane has a task to give and room to take it.
    pub fn is_backlogged(&self) -> bool {
        self.capacity > 0 && !self.items.is_empty()
    }
}

/// Lanes and the virtual time they are served by.
#[derive(Debug, Clone)]
pub struct FairQueue<K> {
    vtime: f64,
    lanes: Vec<Lane<K>>,
}

impl<K> FairQueue<K> {
    pub fn new(vtime: f64, lanes: Vec<Lane<K>>) -> Self {
        Self { vtime, lanes }
    }

    /// The virtual time: the start tag of the last pick.
    pub fn vtime(&self) -> f64 {
        self.vtime
    }

    pub fn lanes(&self) -> &[Lane<K>] {
        &self.lanes
    }

    /// The lane at `index`, for adding arrivals.
    pub fn lane_mut(&mut self, index: usize) -> Option<&mut Lane<K>> {
        self.lanes.get_mut(index)
    }

    /// The next task to dispatch and the index of its lane; `None` when no lane is
    /// backlogged.
    pub fn pick(&mut self) -> Option<(usize, Candidate<K>)> {
        let vtime = self.vtime;
        let (index, start) = self
            .lanes
            .iter()
            .enumerate()
            .filter(|(_, lane)| lane.is_backlogged())
            .map(|(i, lane)| (i, lane.finish.max(vtime)))
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))?;
        let lane = self.lanes.get_mut(index)?;
        let item = lane.items.pop_front()?;
        lane.capacity -= 1;
        lane.finish = start + 1.0 / f64::from(lane.weight);
        self.vtime = start;
        Some((index, item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn items(n: usize) -> Vec<Candidate<usize>> {
        (0..n)
            .map(|i| Candidate {
                key: i,
                priority: 50,
                seq: i as i64,
            })
            .collect()
    }

    fn backlog() -> impl Strategy<Value = (Vec<u32>, Vec<f64>, f64)> {
        (2usize..6).prop_flat_map(|n| {
            (
                proptest::collection::vec(1u32..=10, n),
                proptest::collection::vec(0.0f64..1.0, n),
                0.0f64..100.0,
            )
        })
    }

    proptest! {
        /// While every team is backlogged, each team's picks follow its weight within
        /// one pick per team (the SFQ bound), and no team waits longer than its fair
        /// gap between two of its picks.
        #[test]
        fn shares_follow_weights_and_nobody_starves((weights, tags, vtime) in backlog(), rounds in 20usize..80) {
            let total: u32 = weights.iter().sum();
            let picks = rounds * total as usize;
            // Finish tags at or behind the virtual time: teams returning from idle.
            let lanes = weights
                .iter()
                .zip(&tags)
                .map(|(w, t)| Lane::new(*w, vtime * t, usize::MAX, items(picks + 1)))
                .collect();
            let mut q = FairQueue::new(vtime, lanes);
            let n = weights.len();
            let mut counts = vec![0usize; n];
            let mut last = vec![0usize; n];
            for step in 1..=picks {
                let (lane, _) = q.pick().unwrap();
                counts[lane] += 1;
                let gap = step - last[lane];
                let w = f64::from(weights[lane]);
                let bound: f64 = weights
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != lane)
                    .map(|(_, wj)| f64::from(*wj) / w + 1.0)
                    .sum::<f64>()
                    + 1.0;
                prop_assert!(gap as f64 <= bound.ceil(), "lane {lane} waited {gap} picks (bound {bound})");
                last[lane] = step;
            }
            for (i, w) in weights.iter().enumerate() {
                let expected = picks as f64 * f64::from(*w) / f64::from(total);
                let error = (counts[i] as f64 - expected).abs();
                prop_assert!(error <= n as f64, "lane {i}: {} picks, expected {expected}", counts[i]);
                prop_assert!(error / picks as f64 <= 0.02 + n as f64 / picks as f64);
            }
        }

        /// Within a lane, picks come out by priority (higher first), then FIFO.
        #[test]
        fn priority_then_fifo_within_a_team(prios in proptest::collection::vec(1u8..=100, 1..60), weights in proptest::collection::vec(1u32..=5, 2)) {
            let a: Vec<Candidate<usize>> = prios
                .iter()
                .enumerate()
                .map(|(i, p)| Candidate { key: i, priority: *p, seq: i as i64 })
                .collect();
            let b = items(prios.len());
            let mut q = FairQueue::new(0.0, vec![
                Lane::new(weights[0], 0.0, usize::MAX, a),
                Lane::new(weights[1], 0.0, usize::MAX, b),
            ]);
            let mut seen: Vec<Candidate<usize>> = Vec::new();
            while let Some((lane, c)) = q.pick() {
                if lane == 0 {
                    seen.push(c);
                }
            }
            prop_assert_eq!(seen.len(), prios.len());
            for pair in seen.windows(2) {
                prop_assert!(
                    pair[0].priority > pair[1].priority
                        || (pair[0].priority == pair[1].priority && pair[0].seq < pair[1].seq),
                    "{:?} before {:?}", pair[0], pair[1]
                );
            }
        }

        /// A team that was idle while others were served gets no burst on return: over
        /// the next picks its share is its weight's share, not more.
        #[test]
        fn an_idle_team_gets_no_burst((weights, _tags, _v) in backlog(), idle_rounds in 10usize..200) {
            let total: u32 = weights.iter().sum();
            let n = weights.len();
            let lanes = weights
                .iter()
                .enumerate()
                .map(|(i, w)| Lane::new(*w, 0.0, usize::MAX, if i == 0 { Vec::new() } else { items(10_000) }))
                .collect();
            let mut q = FairQueue::new(0.0, lanes);
            for _ in 0..idle_rounds {
                let (lane, _) = q.pick().unwrap();
                prop_assert_ne!(lane, 0);
            }
            for c in items(1_000) {
                q.lane_mut(0).unwrap().push(c);
            }
            let window = 4 * total as usize;
            let mine = (0..window).filter(|_| q.pick().unwrap().0 == 0).count();
            let fair = window as f64 * f64::from(weights[0]) / f64::from(total);
            prop_assert!(mine as f64 <= fair + n as f64, "returning team got {mine} of {window} (fair {fair})");
        }

        /// A lane never gets more than its capacity; the others take the rest.
        #[test]
        fn capacity_is_respected(cap in 0usize..10, weights in proptest::collection::vec(1u32..=10, 3)) {
            let lanes = weights
                .iter()
                .enumerate()
                .map(|(i, w)| Lane::new(*w, 0.0, if i == 0 { cap } else { usize::MAX }, items(50)))
                .collect();
            let mut q = FairQueue::new(0.0, lanes);
            let mut first = 0;
            for _ in 0..100 {
                if q.pick().unwrap().0 == 0 {
                    first += 1;
                }
            }
            prop_assert!(first <= cap);
        }
    }
}

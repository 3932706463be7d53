//! Rebalance planning (pure): how many slots each master should hold, and the minimum set of
//! slot moves, as ranges, straight from each source to its final owner (PITFALLS 25).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{NodeId, SlotRange, SlotSet, SLOT_COUNT};

/// One planned move of slots between two masters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotMove {
    /// Current owner.
    pub from: NodeId,
    /// Final owner.
    pub to: NodeId,
    /// The slots.
    pub slots: Vec<SlotRange>,
}

/// Target slot count per master: 16384/n, the remainder going to the masters that hold the
/// most slots already (so a cluster balanced by another tool is left alone). `masters` is in
/// priority order; `current` gives how many slots each holds now.
pub fn balanced_targets(
    masters: &[NodeId],
    current: &BTreeMap<NodeId, usize>,
) -> BTreeMap<NodeId, usize> {
    let n = masters.len();
    let mut out = BTreeMap::new();
    if n == 0 {
        return out;
    }
    let total = usize::from(SLOT_COUNT);
    let floor = total / n;
    let mut extra = total % n;
    let mut order: Vec<(usize, &NodeId)> = masters.iter().enumerate().collect();
    // Most slots first, then priority order: they keep the +1.
    order.sort_by_key(|(i, id)| {
        (
            std::cmp::Reverse(current.get(*id).copied().unwrap_or(0)),
            *i,
        )
    });
    for (_, id) in order {
        let bonus = usize::from(extra > 0);
        extra = extra.saturating_sub(1);
        out.insert(id.clone(), floor + bonus);
    }
    out
}

/// Moves that bring `owned` (slots per master, including masters being drained, which have
/// target 0 by being absent from `targets`) to `targets`. Donors give their highest slots
/// first, receivers take from the largest donor; contiguous slots become ranges.
pub fn plan_moves(
    owned: &BTreeMap<NodeId, SlotSet>,
    targets: &BTreeMap<NodeId, usize>,
) -> Vec<SlotMove> {
    let mut surplus: Vec<(NodeId, Vec<crate::model::Slot>)> = Vec::new();
    let mut deficit: Vec<(NodeId, usize)> = Vec::new();
    for (id, set) in owned {
        let target = targets.get(id).copied().unwrap_or(0);
        let have = set.len();
        if have > target {
            let slots: Vec<_> = set.iter().collect();
            // Give away the highest slots: keeps each master's remaining slots contiguous.
            surplus.push((id.clone(), slots[target..].to_vec()));
        }
    }
    for (id, &target) in targets {
        let have = owned.get(id).map_or(0, SlotSet::len);
        if have < target {
            deficit.push((id.clone(), target - have));
        }
    }
    let mut grouped: BTreeMap<(NodeId, NodeId), SlotSet> = BTreeMap::new();
    for (to, mut need) in deficit {
        while need > 0 {
            // Largest remaining donor first: spreads each donor's loss over receivers evenly.
            let Some(donor) = surplus
                .iter_mut()
                .filter(|(_, s)| !s.is_empty())
                .max_by_key(|(_, s)| s.len())
            else {
                break;
            };
            let take = need.min(donor.1.len());
            let start = donor.1.len() - take;
            let taken: Vec<_> = donor.1.drain(start..).collect();
            let entry = grouped.entry((donor.0.clone(), to.clone())).or_default();
            for s in taken {
                entry.insert(s);
            }
            need -= take;
        }
    }
    grouped
        .into_iter()
        .map(|((from, to), set)| SlotMove {
            from,
            to,
            slots: set.ranges(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u8) -> NodeId {
        NodeId::parse(&format!("{n:040x}")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn even(n: usize) -> BTreeMap<NodeId, SlotSet> {
        let mut out = BTreeMap::new();
        let ids: Vec<NodeId> = (0..n).map(|i| id(i as u8 + 1)).collect();
        let targets = balanced_targets(&ids, &BTreeMap::new());
        let mut next = 0u16;
        for i in &ids {
            let mut set = SlotSet::new();
            for _ in 0..targets[i] {
                set.insert(crate::model::Slot::new(next).unwrap_or_else(|e| panic!("{e}")));
                next += 1;
            }
            out.insert(i.clone(), set);
        }
        out
    }

    #[test]
    fn three_to_four_moves_the_minimum() {
        let owned = even(3);
        let mut masters: Vec<NodeId> = owned.keys().cloned().collect();
        masters.push(id(9));
        let counts = owned.iter().map(|(k, v)| (k.clone(), v.len())).collect();
        let targets = balanced_targets(&masters, &counts);
        let moves = plan_moves(&owned, &targets);
        let moved: usize = moves
            .iter()
            .flat_map(|m| &m.slots)
            .map(SlotRange::len)
            .sum();
        assert_eq!(moved, 4096);
        assert!(moves.iter().all(|m| m.to == id(9)));
        assert_eq!(
            moves.len(),
            3,
            "one contiguous range from each donor: {moves:?}"
        );
        assert!(moves.iter().all(|m| m.slots.len() == 1));
    }

    proptest! {
        #[test]
        fn moves_reach_balance(from in 1usize..8, to in 1usize..8) {
            let owned = even(from);
            let masters: Vec<NodeId> = (0..to).map(|i| id(i as u8 + 1)).collect();
            let counts = owned.iter().map(|(k, v)| (k.clone(), v.len())).collect();
            let targets = balanced_targets(&masters, &counts);
            let moves = plan_moves(&owned, &targets);
            let mut after = owned.clone();
            for m in &moves {
                for r in &m.slots {
                    for s in r.slots() {
                        prop_assert!(after.get_mut(&m.from).is_some_and(|set| set.remove(s)));
                        after.entry(m.to.clone()).or_default().insert(s);
                    }
                }
            }
            let mut union = SlotSet::new();
            let mut total = 0;
            for (k, set) in &after {
                prop_assert_eq!(set.len(), targets.get(k).copied().unwrap_or(0));
                total += set.len();
                union.union_with(set);
            }
            prop_assert_eq!(total, 16384);
            prop_assert_eq!(union.len(), 16384);
            // Minimum: exactly the total surplus moves.
            let surplus: usize = owned.iter().map(|(k, s)| s.len().saturating_sub(targets.get(k).copied().unwrap_or(0))).sum();
            let moved: usize = moves.iter().flat_map(|m| &m.slots).map(SlotRange::len).sum();
            prop_assert_eq!(moved, surplus);
        }
    }
}

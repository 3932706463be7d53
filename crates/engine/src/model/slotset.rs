//! `SlotSet`: a set of hash slots as a 16384-bit bitmap, with range views. Pure data.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ids::{Slot, SlotRange, SLOT_COUNT};

const WORDS: usize = SLOT_COUNT as usize / 64;

/// A set of slots. Cheap to copy around (2 KiB), O(1) membership, ranges on demand.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "Vec<SlotRange>", into = "Vec<SlotRange>")]
pub struct SlotSet {
    bits: Box<[u64; WORDS]>,
}

impl Default for SlotSet {
    fn default() -> Self {
        SlotSet {
            bits: Box::new([0; WORDS]),
        }
    }
}

impl SlotSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// All 16384 slots.
    pub fn full() -> Self {
        SlotSet {
            bits: Box::new([u64::MAX; WORDS]),
        }
    }

    /// Adds a slot; returns whether it was new.
    pub fn insert(&mut self, slot: Slot) -> bool {
        let (w, b) = Self::pos(slot);
        let was = self.bits[w] & b != 0;
        self.bits[w] |= b;
        !was
    }

    /// Removes a slot; returns whether it was present.
    pub fn remove(&mut self, slot: Slot) -> bool {
        let (w, b) = Self::pos(slot);
        let was = self.bits[w] & b != 0;
        self.bits[w] &= !b;
        was
    }

    /// Adds every slot of a range (a word at a time).
    pub fn insert_range(&mut self, range: SlotRange) {
        let (start, end) = (
            usize::from(range.start().get()),
            usize::from(range.end().get()),
        );
        for w in start / 64..=end / 64 {
            let lo = if w == start / 64 { start % 64 } else { 0 };
            let hi = if w == end / 64 { end % 64 } else { 63 };
            // Bits lo..=hi set.
            let mask = (u64::MAX >> (63 - hi)) & (u64::MAX << lo);
            self.bits[w] |= mask;
        }
    }

    /// Whether the slot is in the set.
    pub fn contains(&self, slot: Slot) -> bool {
        let (w, b) = Self::pos(slot);
        self.bits[w] & b != 0
    }

    /// Number of slots in the set.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set holds no slot.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }

    /// The slots in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = Slot> + '_ {
        // Word by word, skipping empty words: a set's cost is its size, not 16384.
        self.bits.iter().enumerate().flat_map(|(w, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                u16::try_from(w * 64 + bit)
                    .ok()
                    .and_then(|n| Slot::new(n).ok())
            })
        })
    }

    /// Maximal contiguous ranges, ascending.
    pub fn ranges(&self) -> Vec<SlotRange> {
        let mut out = Vec::new();
        let mut start: Option<Slot> = None;
        let mut prev: Option<Slot> = None;
        for slot in self.iter() {
            match (start, prev) {
                (Some(_), Some(p)) if p.get() + 1 == slot.get() => {}
                (Some(s), Some(p)) => {
                    out.extend(SlotRange::new(s, p).ok());
                    start = Some(slot);
                }
                _ => start = Some(slot),
            }
            prev = Some(slot);
        }
        if let (Some(s), Some(p)) = (start, prev) {
            out.extend(SlotRange::new(s, p).ok());
        }
        out
    }

    /// Slots in both sets.
    pub fn intersection(&self, other: &SlotSet) -> SlotSet {
        let mut out = SlotSet::new();
        for i in 0..WORDS {
            out.bits[i] = self.bits[i] & other.bits[i];
        }
        out
    }

    /// Slots in `self` but not in `other`.
    pub fn difference(&self, other: &SlotSet) -> SlotSet {
        let mut out = SlotSet::new();
        for i in 0..WORDS {
            out.bits[i] = self.bits[i] & !other.bits[i];
        }
        out
    }

    /// Adds every slot of `other`.
    pub fn union_with(&mut self, other: &SlotSet) {
        for i in 0..WORDS {
            self.bits[i] |= other.bits[i];
        }
    }

    fn pos(slot: Slot) -> (usize, u64) {
        let n = usize::from(slot.get());
        (n / 64, 1u64 << (n % 64))
    }
}

impl FromIterator<Slot> for SlotSet {
    fn from_iter<I: IntoIterator<Item = Slot>>(iter: I) -> Self {
        let mut set = SlotSet::new();
        for slot in iter {
            set.insert(slot);
        }
        set
    }
}

impl From<Vec<SlotRange>> for SlotSet {
    fn from(ranges: Vec<SlotRange>) -> Self {
        let mut set = SlotSet::new();
        for r in ranges {
            set.insert_range(r);
        }
        set
    }
}

impl From<SlotSet> for Vec<SlotRange> {
    fn from(set: SlotSet) -> Self {
        set.ranges()
    }
}

impl fmt::Debug for SlotSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for SlotSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranges = self.ranges();
        if ranges.is_empty() {
            return f.write_str("{}");
        }
        let parts: Vec<String> = ranges.iter().map(ToString::to_string).collect();
        write!(f, "{{{}}}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(n: u16) -> Slot {
        Slot::new(n).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn ranges_round_trip() {
        let mut set = SlotSet::new();
        for n in [0, 1, 2, 5, 16383] {
            set.insert(s(n));
        }
        assert_eq!(set.to_string(), "{0-2,5,16383}");
        assert_eq!(set.len(), 5);
        assert_eq!(SlotSet::from(set.ranges()), set);
        assert_eq!(SlotSet::full().ranges().len(), 1);
        assert_eq!(SlotSet::full().len(), 16384);
    }

    #[test]
    fn insert_range_sets_exactly_the_range() {
        for (a, b) in [
            (0, 0),
            (0, 63),
            (1, 62),
            (63, 64),
            (5, 700),
            (16320, 16383),
            (0, 16383),
        ] {
            let mut set = SlotSet::new();
            set.insert_range(SlotRange::new(s(a), s(b)).unwrap_or_else(|e| panic!("{e}")));
            let want: SlotSet = (a..=b).map(s).collect();
            assert_eq!(set, want, "{a}-{b}");
            assert_eq!(
                set.iter().map(Slot::get).collect::<Vec<_>>(),
                (a..=b).collect::<Vec<_>>()
            );
        }
    }

    proptest! {
        #[test]
        fn iter_yields_the_members_in_order(slots in proptest::collection::btree_set(0u16..16384, 0..300)) {
            let set: SlotSet = slots.iter().map(|&n| s(n)).collect();
            let got: Vec<u16> = set.iter().map(Slot::get).collect();
            prop_assert_eq!(got, slots.into_iter().collect::<Vec<_>>());
        }

        #[test]
        fn ranges_cover_exactly_the_set(slots in proptest::collection::vec(0u16..16384, 0..300)) {
            let set: SlotSet = slots.iter().map(|&n| s(n)).collect();
            let rebuilt = SlotSet::from(set.ranges());
            prop_assert_eq!(&rebuilt, &set);
            let total: usize = set.ranges().iter().map(SlotRange::len).sum();
            prop_assert_eq!(total, set.len());
        }
    }
}

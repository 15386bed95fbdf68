//! A partition's user dictionary in memory: 128-bit user hashes numbered 0, 1, 2… in the
//! order the partition's changelog first names them, and the sets of numbers a batch of
//! deltas adds to each hour.

use analytics_model::hour::HourStart;
use roaring::RoaringBitmap;
use std::collections::{BTreeMap, HashMap};

/// The numbers given so far (as stored: [`analytics_store::membership`]).
#[derive(Debug, Default)]
pub struct Numbering {
    ids: HashMap<u128, u32>,
}

/// What a batch adds: the users numbered for the first time (in order, from
/// [`Numbering::len`]) and each hour's numbers.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub new_users: Vec<u128>,
    pub hours: BTreeMap<HourStart, RoaringBitmap>,
}

impl Numbering {
    pub fn len(&self) -> u32 {
        self.ids.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Appends stored hashes, numbered from [`Self::len`] on.
    pub fn extend(&mut self, hashes: impl IntoIterator<Item = u128>) {
        for h in hashes {
            let next = self.len();
            self.ids.entry(h).or_insert(next);
        }
    }

    /// Numbers the users of `deltas` (hour, new user hashes), in order, without changing the
    /// dictionary: [`Self::adopt`] does once the plan is stored.
    pub fn plan<'a>(&self, deltas: impl IntoIterator<Item = (HourStart, &'a [u128])>) -> Plan {
        let mut plan = Plan::default();
        let mut fresh: HashMap<u128, u32> = HashMap::new();
        for (hour, users) in deltas {
            let set = plan.hours.entry(hour).or_default();
            for user in users {
                let id = match self.ids.get(user) {
                    Some(&id) => id,
                    None => *fresh.entry(*user).or_insert_with(|| {
                        plan.new_users.push(*user);
                        self.len() + plan.new_users.len() as u32 - 1
                    }),
                };
                set.insert(id);
            }
        }
        plan
    }

    /// Takes the users a stored plan numbered.
    pub fn adopt(&mut self, new_users: Vec<u128>) {
        self.extend(new_users);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(n: i64) -> HourStart {
        HourStart::new(1_764_979_200_000 + n * 3_600_000).unwrap()
    }

    fn ids(set: &RoaringBitmap) -> Vec<u32> {
        set.iter().collect()
    }

    #[test]
    fn numbers_in_order_of_first_naming() {
        let mut n = Numbering::default();
        n.extend([10, 20]);
        let plan = n.plan([
            (hour(0), &[20u128, 30, 40][..]),
            (hour(1), &[40, 10, 50][..]),
            (hour(0), &[50][..]),
        ]);
        assert_eq!(plan.new_users, [30, 40, 50]);
        assert_eq!(ids(&plan.hours[&hour(0)]), [1, 2, 3, 4]);
        assert_eq!(ids(&plan.hours[&hour(1)]), [0, 3, 4]);
        // Planning changes nothing until adopted.
        assert_eq!(n.len(), 2);
        n.adopt(plan.new_users);
        assert_eq!(n.len(), 5);
        assert!(n.plan([(hour(2), &[50u128, 10][..])]).new_users.is_empty());
    }

    /// Two instances that apply the same log get the same numbers (what makes a replay or
    /// a zombie's batch write the same bytes).
    #[test]
    fn the_same_log_gives_the_same_numbers() {
        let log: Vec<(HourStart, Vec<u128>)> = (0..50)
            .map(|i| {
                (
                    hour(i % 3),
                    (0..40).map(|u| ((u * 7 + i) % 97) as u128).collect(),
                )
            })
            .collect();
        let run = |split: usize| {
            let mut n = Numbering::default();
            let mut hours: BTreeMap<HourStart, RoaringBitmap> = BTreeMap::new();
            for part in [&log[..split], &log[split..]] {
                let plan = n.plan(part.iter().map(|(h, u)| (*h, &u[..])));
                for (h, s) in plan.hours {
                    *hours.entry(h).or_default() |= s;
                }
                n.adopt(plan.new_users);
            }
            hours
        };
        assert_eq!(run(0), run(17));
        assert_eq!(run(17), run(50));
    }
}

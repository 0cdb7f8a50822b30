//! A free-list slab whose keys carry a generation, so that a stale key (an event or timer for a
//! connection that has since closed and whose slot was reused) finds nothing instead of the
//! wrong entry.

/// Generations wrap within this mask so that a key fits in a mio token with its role.
const GEN_MASK: u32 = 0x0fff_ffff;

/// Names one slab entry: its index and the generation it was inserted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Slot index.
    pub idx: u32,
    /// Generation of the slot when the entry was inserted.
    pub generation: u32,
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// Owns values of `T`, addressed by keys of type `K`: a [`Key`], or a newtype over one that
/// says which slab it belongs to (so that a worker's key cannot look up a connection).
#[derive(Debug)]
pub struct Slab<T, K = Key> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
    keys: std::marker::PhantomData<K>,
}

impl<T, K> Default for Slab<T, K> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            keys: std::marker::PhantomData,
        }
    }
}

impl<T, K: Copy + From<Key> + Into<Key>> Slab<T, K> {
    /// Stores `value` and returns its key.
    pub fn insert(&mut self, value: T) -> K {
        self.insert_raw(value).into()
    }

    fn insert_raw(&mut self, value: T) -> Key {
        self.len += 1;
        if let Some(idx) = self.free.pop()
            && let Some(slot) = self.slots.get_mut(idx as usize)
        {
            slot.generation = (slot.generation + 1) & GEN_MASK;
            slot.value = Some(value);
            return Key {
                idx,
                generation: slot.generation,
            };
        }
        let idx = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.slots.push(Slot {
            generation: 0,
            value: Some(value),
        });
        Key { idx, generation: 0 }
    }

    /// The entry for `key`, if it is still the one the key was issued for.
    pub fn get(&self, key: K) -> Option<&T> {
        let key: Key = key.into();
        let slot = self.slots.get(key.idx as usize)?;
        if slot.generation == key.generation {
            slot.value.as_ref()
        } else {
            None
        }
    }

    /// Mutable access, with the same staleness check as [`Slab::get`].
    pub fn get_mut(&mut self, key: K) -> Option<&mut T> {
        let key: Key = key.into();
        let slot = self.slots.get_mut(key.idx as usize)?;
        if slot.generation == key.generation {
            slot.value.as_mut()
        } else {
            None
        }
    }

    /// Removes and returns the entry for `key`.
    pub fn remove(&mut self, key: K) -> Option<T> {
        let key: Key = key.into();
        let slot = self.slots.get_mut(key.idx as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        let value = slot.value.take()?;
        self.free.push(key.idx);
        self.len -= 1;
        Some(value)
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no live entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys of all live entries.
    pub fn keys(&self) -> Vec<K> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.value.is_some())
            .map(|(idx, slot)| {
                K::from(Key {
                    idx: u32::try_from(idx).unwrap_or(u32::MAX),
                    generation: slot.generation,
                })
            })
            .collect()
    }

    /// Iterates over live entries.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().filter_map(|slot| slot.value.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_keys_find_nothing_after_reuse() {
        let mut slab: Slab<&str> = Slab::default();
        let a = slab.insert("a");
        assert_eq!(slab.remove(a), Some("a"));
        let b = slab.insert("b");
        assert_eq!(a.idx, b.idx, "the slot is reused");
        assert_eq!(slab.get(a), None);
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.get(b), Some(&"b"));
        assert_eq!(slab.len(), 1);
    }

    #[test]
    fn keys_lists_live_entries_only() {
        let mut slab: Slab<i32> = Slab::default();
        let a = slab.insert(1);
        let b = slab.insert(2);
        let c = slab.insert(3);
        slab.remove(b);
        assert_eq!(slab.keys(), vec![a, c]);
        assert_eq!(slab.iter().sum::<i32>(), 4);
    }
}

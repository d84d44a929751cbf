// SPDX-License-Identifier: GPL-2.0

//! A fixed-capacity ordered list of buffer indices, usable without allocating (under a
//! spinlock, in any context).

use super::MAX_BUFFERS;

/// An ordered list of distinct buffer indices (each below [`MAX_BUFFERS`]).
///
/// # Invariants
///
/// `len <= MAX_BUFFERS` and `items[..len]` are the entries, oldest first.
#[derive(Clone)]
pub(crate) struct IndexList {
    items: [u8; MAX_BUFFERS],
    len: usize,
}

impl IndexList {
    /// An empty list.
    pub(crate) const fn new() -> Self {
        Self {
            items: [0; MAX_BUFFERS],
            len: 0,
        }
    }

    /// Whether the list is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `index`; returns `false` (and does nothing) if the list is full.
    pub(crate) fn push_back(&mut self, index: usize) -> bool {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = index as u8;
                // INVARIANT: There was room for one more entry.
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Whether `index` is in the list.
    pub(crate) fn contains(&self, index: usize) -> bool {
        self.iter().any(|i| i == index)
    }

    /// The oldest entry.
    pub(crate) fn front(&self) -> Option<usize> {
        self.iter().next()
    }

    /// Removes `index` if present; returns whether it was.
    pub(crate) fn remove(&mut self, index: usize) -> bool {
        let pos = self.iter().position(|i| i == index);
        match pos {
            Some(pos) => {
                self.items.copy_within(pos + 1..self.len, pos);
                // INVARIANT: One entry was removed.
                self.len -= 1;
                true
            }
            None => false,
        }
    }

    /// Removes every entry.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// The entries, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.items[..self.len].iter().map(|&i| usize::from(i))
    }
}
